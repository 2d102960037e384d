/*
 * fake_backend.h - a fake OpenAI-compatible model server for tests.
 *
 * Listens on 127.0.0.1, port 0 (read the URL back), one thread per
 * connection, and serves:
 *
 *   GET  /v1/models            {"object":"list","data":[{"id":"fake-model",...}]}
 *   POST /v1/chat/completions  without "stream": a chat.completion whose
 *                              message content is "hello from fake" and whose
 *                              "model" echoes the request's;
 *                              with "stream": true, N chat.completion.chunk
 *                              events (delta content "tok0", "tok1", ...),
 *                              each after a delay, then "data: [DONE]"; with
 *                              "stream_options":{"include_usage":true}, a
 *                              last chunk with "choices":[] and "usage"
 *                              (prompt_tokens 1, completion_tokens N) before it
 *   POST /v1/<anything else>   {"object":"echo","path":...,"model":...}
 *                              (the request's model), for routes other than
 *                              chat completions; with fake_backend_set_realistic()
 *                              these four answer as the real APIs do instead,
 *                              "model" echoing the request's:
 *   POST /v1/completions       a text_completion, choices[0].text "hello from
 *                              fake"; streaming: N text_completion data events
 *                              (text "tok0", ...), then "data: [DONE]" (with
 *                              include_usage, a usage chunk before it)
 *   POST /v1/embeddings        {"object":"list","data":[{"object":"embedding",
 *                              "embedding":[0.5,-0.25,0.125],"index":i}...]},
 *                              one per input; base64 float32s when the request
 *                              asks for "encoding_format":"base64"; never streams
 *   POST /v1/responses         a completed response object whose output is one
 *                              message with output_text "hello from fake";
 *                              streaming: events response.created,
 *                              response.in_progress, response.output_item.added,
 *                              response.content_part.added, N
 *                              response.output_text.delta ("tok0", ...),
 *                              response.output_text.done,
 *                              response.content_part.done,
 *                              response.output_item.done, response.completed
 *   POST /v1/messages          an Anthropic message, content [{"type":"text",
 *                              "text":"hello from fake"}]; streaming: events
 *                              message_start, content_block_start, ping, N
 *                              content_block_delta ("tok0", ...),
 *                              content_block_stop, message_delta, message_stop
 *   ANY  /wake                 the wake endpoint (see fake_backend_set_asleep)
 *
 * Scripts: fail chat completions with a status, be asleep (every /v1 route
 * answers 503) until /wake is called and some time has passed, make /models
 * slow. Every request is recorded (method, path, headers, body) and
 * streaming responses cut short by the client are counted, so a test can
 * prove that an upstream call was aborted.
 *
 * All functions are thread-safe. Times are clock_mono_ms() values.
 */
#ifndef TEST_FAKE_BACKEND_H
#define TEST_FAKE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

struct fake_backend;

/* Starts the server. Returns NULL (with a message on stderr) on failure. */
struct fake_backend *fake_backend_start(void);
/* Stops the server (cutting open streams) and frees everything. NULL ok. */
void fake_backend_stop(struct fake_backend *fb);

/* "http://127.0.0.1:PORT/v1": the base URL a provider's "url" takes. */
const char *fake_backend_url(const struct fake_backend *fb);
/* "http://127.0.0.1:PORT/wake". */
const char *fake_backend_wake_url(const struct fake_backend *fb);
int fake_backend_port(const struct fake_backend *fb);

/* Streaming answers: chunks events, delay_ms before each (default 3, 0). */
void fake_backend_set_stream(struct fake_backend *fb, int chunks, int delay_ms);
/* Chat completions answer status with an OpenAI error body
 * {"error":{"message":"fake failure","type":"server_error"}}; 0 = normal. */
void fake_backend_set_fail(struct fake_backend *fb, int status);
/* Chat completions (streaming or not) answer status with body verbatim,
 * the given Content-Type and extra header lines ("Name: value", NULL-
 * terminated, may be NULL); status 0 = normal again. */
void fake_backend_set_reply(struct fake_backend *fb, int status, const char *ctype,
                            const char *body, const char *const *headers);
/* Streaming answers are cut (the connection closed, no end of the chunked
 * body) after this many chunk events; 0 = never. */
void fake_backend_set_cut_after(struct fake_backend *fb, int chunks);
/* The Content-Type of streaming answers (default "text/event-stream"). */
void fake_backend_set_stream_ctype(struct fake_backend *fb, const char *ctype);
/* Streaming answers name their events ("event: delta" before each data
 * line, "event: done" before [DONE]). */
void fake_backend_set_stream_named(struct fake_backend *fb, bool named);
/* Realistic answers on /v1/completions, /v1/embeddings, /v1/responses and
 * /v1/messages (above) instead of the echo object. */
void fake_backend_set_realistic(struct fake_backend *fb, bool on);
/* Every byte of the most recent streaming answer's body sent so far, as a
 * new string. */
char *fake_backend_stream_bytes(struct fake_backend *fb);
/* Asleep: every /v1 route answers 503 {"error":"asleep"}. */
void fake_backend_set_asleep(struct fake_backend *fb, bool asleep);
/* How /wake answers (default 200, up after 0 ms): with a 2xx status the
 * backend wakes up_after_ms later; up_after_ms < 0 means never. */
void fake_backend_set_wake(struct fake_backend *fb, int status, int up_after_ms);
/* GET /v1/models waits this long before answering (default 0). */
void fake_backend_set_models_delay(struct fake_backend *fb, int delay_ms);
/* Non-streaming chat completions wait delay_ms before their answer. */
void fake_backend_set_answer_delay(struct fake_backend *fb, int delay_ms);

/* Requests seen whose path equals path ("/v1/chat/completions"). */
int fake_backend_count(struct fake_backend *fb, const char *path);
/* Waits until fake_backend_count(path) >= n. Returns 0, or -1 on timeout. */
int fake_backend_wait_count(struct fake_backend *fb, const char *path, int n, int timeout_ms);
/* The body of the last request to path, as a new string; NULL if none. */
char *fake_backend_last_body(struct fake_backend *fb, const char *path);
/* The body of the realistic whole answer to the last request to path, as
 * a new string; NULL if none (or it streamed). */
char *fake_backend_last_reply(struct fake_backend *fb, const char *path);
/* A header (case-insensitive name) of the last request to path, as a new
 * string; NULL if none. */
char *fake_backend_last_header(struct fake_backend *fb, const char *path, const char *name);

/* Streaming responses the client closed before the end. */
int fake_backend_aborted(struct fake_backend *fb);
int fake_backend_wait_aborted(struct fake_backend *fb, int n, int timeout_ms);
/* Streaming responses that ran to "data: [DONE]" (counted once the server
 * is done with the connection's request, which may be after the client has
 * read the last byte: wait for it). */
int fake_backend_streams_completed(struct fake_backend *fb);
int fake_backend_wait_completed(struct fake_backend *fb, int n, int timeout_ms);
/* When chunk i of the most recent streaming response was handed to the
 * socket, or -1 when it was not (yet). */
int64_t fake_backend_chunk_sent_ms(struct fake_backend *fb, int i);

#endif
