/*
 * transport.h - one HTTP request driven by the loop: libcurl easy + multi,
 * or, for plain http:// to a literal address without a proxy, the loop's
 * own HTTP/1.1 client (httpc.h states the rule). Callers cannot tell.
 *
 * Every network call mcplocal makes goes through here: register, the control
 * stream, heartbeats, result posts, upstream inference, availability checks
 * and HTTP wake recipes. A request either collects its response body (up to
 * a cap) or, with on_data, hands 2xx body bytes over as they arrive; non-2xx
 * bodies are always collected (capped) so the caller can report them.
 *
 * Lifecycle: http_req_start() returns the request; on_done is called exactly
 * once when it ends (unless it is freed first); http_req_free() aborts it if
 * still running. Both callbacks may free the request. Freeing is safe
 * anywhere, including inside on_data.
 */
#ifndef MCPLOCAL_TRANSPORT_H
#define MCPLOCAL_TRANSPORT_H

#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_req;

/* 2xx body bytes as they arrive. Return 0 to go on, non-zero to abort the
 * transfer (on_done then reports it as failed). */
typedef int (*http_data_fn)(struct http_req *r, const char *data, size_t len, void *ud);
typedef void (*http_done_fn)(struct http_req *r, void *ud);

struct http_req_opts {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;           /* copied; NULL for none */
    size_t body_len;
    size_t max_body;            /* cap on a collected response body */
    int64_t timeout_ms;         /* whole transfer; 0 for none */
    int64_t connect_timeout_ms; /* 0 for libcurl's default */
    long low_speed_time_s;      /* abort when < 1 byte/s for this long; 0 = off */
    bool keepalive;             /* TCP keepalive probes (long-lived streams) */
    /* The request may be queued behind others on one keep-alive connection
     * to the same origin (HTTP/1.1 pipelining, httpc.h). Only for requests
     * the server answers promptly and that are harmless to send again after
     * a lost connection; ignored with on_data, keepalive, HEAD and libcurl. */
    bool pipeline;
    http_data_fn on_data; /* NULL: collect the body */
    http_done_fn on_done; /* required */
    void *ud;
};

/* Starts a request. Returns 0 and a new request in *out (caller frees with
 * http_req_free()), or -1 when out of memory or libcurl refused. */
int http_req_start(struct loop *l, const struct http_req_opts *o, struct http_req **out);
/* Aborts the request if it still runs and frees it; no callback is called
 * afterwards. NULL is a no-op. */
void http_req_free(struct http_req *r);

/* After on_done: true when a whole HTTP response arrived. */
bool http_req_ok(const struct http_req *r);
/* The response status, or 0 when none arrived (valid from the first byte). */
long http_req_status(const struct http_req *r);
/* The collected body (NUL-terminated, "" when none); borrowed. */
const char *http_req_body(const struct http_req *r, size_t *len);
/* The response's Content-Type, or NULL; borrowed. */
const char *http_req_content_type(const struct http_req *r);
/* Why the transfer failed, in general words safe to show to others
 * ("Couldn't connect to server"), or NULL when it did not fail. */
const char *http_req_error(const struct http_req *r);
/* The same with libcurl's details (addresses, ports), for the local log. */
const char *http_req_error_detail(const struct http_req *r);
/* True when the failure was the transfer timing out or stalling. */
bool http_req_timed_out(const struct http_req *r);

/* Flow control for on_data requests: stop taking body bytes (libcurl keeps
 * them) until http_req_resume(). */
void http_req_pause(struct http_req *r);
void http_req_resume(struct http_req *r);

#endif
