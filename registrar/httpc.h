/*
 * httpc.h - a small HTTP/1.1 client on the loop, for the two calls every
 * relayed task makes (the upstream call and the result post).
 *
 * transport.c hands a request here first and uses libcurl for whatever this
 * client declines. It takes a request when all of these hold:
 *
 *   - the URL is http:// (not https://) without user name or password;
 *   - the host is an IPv4 literal, a bracketed IPv6 literal (no zone), or
 *     "localhost", which is never looked up: it is 127.0.0.1, then ::1 when
 *     127.0.0.1 refuses the connection;
 *   - no proxy applies: http_proxy, HTTP_PROXY, all_proxy and ALL_PROXY are
 *     all unset, or no_proxy / NO_PROXY is "*" or lists the host exactly.
 *     A no_proxy entry this client cannot judge (a CIDR range) sends every
 *     request to libcurl while a proxy variable is set. The environment is
 *     read once, when the loop's client is made.
 *
 * Everything else (https, host names, proxies) goes to libcurl as before.
 *
 * How it works. One struct httpc per loop (loop_httpc()) keeps a pool of
 * keep-alive connections per origin (address and port): at most
 * HTTPC_MAX_IDLE idle ones each, closed after HTTPC_IDLE_MS unused. Sockets
 * are non-blocking with TCP_NODELAY and are watched through the loop; an
 * idle connection stays watched, so a peer closing it is noticed and the
 * connection dropped. A connection is closed rather than reused after
 * "Connection: close", an HTTP/1.0 response without keep-alive, a
 * close-delimited body, an error, or a response abandoned before its end.
 *
 * The request is laid out once in the connection's reusable write buffer,
 * head and body together, and sent with one send() as soon as the
 * connection is ready: the body must be copied (transport.h promises that
 * the caller's buffer may go at once) and a request sent on a reused
 * connection must stay resendable, so sending from the caller's buffer
 * would only move the copy, not save it. No allocation happens per request
 * once the pool is warm. The header is: request line, Host (the URL's
 * authority as written), User-Agent: mcplocal and an Accept for any type
 * unless the caller gives its own, the caller's lines, Content-Length when there is a
 * body or the method is not GET/HEAD; never Expect: 100-continue.
 *
 * Responses are parsed by the nodejs http-parser (libhttp-parser-dev, 2.9):
 * status line, headers, Content-Length, chunked and close-delimited bodies
 * and http_should_keep_alive(); interim 1xx responses are skipped. Headers
 * are capped by the parser (80 KiB), bodies by the caller.
 *
 * A request sent on a reused connection that ends before the first response
 * byte (the peer closed the idle connection meanwhile) is sent once more on
 * a new connection, as libcurl does; never once a response byte arrived.
 *
 * Pipelining (http_req_opts.pipeline). A pipelined request does not take a
 * connection of its own: it is appended to the write buffer of one of at
 * most HTTPC_PIPE_CONNS connections per origin that carry a FIFO of up to
 * HTTPC_PIPE_DEPTH requests each, and the responses are matched in order
 * (the parser is started afresh for each). A request joins a connection
 * whose bytes are not sent yet, else an empty one, else a new one while
 * there are fewer than HTTPC_PIPE_CONNS, else the least loaded; with all
 * full it takes a connection of its own as before. Four connections let
 * mcpd answer on more than one worker while a burst still goes out
 * together. Sends are coalesced: a connection with new bytes is flushed by
 * a loop hook (loop_hook_arm()) at the end of the loop iteration, so the
 * requests queued in one iteration cost one send().
 *
 * When a pipelined connection fails (send or receive error, end of stream,
 * a response that says Connection: close, a malformed response), requests
 * that got their whole response are done; the one partly answered fails;
 * the ones without a response byte are sent once more on another
 * connection, then fail. A request that times out closes its connection
 * and the others on it are treated the same way, so a stuck head does not
 * hold the ones behind it. Failures found this way are reported from the
 * loop. Releasing a pipelined request that is not sent yet removes its
 * bytes; one already (partly) sent stays in the FIFO without an owner and
 * its response is read and dropped; one whose response is arriving closes
 * the connection (the others are sent again). Pipelined requests never
 * pause (on_data requests are not pipelined) and are never HEAD.
 *
 * Callbacks run inside loop_busy_enter()/loop_busy_leave(), so owners that
 * free things from inside them defer as they do for libcurl's callbacks.
 * A failure found while starting is reported from the loop, never from
 * inside httpc_req_start().
 */
