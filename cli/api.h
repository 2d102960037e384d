/*
 * api.h - mcpctl's client for mcpd's HTTP API (libcurl).
 *
 * A struct api holds the server URL, the token and one libcurl handle, so a
 * conversation reuses its connection. Every failure is turned into one
 * struct cli_error whose class tells the exit code and whose message says
 * what went wrong and what to do, in plain words:
 *
 *   cannot connect, connection lost, no answer,   CLI_EXIT_UNREACHABLE
 *   a TLS certificate that cannot be verified
 *   401, 403                                      CLI_EXIT_AUTH
 *   404                                           CLI_EXIT_NOT_FOUND
 *   503 (with "retry in N s" from Retry-After)    CLI_EXIT_UNAVAILABLE
 *   502, 504, an "event: error" frame             CLI_EXIT_INFER
 *   anything else                                 CLI_EXIT_ERROR
 *
 * Response bodies are capped (API_JSON_MAX, API_ERROR_BODY_MAX, and the SSE
 * line and event caps), so a misbehaving server cannot exhaust memory.
 * Nothing here prints or exits.
 */
#ifndef MCPCTL_API_H
#define MCPCTL_API_H

#include "errors.h"

#include "sse.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define API_JSON_MAX (64u * 1024 * 1024)
#define API_ERROR_BODY_MAX (64u * 1024)
#define API_SSE_LINE_MAX (1u * 1024 * 1024)
#define API_SSE_EVENT_MAX (8u * 1024 * 1024)
#define API_CONNECT_TIMEOUT_MS 10000L
#define API_REQUEST_TIMEOUT_MS 60000L       /* GETs; inference has no overall limit */
#define API_SYSTEM_CA_PATH "/etc/ssl/certs" /* the system's CAs, kept beside a CA file */

struct api;

/* Returns a new client for mcpd at base_url (no trailing '/') using token.
 * token_from names where the token came from, for the 401 message (static
 * string, may be NULL). Both strings are copied. NULL when out of memory.
 * libcurl must have been initialised (curl_global_init) by the program. */
struct api *api_new(const char *base_url, const char *token, const char *token_from);
/* Makes every https:// call trust the CA certificates in cafile (PEM) in
 * addition to the system's (API_SYSTEM_CA_PATH). from names where cafile
 * came from, for messages (static string, may be NULL). cafile is copied;
 * NULL goes back to the system's CAs only. 0, or -1 when out of memory. */
int api_set_cafile(struct api *a, const char *cafile, const char *from);
/* Frees the client and closes its connections. NULL is a no-op. */
void api_free(struct api *a);

/* GET /api/v1/llms: *out receives a new reference to the array of LlmViews. */
int api_list_llms(struct api *a, json_t **out, struct cli_error *err);
/* GET /api/v1/llms/NAME: *out receives a new reference to the LlmView. */
int api_get_llm(struct api *a, const char *name, json_t **out, struct cli_error *err);
/* GET /api/v1/llms/NAME/members (NAME a pool or one of its members): *out
 * receives a new reference to {"pool", "size", "activeCount", "members"}. */
int api_get_members(struct api *a, const char *name, json_t **out, struct cli_error *err);

/* The filters of GET /api/v1/usage; NULL members are left out. */
struct api_usage_query {
    const char *since;
    const char *until;
    const char *llm;
    const char *owner;
};

/* GET /api/v1/usage with q's filters: *out receives a new reference to the
 * object ({"usage": [...], "totals": {...}}). */
int api_get_usage(struct api *a, const struct api_usage_query *q, json_t **out,
                  struct cli_error *err);

/* POST /api/v1/llms/NAME/infer with body (a chat request without "stream":
 * true): *out receives a new reference to the JSON answer. */
int api_infer(struct api *a, const char *name, const char *body, json_t **out,
              struct cli_error *err);

/* Called for each server-sent event of a streamed answer. Return 0 to go on;
 * a non-zero return stops the transfer and api_infer_stream() returns -1 (the
 * callback fills err first). */
typedef int (*api_event_fn)(void *ud, const struct sse_event *ev, struct cli_error *err);

/* POST /api/v1/llms/NAME/infer with body (which asks for "stream": true) and
 * calls fn per event as the bytes arrive. Returns 0 when the stream ended
 * normally (the caller decides whether it was complete), or -1. */
int api_infer_stream(struct api *a, const char *name, const char *body, api_event_fn fn, void *ud,
                     struct cli_error *err);

/* The error for an HTTP answer with a non-2xx status. body (len bytes, may
 * be NULL) is the answer; retry_after_s is Retry-After in seconds or -1;
 * llm_name is the Llm asked about (NULL for the list). Always returns -1.
 * Exposed for tests. */
int api_status_error(const struct api *a, long status, const char *body, size_t len,
                     long retry_after_s, const char *llm_name, struct cli_error *err);

/* The error for a request that got no complete answer: curl_code is the
 * libcurl result, os_errno the socket error (0 when unknown), reason
 * libcurl's own description (may be NULL; quoted only for TLS failures,
 * where it says what was wrong with the certificate), and got_response is
 * true when the answer had started. Always returns -1. Exposed for tests. */
int api_transport_error(const struct api *a, int curl_code, long os_errno, const char *reason,
                        bool got_response, struct cli_error *err);

/* The "error" text of an error body: {"error": "..."} or the OpenAI shape
 * {"error": {"message": "..."}}, copied into out (control characters become
 * spaces, long texts are cut). Writes "" when there is none. */
void api_error_reason(const char *body, size_t len, char *out, size_t outlen);

#endif
