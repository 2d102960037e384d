/*
 * fake_mcpd.h - a scriptable stand-in for mcpd's provider routes, for
 * testing publishers (mcplocal) without the real server.
 *
 * Listens on 127.0.0.1, port 0, one thread per connection, and speaks the
 * provider half of docs/protocol.md:
 *
 *   POST /api/v1/llms/_provider-register   mints "sess-N" for an unknown or
 *        missing providerSessionId, keeps a known one; answers
 *        {"providerSessionId", "llms": [{"name", "kind", "status"}]}
 *   GET  /api/v1/llms/_provider-stream     hello, then frames pushed by the
 *        test and ": ping" comments; a new stream replaces the old one
 *   POST /api/v1/llms/_provider-heartbeat  {"ok":true,"revived":0}; 404 for
 *        an unknown session
 *   POST /api/v1/llms/_provider-task/ID/result   recorded, 200 {"ok":true};
 *        a streamed result (Content-Type: text/event-stream, chunked) is
 *        recorded as its pieces arrive (body, pieces, first_at) and
 *        answered 200 {"ok":true} when its body ends
 *
 *   POST /api/v1/llms/_provider-results   when offered (fake_mcpd_set_results),
 *        recorded as it arrives like a streamed result (ctype
 *        "application/x-ndjson"), answered 200 {"ok":true} when its body
 *        ends; 404 when not offered
 *
 * Scripts: fail the next N calls of a route with a status ("500 twice then
 * OK"), forget every session (a restarted mcpd), close streams after N
 * events or now, go silent (no pings, no frames), answer results with 410.
 * Every request is recorded with its arrival time (clock_mono_ms()) so
 * tests can check order and cadence, and wait for conditions instead of
 * sleeping. fake_mcpd_start_tls() serves the same over HTTPS. All
 * functions are thread-safe.
 */
#ifndef TEST_FAKE_MCPD_H
#define TEST_FAKE_MCPD_H

#include <stdbool.h>
#include <stdint.h>

struct fake_mcpd;

enum fake_mcpd_route {
    FAKE_MCPD_REGISTER,
    FAKE_MCPD_STREAM,
    FAKE_MCPD_HEARTBEAT,
    FAKE_MCPD_RESULT,
};

/* One recorded request (a copy; free with fake_mcpd_req_free()). */
struct fake_mcpd_req {
    char *method;
    char *path;
    char *session; /* x-mcpctl-provider-session, "" when absent */
    char *auth;    /* Authorization, "" when absent */
    char *body;
    char *ctype;      /* Content-Type, "" when absent */
    int64_t at_ms;    /* clock_mono_ms() when the request was complete (or answered) */
    int status;       /* what the fake answered; 0 while a streamed body arrives */
    bool streamed;    /* a streamed result */
    bool complete;    /* its body ended (always true for other requests) */
    int pieces;       /* body pieces received so far */
    int64_t first_at; /* when the first body piece arrived, or 0 */
};

/* How streamed results are taken. */
enum fake_mcpd_streamed {
    FAKE_MCPD_STREAMED_OK,         /* relayed and answered 200 at the end */
    FAKE_MCPD_STREAMED_415,        /* refused at once, before the body (an older mcpd) */
    FAKE_MCPD_STREAMED_400_AT_END, /* read to the end, then refused with 400 */
};

/* Result streams. */
enum fake_mcpd_results {
    FAKE_MCPD_RESULTS_OFF,    /* not offered in hello; the route is 404 (default) */
    FAKE_MCPD_RESULTS_ON,     /* offered and taken */
    FAKE_MCPD_RESULTS_REFUSE, /* offered in hello, but the route answers 404 */
};

/* Starts the fake. Returns NULL (with a message on stderr) on failure. */
struct fake_mcpd *fake_mcpd_start(void);
/* The same over HTTPS with the PEM certificate and key files given. */
struct fake_mcpd *fake_mcpd_start_tls(const char *cert_file, const char *key_file);
/* Stops it (closing open streams) and frees everything. NULL ok. */
void fake_mcpd_stop(struct fake_mcpd *fm);
/* "http://127.0.0.1:PORT" (https:// with TLS). */
const char *fake_mcpd_url(const struct fake_mcpd *fm);