#ifndef MCPLOCAL_HTTPC_H
#define MCPLOCAL_HTTPC_H

#include "loop.h"
#include "transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Idle connections kept per origin, and how long one may stay unused. */
#define HTTPC_MAX_IDLE 64
#define HTTPC_IDLE_MS 60000
/* Pipelined connections per origin, and requests outstanding on each. */
#define HTTPC_PIPE_CONNS 4
#define HTTPC_PIPE_DEPTH 16

/* httpc_req_start(): the request is not one this client takes. */
#define HTTPC_DECLINED 1

struct httpc;
struct httpc_conn;
struct httpc_origin;

enum httpc_error {
    HTTPC_OK = 0,
    HTTPC_E_CONNECT,
    HTTPC_E_TIMEOUT,
    HTTPC_E_NOTHING,
    HTTPC_E_RECV,
    HTTPC_E_SEND,
    HTTPC_E_PARTIAL,
    HTTPC_E_WEIRD,
    HTTPC_E_WRITE,
    HTTPC_E_NOMEM,
};

/* Decoded body bytes as they arrive. Return 0 to go on, non-zero to abort
 * the request (it then ends with HTTPC_E_WRITE). */
typedef int (*httpc_body_fn)(void *ud, const char *data, size_t len);
/* Called once when the request ends, unless it was released first. */
typedef void (*httpc_done_fn)(void *ud);

/* One request, embedded in its owner's struct. The fields are private: use
 * the functions below. */
struct httpc_req {
    struct httpc *c;
    struct httpc_conn *conn; /* the connection carrying it, while it runs */
    struct loop_timer timer; /* deadlines, and reports from the loop */
    httpc_body_fn on_body;
    httpc_done_fn on_done;
    void *ud;
    struct httpc_origin *origin;
    int64_t started, deadline, connect_due, stall_due; /* monotonic ms; 0 = none */
    int64_t connect_timeout_ms, stall_ms;
    uint64_t rx, stall_mark; /* response bytes read; rx at the last stall check */
    long status;
    enum httpc_error err;
    bool running, starting, report_pending, kick;
    bool keepalive, is_head, localhost, tried_v6;
    bool reused, retried, got_bytes, headers_done, complete, interim;
    bool pause_wanted;
    bool pipelined; /* queued on a pipelined connection */
    unsigned char ctype_len;
    char ctype[128];
    char detail[160];
};

/* Returns a new client for loop l (proxy environment read now), or NULL when
 * out of memory. Free with httpc_free(). */
struct httpc *httpc_new(struct loop *l);
/* Closes the pooled connections and frees the client. Requests must have
 * been released first. NULL is a no-op. */
void httpc_free(struct httpc *c);

/* Starts request o (method, url, headers, body, timeouts and keepalive are
 * used; max_body, on_data and on_done are the caller's business) in q.
 * Returns 0 when started (release q with httpc_req_release()),
 * HTTPC_DECLINED when the URL is not one this client takes (q is untouched,
 * use libcurl), or -1 when out of memory. */
int httpc_req_start(struct httpc *c, struct httpc_req *q, const struct http_req_opts *o,
                    httpc_body_fn on_body, httpc_done_fn on_done, void *ud);
/* Aborts the request if it still runs (closing its connection); no callback
 * is called afterwards. Must not be called from inside q's own callbacks
 * (defer it, as transport.c does). */
void httpc_req_release(struct httpc_req *q);

/* Valid after on_done; the same meanings as the http_req_ functions. */
bool httpc_req_ok(const struct httpc_req *q);
/* The status, known once the response's headers arrived; else 0. */
long httpc_req_status(const struct httpc_req *q);
const char *httpc_req_content_type(const struct httpc_req *q);
/* "Couldn't connect to server" and the like, or NULL when no failure. */
const char *httpc_req_error(const struct httpc_req *q);
/* The same with the address, port and cause, for the local log. */
const char *httpc_req_error_detail(const struct httpc_req *q);
bool httpc_req_timed_out(const struct httpc_req *q);

/* Flow control: after pause, no body bytes are handed over (and the socket
 * is not read) until resume. Either may be called from inside on_body. */
void httpc_req_pause(struct httpc_req *q);
void httpc_req_resume(struct httpc_req *q);

#endif
