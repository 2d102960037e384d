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

struct hello_frame {
    char session[SESSION_ID_MAX + 1];
    int64_t heartbeat_ms; /* heartbeatIntervalSeconds (fractions allowed) */
    int64_t ping_ms;      /* pingIntervalSeconds */
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
    json_t *body; /* infer only: the caller's request; owned */
};

/* Parses a task frame's data. Task ids are limited to [A-Za-z0-9._-]
 * (they go into a URL path). Returns 0 (release with
 * wire_task_release()), or -1 with a reason in err. When the frame had a
 * usable taskId, out->task_id is set even on failure so the task can be
 * failed. */
int wire_parse_task(const char *data, size_t len, struct task_frame *out, char *err, size_t errlen);
void wire_task_release(struct task_frame *t);

/* Parses a cancel frame's data into task_id (TASK_ID_MAX + 1 bytes).
 * Returns 0 or -1. */
int wire_parse_cancel(const char *data, size_t len, char *task_id);

/* True for 1..TASK_ID_MAX characters of [A-Za-z0-9._-], except "." and
 * "..". */
bool wire_task_id_valid(const char *id);

/* {"providerSessionId"?, "providers": [...]}: for each provider its public
 * fields and statuses[i] as initialStatus; never its url, key or wake
 * recipe. session may be NULL. */
char *wire_register_body(const char *session, const struct provider_cfg *const *providers,
                         const char *const *statuses, size_t n);

/* {"status": N, "body": <body>}, body spliced verbatim; NULL when body is
 * not a single JSON value. */
char *wire_result_status(long status, const char *body, size_t len);
/* {"chunk": {"data": ...}}: data that is a JSON object is spliced verbatim,
 * anything else is sent as a JSON string. */
char *wire_result_chunk(const char *data, size_t len);
/* {"chunk": {"done": true}} */
char *wire_result_done(void);
/* {"error": msg} */
char *wire_result_error(const char *msg);
/* {"status": 200, "body": {"ok": true, "ms": ms}} */
char *wire_result_wake_ok(int64_t ms);

/* The request sent upstream for an infer task: the caller's body with
 * "model" replaced by the provider's model and "stream" set to match the
 * task ("stream_options" dropped when not streaming). Modifies body. */
char *wire_upstream_request(json_t *body, const char *model, bool streaming);

/* A short reason from an error body of an OpenAI-compatible server
 * ({"error": {"message"}}, {"error": "..."}, {"message"}, {"detail"}), else
 * the start of the body; written into out. */
void wire_backend_error(const char *body, size_t len, char *out, size_t outlen);

#endif
