/*
 * provider_openai.h - calls to an OpenAI-compatible server (vLLM, llama.cpp
 * server, Ollama, LM Studio...) through the loop.
 *
 * openai_infer() POSTs one request to {url}{path} and passes the backend's
 * answer on as it is:
 *
 *   - a whole answer (any status, non-streaming requests, and streaming
 *     requests the backend refused or answered without an event stream) is
 *     reported once with its status, raw body and the headers that travel
 *     (wire_header_passes());
 *   - a streaming request the backend answers 2xx with an SSE body is
 *     announced with on_start, then its bytes are handed to on_bytes
 *     verbatim as they arrive, and the end is reported when the body ends.
 *     The body counts as SSE when it starts like an event stream (a
 *     "data:", "event:", "id:", "retry:" or ":" line), whatever its
 *     Content-Type; one that starts with '{' or '[' is a JSON answer
 *     whatever its Content-Type; anything else is SSE when labelled
 *     text/event-stream.
 *
 * openai_check() is the availability probe: GET {url}/models answering 2xx
 * within a time limit.
 *
 * Messages in struct openai_result.error are safe to send to mcpd: they
 * name libcurl's generic error, never the local URL or key. .detail has the
 * specifics for the local log.
 */
#ifndef MCPLOCAL_PROVIDER_OPENAI_H
#define MCPLOCAL_PROVIDER_OPENAI_H

#include "config.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OPENAI_MAX_BODY (8 * 1024 * 1024)
/* Response headers passed on with a whole answer, at most. */
#define OPENAI_MAX_HEADERS 32

struct openai_call;

enum openai_outcome {
    OPENAI_RESPONSE, /* a whole answer: status, headers and body */
    OPENAI_STREAMED, /* streaming: the event stream ended cleanly */
    OPENAI_FAILED,   /* no (whole) answer: error and detail say why */
};

struct openai_result {
    enum openai_outcome outcome;
    long status;      /* OPENAI_RESPONSE, OPENAI_STREAMED */
    const char *body; /* OPENAI_RESPONSE: the raw bytes (NUL-terminated) */
    size_t body_len;
    const char *const *header_names; /* OPENAI_RESPONSE: the headers that travel */
    const char *const *header_values;
    size_t n_headers;
    bool mid_stream;    /* OPENAI_FAILED after on_start: the stream broke */
    const char *error;  /* OPENAI_FAILED: for mcpd and the caller */
    const char *detail; /* OPENAI_FAILED: for the local log */
};

struct openai_stream_fns {
    /* The backend answered 2xx with an event stream; bytes follow. */
    void (*on_start)(void *ud, long status);
    /* Bytes of the event stream as they arrived (borrowed during the call). */
    void (*on_bytes)(void *ud, const char *data, size_t len);
};

/* Called once at the end; the result's strings are borrowed during the call.
 * The callee may free the call from here. */
typedef void (*openai_done_fn)(void *ud, const struct openai_result *r);
/* Availability: available, or why not (borrowed). */
typedef void (*openai_check_fn)(void *ud, bool available, const char *reason);

/* Starts POST {url}{path} with request (len bytes of JSON text, copied).
 * Adds "Authorization: Bearer $KEY" when the provider's apiKeyEnv is set in
 * the environment. stream (required when streaming) is copied. Returns a
 * new call (free with openai_call_free()), or NULL when it could not
 * start. */
struct openai_call *openai_infer(struct loop *l, const struct provider_cfg *p, const char *path,
                                 const char *request, size_t len, bool streaming,
                                 const struct openai_stream_fns *stream, openai_done_fn on_done,
                                 void *ud);

/* Starts the availability check with the given time limit. Returns a new
 * call, or NULL when it could not start. */
struct openai_call *openai_check(struct loop *l, const struct provider_cfg *p, int64_t timeout_ms,
                                 openai_check_fn on_result, void *ud);

/* Aborts the call if it still runs and frees it; no callback afterwards.
 * Safe inside any callback. NULL is a no-op. */
void openai_call_free(struct openai_call *c);

/* Flow control for streaming calls: stop reading from the backend until
 * resumed (used when results cannot be posted as fast as tokens arrive). */
void openai_call_pause(struct openai_call *c);
void openai_call_resume(struct openai_call *c);

#endif
