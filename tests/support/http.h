/*
 * http.h - small libcurl helpers for tests: one-shot requests and a
 * background streaming reader (for SSE responses).
 */
#ifndef TEST_HTTP_H
#define TEST_HTTP_H

#include <stddef.h>

struct http_resp {
    long status; /* 0 when the request failed at the transport level */
    char *body;  /* NUL-terminated, never NULL after http_do() */
    size_t len;
    char *headers; /* raw response header block, NUL-terminated */
};

/* Sends one request. token may be NULL (no Authorization header); headers is
 * a NULL-terminated list of "Name: value" lines or NULL; body may be NULL.
 * Returns 0 when an HTTP response arrived, -1 otherwise (out->status = 0). */
int http_do(const char *method, const char *url, const char *token, const char *const headers[],
            const char *body, struct http_resp *out);
void http_resp_free(struct http_resp *r);
/* Value of a response header (case-insensitive name) as a new string, or NULL. */
char *http_resp_header(const struct http_resp *r, const char *name);

struct http_stream;

/* Starts a request in a background thread and collects the response body as
 * it arrives. Same arguments as http_do(). */
struct http_stream *http_stream_open(const char *method, const char *url, const char *token,
                                     const char *const headers[], const char *body);
/* Waits until the body so far contains needle (count-th occurrence). 0 or -1. */
int http_stream_wait_for(struct http_stream *s, const char *needle, int count, int timeout_ms);
/* Waits until the transfer ends by itself. 0, or -1 on timeout. */
int http_stream_wait_done(struct http_stream *s, int timeout_ms);
/* Copy of the body so far; caller frees. */
char *http_stream_body(struct http_stream *s);
long http_stream_status(struct http_stream *s);
/* Aborts the transfer if it still runs (the connection is closed at once)
 * and frees everything. */
void http_stream_close(struct http_stream *s);

#endif
