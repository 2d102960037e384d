/*
 * wire.h - mcplocal's side of the protocol (docs/protocol.md): parse the
 * frames mcpd sends down the control stream, build the bodies mcplocal posts
 * back (register, results) and the request it sends upstream.
 *
 * Pure: no I/O, no logging. Every builder returns a new NUL-terminated
 * string the caller free()s, or NULL when out of memory (or, where noted,
 * when the input is not what the protocol allows).
 */
#ifndef MCPLOCAL_WIRE_H
#define MCPLOCAL_WIRE_H

#include "config.h"
#include "credentials.h"
#include "protocol.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TASK_ID_MAX 128
/* A task's "path" (under the provider's base URL). */
#define TASK_PATH_MAX 256
#define TASK_PATH_DEFAULT "/chat/completions"
/* What this publisher declares at register (docs/protocol.md). */
#define WIRE_FEATURES "[\"paths\",\"streamed-results\"]"

struct hello_frame {
    char session[SESSION_ID_MAX + 1];
    int64_t heartbeat_ms; /* heartbeatIntervalSeconds (fractions allowed) */
    int64_t ping_ms;      /* pingIntervalSeconds */
    bool result_stream;   /* "features" has "result-stream" */
};

/* Parses a hello frame's data. heartbeatIntervalMs / pingIntervalMs win
 * over the ...Seconds fields (which may be fractional); missing or
 * non-positive intervals get the protocol defaults. Returns 0, or -1 when data is not a JSON
 * object. */
int wire_parse_hello(const char *data, size_t len, struct hello_frame *out);

enum task_kind { TASK_INFER, TASK_WAKE };

struct task_frame {
    enum task_kind kind;
    char task_id[TASK_ID_MAX + 1];
    char llm[MCP_NAME_MAX + 1];
    bool streaming;
    /* infer only: the route under the provider's base URL, TASK_PATH_DEFAULT
     * when the frame has none. */
    char path[TASK_PATH_MAX + 1];
    /* infer only: the caller's request, the text of a JSON object. It points
     * into the frame's data (valid as long as that is) or, for frames that
     * took the general path, into body_owned. */
    const char *body;
    size_t body_len;
    char *body_owned;
};

/* Parses a task frame's data. Task ids are limited to [A-Za-z0-9._-]
 * (they go into a URL path); a "path" must pass wire_task_path_valid(). Returns 0 (release with
 * wire_task_release()), or -1 with a reason in err. When the frame had a
 * usable taskId, out->task_id is set even on failure so the task can be
 * failed.
 *
 * Frames as mcpd sends them are scanned without building a tree (jsonscan):
 * the body is located, not copied. Frames with escaped keys or field values,
 * or with more top-level members than jsonscan records, are parsed with
 * jansson instead; the result is the same. */
int wire_parse_task(const char *data, size_t len, struct task_frame *out, char *err, size_t errlen);
void wire_task_release(struct task_frame *t);

/* Parses a cancel frame's data into task_id (TASK_ID_MAX + 1 bytes).
 * Returns 0 or -1. */
int wire_parse_cancel(const char *data, size_t len, char *task_id);

/* True for 1..TASK_ID_MAX characters of [A-Za-z0-9._-], except "." and
 * "..". */
bool wire_task_id_valid(const char *id);

/* True for a route an infer task may name: "/" then up to TASK_PATH_MAX - 1
 * characters of unreserved, sub-delim, ':', '@', '/', '%', '?' and '='
 * characters, with no empty, "." or ".." segment (so it stays under the
 * provider's base URL) and no fragment. */
bool wire_task_path_valid(const char *path);

/* {"providerSessionId"?, "providers": [...], "features": WIRE_FEATURES}:
 * for each provider its public fields and statuses[i] as initialStatus;
 * never its url, key or wake recipe. session may be NULL. */
char *wire_register_body(const char *session, const struct provider_cfg *const *providers,
                         const char *const *statuses, size_t n);

/* {"status": N, "body": <body>}, body spliced verbatim; NULL when body is
 * not a single JSON value. */
char *wire_result_status(long status, const char *body, size_t len);
/* Whether a backend response header travels with a result: Retry-After,
 * x-ratelimit-*, x-request-id and Content-Type (any case). */
bool wire_header_passes(const char *name);

/* A backend's answer as a final result: {"status": N, "headers": {...},
 * "body": ...}. headers holds names[i]: values[i] for the n pairs given
 * (names lower-cased; a repeated name keeps its last value; omitted when n
 * is 0). A body that is one valid JSON value is spliced verbatim; anything
 * else (HTML, plain text, nothing) travels as a JSON string of its bytes,
 * invalid UTF-8 replaced. NULL when out of memory. */
char *wire_result_response(long status, const char *const *names, const char *const *values,
                           size_t n, const char *body, size_t len);

/* One SSE event in OpenAI's error shape that ends a streamed result:
 * data: {"error":{"message":msg,"type":"server_error","code":code}} and a
 * blank line. */
char *wire_sse_error(const char *msg, const char *code);

/* {"chunk": {"data": ...}}: data that is a JSON object is spliced verbatim,
 * anything else is sent as a JSON string. */
char *wire_result_chunk(const char *data, size_t len);
/* {"chunk": {"done": true}} */
char *wire_result_done(void);
/* {"error": msg} */
char *wire_result_error(const char *msg);
/* {"status": 200, "body": {"ok": true, "ms": ms}} */
char *wire_result_wake_ok(int64_t ms);

/* The request sent upstream for an infer task: the caller's body (len bytes
 * of a JSON object) with "model" replaced by the provider's model and
 * "stream" set to match the task ("stream_options" dropped when not
 * streaming). Built by splicing: "model" (and "stream") come first, then the
 * caller's other top-level members with their values byte for byte; nested
 * objects are never touched. NULL when out of memory or body is not a JSON
 * object. When out_len is not NULL it receives the length. */
char *wire_upstream_request(const char *body, size_t len, const char *model, bool streaming,
                            size_t *out_len);
/* The same for a task wire_parse_task() accepted (infer only), whose body is
 * known to be valid and is not scanned again. Tasks for another path than
 * TASK_PATH_DEFAULT get only "model" replaced: "stream" and the rest reach
 * the backend as the caller wrote them. */
char *wire_task_upstream(const struct task_frame *t, const char *model, size_t *out_len);

/* A short reason from an error body of an OpenAI-compatible server
 * ({"error": {"message"}}, {"error": "..."}, {"message"}, {"detail"}), else
 * the start of the body; written into out. */
void wire_backend_error(const char *body, size_t len, char *out, size_t outlen);

#endif
