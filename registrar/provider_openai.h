/*
 * provider_openai.h - calls to an OpenAI-compatible server (vLLM, llama.cpp
 * server, Ollama, LM Studio...) through the loop.
 *
 * openai_infer() sends one chat-completions request. Non-streaming, the
 * whole JSON answer is reported once. Streaming, every upstream SSE `data:`
 * payload is handed to on_chunk the moment it is parsed, in order, and the
 * call ends at `data: [DONE]` (or when the backend closes the stream
 * cleanly). openai_check() is the availability probe: GET {url}/models
 * answering 2xx within a time limit.
 *
 * Messages in struct openai_result.error are safe to send to mcpd: they
 * name the backend's status or libcurl's generic error, never the local URL
 * or key. .detail has the specifics for the local log.
 */
#ifndef MCPLOCAL_PROVIDER_OPENAI_H
#define MCPLOCAL_PROVIDER_OPENAI_H

#include "config.h"
#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OPENAI_MAX_BODY (8 * 1024 * 1024)
#define OPENAI_MAX_EVENT (1024 * 1024)

struct openai_call;

enum openai_outcome {
    OPENAI_BODY,     /* non-streaming: status (2xx) and body */
    OPENAI_STREAMED, /* streaming: every chunk was delivered, the stream ended */
    OPENAI_FAILED,   /* error (and detail) say why */
};

struct openai_result {
    enum openai_outcome outcome;
    long status;
    const char *body; /* OPENAI_BODY: valid JSON text */
    size_t body_len;
    const char *error;  /* OPENAI_FAILED: for mcpd and the caller */
    const char *detail; /* OPENAI_FAILED: for the local log */
};

/* One upstream SSE data payload (never "[DONE]"); borrowed during the call. */
typedef void (*openai_chunk_fn)(void *ud, const char *data, size_t len);
/* Called once at the end; the result's strings are borrowed during the call.
 * The callee may free the call from here. */
typedef void (*openai_done_fn)(void *ud, const struct openai_result *r);
/* Availability: available, or why not (borrowed). */
typedef void (*openai_check_fn)(void *ud, bool available, const char *reason);

/* Starts POST {url}/chat/completions with request (JSON text, copied).
 * Adds "Authorization: Bearer $KEY" when the provider's apiKeyEnv is set in
 * the environment. Returns a new call (free with openai_call_free()), or
 * NULL when it could not start. */
struct openai_call *openai_infer(struct loop *l, const struct provider_cfg *p, const char *request,
                                 bool streaming, openai_chunk_fn on_chunk, openai_done_fn on_done,
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