/* Intervals announced in hello (as heartbeatIntervalMs/pingIntervalMs and
 * fractional ...Seconds); ": ping" is sent every ping_ms. Defaults 30000
 * and 20000. */
void fake_mcpd_set_intervals(struct fake_mcpd *fm, int heartbeat_ms, int ping_ms);
/* Requests without "Authorization: Bearer token" get 401 (NULL: any). */
void fake_mcpd_set_token(struct fake_mcpd *fm, const char *token);
/* The next `times` calls of route answer status with {"error": "scripted"}. */
void fake_mcpd_fail(struct fake_mcpd *fm, enum fake_mcpd_route route, int times, int status);
/* Every result post answers status from now on (0: back to 200); a
 * streamed one at once, before its body. */
void fake_mcpd_set_result_status(struct fake_mcpd *fm, int status);
void fake_mcpd_set_streamed(struct fake_mcpd *fm, enum fake_mcpd_streamed mode);
void fake_mcpd_set_results(struct fake_mcpd *fm, enum fake_mcpd_results mode);
/* The open result stream's connection is closed when its next piece
 * arrives (results in that piece are lost, as on a broken connection). */
void fake_mcpd_cut_results(struct fake_mcpd *fm);
/* Forgets every session, as a restarted mcpd without its database would. */
void fake_mcpd_forget_sessions(struct fake_mcpd *fm);
/* Streams opened from now on are closed after sending `events` events
 * (hello included); 0 = never. */
void fake_mcpd_drop_after(struct fake_mcpd *fm, int events);
/* Closes every open stream now. */
void fake_mcpd_drop_streams(struct fake_mcpd *fm);
/* Silent streams send nothing more (no pings, frames are held). */
void fake_mcpd_set_silent(struct fake_mcpd *fm, bool silent);

/* Queues a frame on the newest open stream. id may be NULL. Returns 0, or
 * -1 when no stream is open. */
int fake_mcpd_push(struct fake_mcpd *fm, const char *event, const char *id, const char *data);
/* Pushes {"kind":"infer","taskId","llmName","streaming","body"} (body is
 * JSON text). */
int fake_mcpd_push_infer(struct fake_mcpd *fm, const char *task_id, const char *llm, bool streaming,
                         const char *body);
/* Pushes {"kind":"wake","taskId","llmName"}. */
int fake_mcpd_push_wake(struct fake_mcpd *fm, const char *task_id, const char *llm);
/* Pushes {"taskId"} as a cancel frame. */
int fake_mcpd_push_cancel(struct fake_mcpd *fm, const char *task_id);

/* Streams opened so far (successfully, with hello queued). */
int fake_mcpd_streams_opened(struct fake_mcpd *fm);
/* Streams open right now. */
int fake_mcpd_streams_open(struct fake_mcpd *fm);
/* Waits until at least n streams have been opened and one is open. */
int fake_mcpd_wait_stream(struct fake_mcpd *fm, int n, int timeout_ms);
/* Waits until no stream is open. */
int fake_mcpd_wait_no_stream(struct fake_mcpd *fm, int timeout_ms);

/* Requests whose path starts with prefix. */
int fake_mcpd_count(struct fake_mcpd *fm, const char *prefix);
/* Waits until fake_mcpd_count(prefix) >= n. Returns 0, or -1 on timeout. */
int fake_mcpd_wait_count(struct fake_mcpd *fm, const char *prefix, int n, int timeout_ms);
/* Waits until a request to prefix has a body containing needle. */
int fake_mcpd_wait_body(struct fake_mcpd *fm, const char *prefix, const char *needle,
                        int timeout_ms);
/* Waits until the last request to prefix is complete (a streamed result
 * whose body ended or was cut off). Returns 0, or -1 on timeout. */
int fake_mcpd_wait_complete(struct fake_mcpd *fm, const char *prefix, int timeout_ms);
/* The index-th request (0-based; -1 = the last) to prefix, or NULL. */
struct fake_mcpd_req *fake_mcpd_get(struct fake_mcpd *fm, const char *prefix, int index);
void fake_mcpd_req_free(struct fake_mcpd_req *r);
/* The path of task id's result route, written into out. */
void fake_mcpd_result_path(const char *task_id, char *out, unsigned long outlen);

#endif
