/*
 * transport.h - one HTTP request driven by the loop: a libcurl easy handle
 * in the loop's multi handle (connections are kept alive and reused across
 * requests to the same origin).
 *
 * Every network call mcplocal makes goes through here: register, the control
 * stream, heartbeats, result posts, upstream inference, availability checks
 * and HTTP wake recipes. A request either collects its response body (up to
 * a cap) or, with on_data, hands 2xx body bytes over as they arrive; non-2xx
 * bodies are always collected (capped) so the caller can report them or
 * pass them on.
 *
 * A request body is either given whole (body, body_len) or streamed from
 * on_read: then it goes out with chunked transfer encoding, piece by piece
 * as on_read hands them over; on_read returns HTTP_READ_PAUSE while it has
 * nothing, and the owner calls http_req_resume_send() when it has.
 *
 * Lifecycle: http_req_start() returns the request; on_done is called exactly
 * once when it ends (unless it is freed first); http_req_free() aborts it if
 * still running. Callbacks may free the request. Freeing is safe anywhere,
 * including inside on_data and on_read.
 */
#ifndef MCPLOCAL_TRANSPORT_H
#define MCPLOCAL_TRANSPORT_H

#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct http_req;

/* 2xx body bytes as they arrive. Return 0 to go on, non-zero to abort the
 * transfer (on_done then reports it as failed). */
typedef int (*http_data_fn)(struct http_req *r, const char *data, size_t len, void *ud);
typedef void (*http_done_fn)(struct http_req *r, void *ud);

/* on_read's answers besides a byte count (> 0) and 0 (the body is
 * complete). */
#define HTTP_READ_PAUSE ((ssize_t)-1) /* nothing yet: wait for http_req_resume_send() */
#define HTTP_READ_ABORT ((ssize_t)-2) /* abort the request */

/* Fills buf (max bytes) with the next piece of the request body. */
typedef ssize_t (*http_read_fn)(struct http_req *r, char *buf, size_t max, void *ud);

/* One response header: name as the server wrote it, value trimmed. */
typedef void (*http_header_fn)(void *ud, const char *name, const char *value);

struct http_req_opts {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const char *body;           /* copied; NULL for none */
    size_t body_len;
    http_read_fn on_read;       /* instead of body: a streamed (chunked) body */
    size_t max_body;            /* cap on a collected response body */
    int64_t timeout_ms;         /* whole transfer; 0 for none */
    int64_t connect_timeout_ms; /* 0 for libcurl's default */
    long low_speed_time_s;      /* abort when < 1 byte/s for this long; 0 = off */
    bool keepalive;             /* TCP keepalive probes (long-lived streams) */
    /* A PEM file of CAs trusted in addition to the system's
     * (/etc/ssl/certs); NULL for the system's only. */
    const char *ca_file;
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
/* The response status, or 0 when none arrived (valid from the first body
 * byte on). */
long http_req_status(const struct http_req *r);
/* The collected body (NUL-terminated, "" when none); borrowed. */
const char *http_req_body(const struct http_req *r, size_t *len);
/* The response's Content-Type, or NULL; borrowed. */
const char *http_req_content_type(const struct http_req *r);
/* A response header's value (name case-insensitive; the last one when it
 * came more than once), or NULL; borrowed until the request is freed. */
const char *http_req_header(const struct http_req *r, const char *name);
/* Calls fn for every header of the response (of the final response when
 * there were interim ones), in the order they came. */
void http_req_each_header(const struct http_req *r, http_header_fn fn, void *ud);
/* Why the transfer failed, in general words safe to show to others
 * ("Couldn't connect to server"), or NULL when it did not fail. */
const char *http_req_error(const struct http_req *r);
/* The same with libcurl's details (addresses, ports), for the local log. */
const char *http_req_error_detail(const struct http_req *r);
/* True when the failure was the transfer timing out or stalling. */
bool http_req_timed_out(const struct http_req *r);
/* True when the failure was TLS: a certificate that could not be
 * verified, a CA file that could not be read, a failed handshake. */
bool http_req_tls_failed(const struct http_req *r);
/* Request body bytes handed to libcurl so far (on_read requests). */
uint64_t http_req_sent(const struct http_req *r);
/* True when the request ended or was aborted before on_read was asked for
 * a single byte, or while every on_read answer so far was a pause. */
bool http_req_nothing_sent(const struct http_req *r);

/* Flow control for on_data requests: stop taking body bytes (libcurl keeps
 * them) until http_req_resume(). */
void http_req_pause(struct http_req *r);
void http_req_resume(struct http_req *r);
/* on_read requests: on_read has more to give; ask it again (at the end of
 * the loop iteration when called inside a libcurl callback). */
void http_req_resume_send(struct http_req *r);

/* The socket of the request's connection, or -1. */
int http_req_socket(const struct http_req *r);

#endif
