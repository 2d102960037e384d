/*
 * caller.c - the relay's hot routes on event loops of mcpd's own instead
 * of libmicrohttpd: callers (POST /v1/chat/completions and
 * POST /api/v1/llms/<name>/infer) and publishers' result posts
 * (POST /api/v1/llms/_provider-task/<id>/result).
 *
 * Why: a caller waits for an answer that arrives on another connection, the
 * publisher's result post. Under libmicrohttpd that wait is a suspend and a
 * resume: two epoll_ctl calls, an eventfd write and read that wake the
 * caller's worker, and a read that finds nothing — about half of the system
 * calls of a relayed request, and the cross-thread wake-up besides. Here the
 * thread that takes the result post writes the caller's answer to the
 * caller's socket itself, after server.mu is released, as stream.c does for
 * task frames; a burst of pipelined result posts read in one peek is
 * acknowledged in one write.
 *
 * Requests are parsed with the nodejs http-parser. Every read is a MSG_PEEK
 * followed by discarding exactly the bytes the parser took, so the socket
 * always holds the unread rest of the byte stream: when the next request on
 * a connection is for any other route, the connection is handed to the main
 * libmicrohttpd daemon at that request boundary, which then serves it.
 *
 * Ownership: a connection belongs to its loop thread, which alone reads,
 * parses and closes it. Other threads append to `out` under `wmu` and write
 * it, holding a reference while a write is pending; the socket is closed
 * when the last reference goes. The request (one at a time) is embedded in
 * the connection. A request whose answer comes later is "waiting"; whoever
 * finishes it (server.mu held) sets `done` under wmu as its last touch.
 */
#include "clock.h"
#include "log.h"
#include "protocol.h"
#include "server.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* What one peek may take; bodies arrive in pieces of at most this. */
#define PEEK_MAX (16 * 1024)
/* Request line and headers, as libmicrohttpd's pool allows (431 past it). */
#define HEAD_MAX (7 * 1024)
#define URL_MAX 2048
#define AUTH_MAX 1024
#define IDLE_TIMEOUT_MS 120000
/* A connection being closed after its answer: how long to wait for the
 * client to close its end before closing ours. */
#define LINGER_MS 2000
#define EVENTS_MAX 64

enum hdr { HDR_OTHER, HDR_AUTH, HDR_EXPECT, HDR_SESSION, HDR_HOST };

struct caller_conn {
    int fd;
    struct caller_loop *loop;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct caller_conn *prev, *next; /* the loop's list (loop thread only) */
    int64_t last_active;             /* monotonic ms (loop thread only) */

    /* Parsing (loop thread only). */
    http_parser parser;
    bool in_request;  /* between the first byte of a request and its end */
    bool complete;    /* the parser reached the end of the request */
    bool running;     /* the request's handler ran; its answer may be pending */
    bool head_failed; /* decided while reading the head: answer after the body */
    unsigned int fail_status;
    char fail_msg[512];
    const char *fail_allow; /* for 405 */
    size_t head_bytes;
    enum hdr hdr;
    bool hdr_in_value;
    char hname[32];
    size_t hname_len;
    char url[URL_MAX];
    size_t url_len;
    char auth[AUTH_MAX];
    size_t auth_len;
    char expect[16];
    size_t expect_len;
    char session[DB_SESSION_ID_LEN + 1];
    size_t session_len;
    bool http10;
    bool has_host;
    struct req req;

    /* Writing: shared, under wmu. */
    pthread_mutex_t wmu;
    struct buf out;
    bool flush_queued;  /* a flush is pending on some thread */
    bool keep_alive;    /* answers keep the connection open */
    bool close_after;   /* shut the socket down once out has drained */
    bool shut;          /* shutdown(SHUT_WR) done */
    bool broken;        /* a write failed */
    bool dead;          /* closed or handed over: nobody writes any more */
    bool done;          /* the current request is finished */
    int64_t done_at;    /* when a waiting request was finished */
    bool input_waiting; /* input arrived while the request was waiting */
    bool sse_chunked;   /* the SSE body is chunk-framed (HTTP/1.1) */
    int64_t shut_at;
    atomic_int refs;
};

struct caller_loop {
    struct server *srv;
    pthread_t thread;
    int epfd;
    int evfd;
    bool started;
    pthread_mutex_t mu; /* guards conns: the acceptor adds to it */
    struct caller_conn *conns;
};

static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---- request lines: which connections are ours ---- */

static bool path_end(char c)
{
    return c == ' ' || c == '?';
}

enum caller_line caller_classify(const char *p, size_t n)
{
    static const char post[] = "POST ";
    const size_t plen = sizeof post - 1;
    if (memcmp(p, post, n < plen ? n : plen) != 0)
        return CALLER_NO;
    if (n <= plen)
        return CALLER_MORE;
    /* The longest path served here: the llms prefix, a name, "/infer". */
    const size_t longest = sizeof MCP_ROUTE_LLMS + MCP_NAME_BUF + sizeof "/infer";
    size_t end = plen;
    while (end < n && !path_end(p[end]))
        end++;
    if (end - plen > longest)
        return CALLER_NO;
    if (end == n)
        return CALLER_MORE;
    char path[sizeof MCP_ROUTE_LLMS + MCP_NAME_BUF + sizeof "/infer" + 1];
    memcpy(path, p + plen, end - plen);
    path[end - plen] = '\0';
    struct route_match m;
    http_match_route(path, &m);
    bool ours = m.route == R_OPENAI_CHAT || m.route == R_INFER || m.route == R_RESULT;
    return ours && !m.bad_param ? CALLER_YES : CALLER_NO;
}

/* ---- answers ---- */

static const char *reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* "Date: ...\r\n", remade once a second per thread. */
static const char *date_line(void)
{
    static _Thread_local char line[64];
    static _Thread_local time_t made;
    time_t now = time(NULL);
    if (now != made || !line[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        made = now;
    }
    return line;
}

/* Writes of queued answers wait until server.mu is released (server_unlock)
 * or the loop thread has finished its event; each holds a reference. */
#define DEFERRED_FLUSHES_MAX 256
static _Thread_local struct caller_conn *deferred_flushes[DEFERRED_FLUSHES_MAX];
static _Thread_local unsigned int n_deferred_flushes;

static void conn_unref(struct caller_conn *c);
static void flush_locked(struct caller_conn *c);

static void schedule_flush(struct caller_conn *c)
{
    if (c->flush_queued)
        return;
    if (n_deferred_flushes == DEFERRED_FLUSHES_MAX) {
        flush_locked(c); /* a burst (shutdown): write now (wmu held) */
        return;
    }
    c->flush_queued = true;
    atomic_fetch_add(&c->refs, 1);
    deferred_flushes[n_deferred_flushes++] = c;
}

/* Appends bytes of the current answer (wmu held). A caller that lets its
 * answer pile up past CALLER_BACKLOG_MAX is cut off. */
static void out_append(struct caller_conn *c, const void *data, size_t len)
{
    if (c->dead || c->broken)
        return;
    if (buf_append(&c->out, data, len) < 0) {
        log_warn("a caller fell %u bytes behind its answer: closing its connection",
                 CALLER_BACKLOG_MAX);
        c->broken = true;
        buf_reset(&c->out);
        shutdown(c->fd, SHUT_RDWR);
        return;
    }
    schedule_flush(c);
}

static void head_append(struct caller_conn *c, unsigned status, const char *ctype)
{
    char line[96];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %u %s\r\n", status, reason(status));
    out_append(c, line, (size_t)n);
    const char *d = date_line();
    out_append(c, d, strlen(d));
    if (ctype) {
        out_append(c, "Content-Type: ", 14);
        out_append(c, ctype, strlen(ctype));
        out_append(c, "\r\n", 2);
    }
    if (!c->keep_alive)
        out_append(c, "Connection: close\r\n", 19);
    else if (c->http10)
        out_append(c, "Connection: keep-alive\r\n", 24);
}

void caller_reply(struct req *r, unsigned status, const char *ctype, const char *body, size_t len,
                  int retry_after, const char *allow)
{
    struct caller_conn *c = r->lc;
    pthread_mutex_lock(&c->wmu);
    if (buf_reserve(&c->out, len + 320) == 0) {
        head_append(c, status, ctype);
        char h[64];
        if (retry_after > 0)
            out_append(c, h, (size_t)snprintf(h, sizeof h, "Retry-After: %d\r\n", retry_after));
        if (allow)
            out_append(c, h, (size_t)snprintf(h, sizeof h, "Allow: %s\r\n", allow));
        if (status == 401)
            out_append(c, "WWW-Authenticate: Bearer\r\n", 26);
        out_append(c, h, (size_t)snprintf(h, sizeof h, "Content-Length: %zu\r\n\r\n", len));
        out_append(c, body, len);
    } else if (!c->dead) {
        c->broken = true;
        shutdown(c->fd, SHUT_RDWR);
    }
    if (!c->keep_alive)
        c->close_after = true;
    pthread_mutex_unlock(&c->wmu);
}

void caller_sse_send(struct req *r)
{
    struct caller_conn *c = r->lc;
    pthread_mutex_lock(&c->wmu);
    if (!r->sse_started) {
        r->sse_started = true;
        /* HTTP/1.0 has no chunked framing: the body ends with the connection. */
        c->sse_chunked = !c->http10;
        if (!c->sse_chunked)
            c->keep_alive = false;
        head_append(c, 200, "text/event-stream");
        static const char more[] = "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
        out_append(c, more, sizeof more - 1);
        if (c->sse_chunked)
            out_append(c, "Transfer-Encoding: chunked\r\n", 28);
        out_append(c, "\r\n", 2);
    }
    if (r->sse.len > 0) {
        if (c->sse_chunked) {
            char h[24];
            out_append(c, h, (size_t)snprintf(h, sizeof h, "%zx\r\n", r->sse.len));
            out_append(c, r->sse.data, r->sse.len);
            out_append(c, "\r\n", 2);
        } else {
            out_append(c, r->sse.data, r->sse.len);
        }
        buf_reset(&r->sse);
    }
    if (r->sse_ended) {
        if (c->sse_chunked)
            out_append(c, "0\r\n\r\n", 5);
        if (!c->keep_alive)
            c->close_after = true;
    }
    pthread_mutex_unlock(&c->wmu);
}

/* Sends what waits in out (wmu held). What the socket does not take goes
 * out when the loop sees it writable (EPOLLOUT, edge-triggered). */
static void flush_locked(struct caller_conn *c)
{
    c->flush_queued = false;
    if (c->dead || c->broken)
        return;
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            c->broken = true;
            /* The loop sees the hang-up and finishes the request. */
            shutdown(c->fd, SHUT_RDWR);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (c->close_after && !c->shut) {
        shutdown(c->fd, SHUT_WR);
        c->shut = true;
        c->shut_at = clock_mono_ms();
    }
}

/* On a loop thread, while it works through a connection's input, every
 * write waits for the end of the event: the connection's own answers (a
 * burst of result posts' acknowledgements) then leave first, in one write,
 * so the publisher can go on, and each caller gets what the burst gave it
 * in one write too. */
static _Thread_local uintptr_t batching;

static void flush_list(uintptr_t first)
{
    while (n_deferred_flushes > 0) {
        unsigned int n = n_deferred_flushes;
        struct caller_conn *cs[DEFERRED_FLUSHES_MAX];
        memcpy(cs, deferred_flushes, n * sizeof cs[0]);
        n_deferred_flushes = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (unsigned int i = 0; i < n; i++) {
                if (!cs[i] || (pass == 0 && (uintptr_t)cs[i] != first))
                    continue;
                pthread_mutex_lock(&cs[i]->wmu);
                flush_locked(cs[i]);
                pthread_mutex_unlock(&cs[i]->wmu);
                conn_unref(cs[i]);
                cs[i] = NULL;
            }
        }
    }
}

void caller_flush_deferred(void)
{
    if (!batching)
        flush_list(0);
}

/* ---- finishing a waiting request ---- */

/* Deliveries decided under server.mu (http_resume) run in server_unlock(),
 * still under the mutex but outside whatever code decided them: delivering
 * finishes requests, and with them tasks the deciding code may still hold.
 * A burst (shutdown, a lost session, a wake releasing its held calls) may
 * pass the fixed list; the rest waits in a heap array. */
#define DEFERRED_DELIVERIES_MAX 256
static _Thread_local struct req *deferred_deliveries[DEFERRED_DELIVERIES_MAX];
static _Thread_local struct req **extra_deliveries;
static _Thread_local size_t n_deferred_deliveries, cap_extra_deliveries;

void caller_resume(struct req *r)
{
    size_t i = n_deferred_deliveries;
    if (i < DEFERRED_DELIVERIES_MAX) {
        deferred_deliveries[i] = r;
    } else {
        size_t k = i - DEFERRED_DELIVERIES_MAX;
        if (k == cap_extra_deliveries) {
            size_t cap = cap_extra_deliveries ? cap_extra_deliveries * 2 : 256;
            struct req **grown = realloc(extra_deliveries, cap * sizeof *grown);
            if (!grown) {
                log_error("out of memory: a caller's answer is lost");
                return;
            }
            extra_deliveries = grown;
            cap_extra_deliveries = cap;
        }
        extra_deliveries[k] = r;
    }
    n_deferred_deliveries = i + 1;
}

void caller_run_deliveries(void)
{
    for (size_t i = 0; i < n_deferred_deliveries; i++)
        relay_deliver(i < DEFERRED_DELIVERIES_MAX ? deferred_deliveries[i]
                                                  : extra_deliveries[i - DEFERRED_DELIVERIES_MAX]);
    n_deferred_deliveries = 0;
    free(extra_deliveries);
    extra_deliveries = NULL;
    cap_extra_deliveries = 0;
}

void caller_finish(struct req *r)
{
    struct caller_conn *c = r->lc;
    if (r->wait == WAIT_TASK)
        relay_request_done(r);
    else if (r->wait == WAIT_WAKE)
        wake_forget(r);
    r->wait = WAIT_NONE;
    r->suspended = false;
    /* The last touch of r by this thread: the loop may reuse it after. */
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&c->wmu);
    c->done = true;
    c->done_at = now;
    if (c->input_waiting && !c->dead) {
        /* Input arrived while the request waited: re-arming a readable
         * edge-triggered socket reports it again. Under wmu, so the loop
         * cannot close or hand the socket over meanwhile. */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    c->input_waiting = false;
    pthread_mutex_unlock(&c->wmu);
}

/* ---- connections ---- */

static void conn_unref(struct caller_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->fd >= 0)
        close(c->fd);
    buf_release(&c->out);
    buf_release(&c->req.body);
    buf_release(&c->req.sse);
    pthread_mutex_destroy(&c->wmu);
    free(c);
}

static void req_reset(struct caller_conn *c)
{
    struct req *r = &c->req;
    struct buf body = r->body, sse = r->sse;
    buf_reset(&body);
    buf_release(&sse);
    if (body.cap > 64 * 1024)
        buf_release(&body); /* keep small buffers for the next request */
    memset(r, 0, sizeof *r);
    r->srv = c->loop->srv;
    r->lc = c;
    r->body = body;
    r->sse = sse;
    c->in_request = false;
    c->complete = false;
    c->running = false;
    c->head_failed = false;
    c->head_bytes = 0;
    c->hdr = HDR_OTHER;
    c->hdr_in_value = false;
    c->hname_len = c->url_len = c->auth_len = c->expect_len = c->session_len = 0;
    c->has_host = false;
    pthread_mutex_lock(&c->wmu);
    c->done = false;
    c->input_waiting = false;
    c->sse_chunked = false;
    pthread_mutex_unlock(&c->wmu);
}

static void list_remove(struct caller_loop *l, struct caller_conn *c)
{
    pthread_mutex_lock(&l->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pthread_mutex_unlock(&l->mu);
}

/* Finishes a request still running when its connection goes (server.mu
 * taken here): its task is cancelled, a held call forgotten. */
static void abandon_request(struct caller_conn *c)
{
    if (!c->running)
        return;
    struct server *srv = c->loop->srv;
    server_lock(srv);
    pthread_mutex_lock(&c->wmu);
    bool done = c->done;
    pthread_mutex_unlock(&c->wmu);
    if (!done) {
        c->req.peer_gone = true;
        caller_finish(&c->req);
    }
    server_unlock(srv);
    c->running = false;
}

/* Loop thread: closes c, or hands its socket to libmicrohttpd. */
static void conn_close(struct caller_conn *c, bool hand_over)
{
    struct caller_loop *l = c->loop;
    abandon_request(c);
    /* Dead first: from here no other thread writes or re-arms it. */
    pthread_mutex_lock(&c->wmu);
    c->dead = true;
    int fd = c->fd;
    if (hand_over)
        c->fd = -1;
    pthread_mutex_unlock(&c->wmu);
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    list_remove(l, c);
    if (hand_over && MHD_add_connection(l->srv->mhd, fd, (const struct sockaddr *)&c->addr,
                                        c->addrlen) != MHD_YES)
        log_warn("could not hand a connection over: %s", strerror(errno));
    conn_unref(c);
}

/* ---- parsing ---- */

static struct caller_conn *conn_of(http_parser *p)
{
    return p->data;
}

static int on_message_begin(http_parser *p)
{
    struct caller_conn *c = conn_of(p);
    c->in_request = true;
    return 0;
}

static void head_fail(struct caller_conn *c, unsigned status, const char *msg)
{
    if (c->head_failed)
        return;
    c->head_failed = true;
    c->fail_status = status;
    c->fail_allow = NULL;
    snprintf(c->fail_msg, sizeof c->fail_msg, "%s", msg);
}

static int head_grow(struct caller_conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > HEAD_MAX)
        head_fail(c, 431, "request line and headers too large");
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct caller_conn *c = conn_of(p);
    if (c->url_len + n >= sizeof c->url) {
        head_fail(c, 414, "request target too long");
        return 0;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return head_grow(c, n);
}

static void header_done(struct caller_conn *c)
{
    c->hname_len = 0;
    c->hdr = HDR_OTHER;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct caller_conn *c = conn_of(p);
    if (c->hdr_in_value) {
        header_done(c);
        c->hdr_in_value = false;
    }
    if (c->hname_len + n < sizeof c->hname) {
        memcpy(c->hname + c->hname_len, at, n);
        c->hname_len += n;
        c->hname[c->hname_len] = '\0';
    } else {
        c->hname_len = sizeof c->hname; /* too long to be one we read */
    }
    return head_grow(c, n);
}

static void append_value(char *dst, size_t cap, size_t *len, const char *at, size_t n)
{
    if (*len + n >= cap) {
        *len = cap; /* too long: treated as absent or invalid */
        return;
    }
    memcpy(dst + *len, at, n);
    *len += n;
    dst[*len] = '\0';
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct caller_conn *c = conn_of(p);
    if (!c->hdr_in_value) {
        c->hdr_in_value = true;
        c->hdr = HDR_OTHER;
        if (c->hname_len < sizeof c->hname) {
            if (strcasecmp(c->hname, "authorization") == 0)
                c->hdr = HDR_AUTH;
            else if (strcasecmp(c->hname, "expect") == 0)
                c->hdr = HDR_EXPECT;
            else if (strcasecmp(c->hname, MCP_HEADER_SESSION) == 0)
                c->hdr = HDR_SESSION;
            else if (strcasecmp(c->hname, "host") == 0)
                c->has_host = true;
        }
    }
    if (c->hdr == HDR_AUTH)
        append_value(c->auth, sizeof c->auth, &c->auth_len, at, n);
    else if (c->hdr == HDR_EXPECT)
        append_value(c->expect, sizeof c->expect, &c->expect_len, at, n);
    else if (c->hdr == HDR_SESSION)
        append_value(c->session, sizeof c->session, &c->session_len, at, n);
    return head_grow(c, n);
}

/* Auth, route, method and size, as the main daemon checks them; only the
 * relay's routes are served here (the request line said so already). */
static int on_headers_complete(http_parser *p)
{
    struct caller_conn *c = conn_of(p);
    struct req *r = &c->req;
    c->http10 = p->http_major == 1 && p->http_minor == 0;
    bool keep = http_should_keep_alive(p) != 0;
    pthread_mutex_lock(&c->wmu);
    c->keep_alive = keep;
    pthread_mutex_unlock(&c->wmu);

    char *q = strchr(c->url, '?');
    if (q)
        *q = '\0';
    r->openai = strncmp(c->url, "/v1/", 4) == 0;
    if (!c->http10 && !c->has_host)
        head_fail(c, 400, "missing Host header");
    if (c->head_failed)
        return 0;
    const char *auth = c->auth_len > 0 && c->auth_len < sizeof c->auth ? c->auth : NULL;
    long long declared = p->content_length == ULLONG_MAX ? -1
                         : p->content_length > LLONG_MAX ? LLONG_MAX
                                                         : (long long)p->content_length;
    struct route_match m;
    char msg[512];
    unsigned status = http_check_head(c->loop->srv, c->url, http_method_str(p->method), auth,
                                      declared, &m, r->owner, msg, sizeof msg);
    if (!status && m.route != R_OPENAI_CHAT && m.route != R_INFER && m.route != R_RESULT) {
        status = 404;
        snprintf(msg, sizeof msg, "no such route: %.200s", c->url);
    }
    if (status) {
        head_fail(c, status, msg);
        if (status == 405)
            c->fail_allow = m.method;
        return 0; /* 413: answered now, the rest unread (conn_input) */
    }
    r->route = m.route;
    memcpy(r->param, m.param, sizeof r->param);
    if (c->expect_len > 0 && c->expect_len < sizeof c->expect &&
        strcasecmp(c->expect, "100-continue") == 0) {
        pthread_mutex_lock(&c->wmu);
        out_append(c, CONTINUE_100, sizeof CONTINUE_100 - 1);
        pthread_mutex_unlock(&c->wmu);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct caller_conn *c = conn_of(p);
    struct req *r = &c->req;
    if (c->head_failed || r->too_large)
        return 0;
    if (buf_append(&r->body, at, n) < 0)
        r->too_large = true;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct caller_conn *c = conn_of(p);
    c->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

const char *caller_session(const struct req *r)
{
    const struct caller_conn *c = r->lc;
    return c->session_len > 0 && c->session_len < sizeof c->session ? c->session : NULL;
}

/* ---- the loop ---- */

/* Answers with an error right away and closes the connection after it. */
static void reply_and_close(struct caller_conn *c, unsigned status, const char *msg)
{
    pthread_mutex_lock(&c->wmu);
    c->keep_alive = false;
    pthread_mutex_unlock(&c->wmu);
    http_reply_error(&c->req, status, "%s", msg);
    c->running = false;
}

/* Runs a complete request. Returns true when the next request may be
 * read now, false when this one waits for its answer. */
static bool run_request(struct caller_conn *c)
{
    struct req *r = &c->req;
    struct server *srv = c->loop->srv;
    if (c->head_failed) {
        http_reply_refused(r, c->fail_status, c->fail_allow, c->fail_msg);
        return true;
    }
    if (r->too_large) {
        http_reply_error(r, 413, "request body larger than %lld bytes",
                         (long long)srv->cfg.max_body);
        return true;
    }
    c->running = true;
    enum MHD_Result rc;
    if (r->route == R_OPENAI_CHAT)
        rc = relay_openai_chat(r);
    else if (r->route == R_INFER)
        rc = relay_infer(r, r->param);
    else
        rc = relay_result(r, r->param);
    if (!r->was_suspended) {
        c->running = false;
        if (rc != MHD_YES)
            reply_and_close(c, 500, "out of memory");
        return true;
    }
    pthread_mutex_lock(&c->wmu);
    bool done = c->done;
    pthread_mutex_unlock(&c->wmu);
    if (done)
        c->running = false;
    return done;
}

/* Reads and runs requests until one waits, input runs dry or the
 * connection closes. False when it closed (c is gone). */
static bool conn_input(struct caller_conn *c)
{
    static _Thread_local char peekbuf[PEEK_MAX];
    for (;;) {
        if (c->running) {
            pthread_mutex_lock(&c->wmu);
            bool done = c->done;
            if (!done)
                c->input_waiting = true;
            pthread_mutex_unlock(&c->wmu);
            if (!done)
                return true;
            c->running = false;
        }
        pthread_mutex_lock(&c->wmu);
        bool closing = c->close_after || c->broken;
        pthread_mutex_unlock(&c->wmu);
        ssize_t n = recv(c->fd, peekbuf, sizeof peekbuf, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return true;
        if (n <= 0) {
            conn_close(c, false);
            return false;
        }
        if (closing) {
            /* Answered and closing: what the client still sends is dropped. */
            if (recv(c->fd, peekbuf, (size_t)n, MSG_DONTWAIT) <= 0) {
                conn_close(c, false);
                return false;
            }
            continue;
        }
        /* Requests answered at once (result posts, errors) are run one
         * after another from one peek; one read then takes them all. */
        size_t off = 0;
        enum { GO_ON, WAIT, HAND_OVER, FAILED } next = GO_ON;
        while (off < (size_t)n && next == GO_ON) {
            if (c->complete)
                req_reset(c);
            if (!c->in_request) {
                enum caller_line k = caller_classify(peekbuf + off, (size_t)n - off);
                if (k == CALLER_MORE && (size_t)n < sizeof peekbuf) {
                    next = WAIT; /* the rest of the request line is on its way */
                    break;
                }
                if (k != CALLER_YES) {
                    next = HAND_OVER;
                    break;
                }
            }
            size_t took =
                http_parser_execute(&c->parser, &settings, peekbuf + off, (size_t)n - off);
            enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
            if (err != HPE_OK && err != HPE_PAUSED) {
                c->complete = true;
                reply_and_close(c, 400, http_errno_description(err));
                next = FAILED; /* the rest is dropped */
                break;
            }
            off += took;
            if (c->head_failed && c->fail_status == 413 && !c->complete) {
                c->complete = true;
                reply_and_close(c, 413, c->fail_msg);
                next = FAILED;
                break;
            }
            if (!c->complete) {
                if (took == 0)
                    next = WAIT;
                break; /* the rest of the request is on its way */
            }
            http_parser_pause(&c->parser, 0);
            if (!run_request(c)) {
                next = WAIT;
                if (off < (size_t)n || (size_t)n == sizeof peekbuf) {
                    /* A pipelined request is already here: read it once
                     * this one is answered (caller_finish re-arms). */
                    pthread_mutex_lock(&c->wmu);
                    if (c->done)
                        next = GO_ON;
                    else
                        c->input_waiting = true;
                    pthread_mutex_unlock(&c->wmu);
                    if (next == GO_ON)
                        c->running = false;
                }
            }
            pthread_mutex_lock(&c->wmu);
            if (c->close_after || c->broken)
                next = FAILED; /* answered and closing: the rest is dropped */
            pthread_mutex_unlock(&c->wmu);
        }
        /* Exactly what the parser took leaves the socket. */
        if (off > 0 && recv(c->fd, peekbuf, off, MSG_DONTWAIT) != (ssize_t)off) {
            conn_close(c, false);
            return false;
        }
        if (next == WAIT)
            return true;
        if (next == HAND_OVER) {
            /* Another route: libmicrohttpd serves it, and the rest, once
             * the last answer is out (EPOLLOUT brings us back). */
            pthread_mutex_lock(&c->wmu);
            flush_locked(c);
            bool drained = c->out.len == 0;
            if (!drained)
                c->input_waiting = true;
            pthread_mutex_unlock(&c->wmu);
            if (!drained)
                return true;
            conn_close(c, true);
            return false;
        }
    }
}

static bool conn_output(struct caller_conn *c)
{
    pthread_mutex_lock(&c->wmu);
    flush_locked(c);
    bool resume = c->input_waiting && c->out.len == 0 && !c->running;
    if (resume)
        c->input_waiting = false;
    pthread_mutex_unlock(&c->wmu);
    return resume ? conn_input(c) : true;
}

static void conn_event(struct caller_conn *c, uint32_t events)
{
    c->last_active = clock_mono_ms();
    if ((events & EPOLLOUT) && !conn_output(c))
        return;
    if (events & (EPOLLERR | EPOLLHUP)) {
        conn_close(c, false);
        return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP)) && !conn_input(c))
        return;
    /* The caller went away while its request waits: cancel it. (A client
     * that shuts only its sending side after a request it does not wait
     * for is treated the same.) */
    if ((events & EPOLLRDHUP) && c->running)
        conn_close(c, false);
}

/* Closes connections idle too long, and those done lingering. */
static void sweep(struct caller_loop *l, int64_t now)
{
    enum { BATCH = 256 };
    struct caller_conn *expired[BATCH];
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    for (struct caller_conn *c = l->conns; c && n < BATCH; c = c->next) {
        pthread_mutex_lock(&c->wmu);
        bool waiting = c->running && !c->done;
        int64_t active = c->done_at > c->last_active ? c->done_at : c->last_active;
        bool lingered = c->shut && now - c->shut_at > LINGER_MS;
        bool broken = c->broken;
        pthread_mutex_unlock(&c->wmu);
        /* A request waiting for its answer has deadlines of its own. */
        if (!waiting && (lingered || broken || now - active > IDLE_TIMEOUT_MS))
            expired[n++] = c;
    }
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++)
        conn_close(expired[i], false);
}

static void *loop_main(void *arg)
{
    struct caller_loop *l = arg;
    struct epoll_event evs[EVENTS_MAX];
    int64_t next_sweep = clock_mono_ms() + 1000;
    for (;;) {
        int n = epoll_wait(l->epfd, evs, EVENTS_MAX, 1000);
        bool stop = false;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                stop = true;
                continue;
            }
            batching = (uintptr_t)evs[i].data.ptr;
            conn_event(evs[i].data.ptr, evs[i].events);
            uintptr_t first = batching;
            batching = 0;
            flush_list(first);
        }
        if (stop)
            break;
        int64_t now = clock_mono_ms();
        if (now >= next_sweep) {
            sweep(l, now);
            next_sweep = now + 1000;
        }
    }
    return NULL;
}

void caller_take(struct server *srv, int fd, const struct sockaddr_storage *addr, socklen_t addrlen)
{
    struct caller_loop *l = &srv->loops[srv->next_loop++ % srv->nloops];
    struct caller_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    /* Answers and SSE chunks go out as they are written, not held back by
     * Nagle's algorithm behind an unacknowledged earlier write. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->loop = l;
    c->addr = *addr;
    c->addrlen = addrlen;
    c->last_active = clock_mono_ms();
    pthread_mutex_init(&c->wmu, NULL);
    buf_init(&c->out, CALLER_BACKLOG_MAX);
    buf_init(&c->req.body, (size_t)srv->cfg.max_body);
    buf_init(&c->req.sse, CALLER_BACKLOG_MAX);
    c->req.srv = srv;
    c->req.lc = c;
    atomic_init(&c->refs, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->keep_alive = true;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    pthread_mutex_lock(&l->mu);
    c->next = l->conns;
    if (c->next)
        c->next->prev = c;
    l->conns = c;
    pthread_mutex_unlock(&l->mu);
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_warn("cannot watch a caller connection: %s", strerror(errno));
        list_remove(l, c);
        conn_unref(c);
    }
}

int caller_start(struct server *srv, unsigned int threads)
{
    if (threads < 1)
        threads = 1;
    srv->loops = calloc(threads, sizeof *srv->loops);
    if (!srv->loops)
        return -1;
    srv->nloops = threads;
    for (unsigned int i = 0; i < threads; i++) {
        srv->loops[i].epfd = srv->loops[i].evfd = -1;
        pthread_mutex_init(&srv->loops[i].mu, NULL);
    }
    for (unsigned int i = 0; i < threads; i++) {
        struct caller_loop *l = &srv->loops[i];
        l->srv = srv;
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        l->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->epfd < 0 || l->evfd < 0)
            return -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) < 0)
            return -1;
        if (pthread_create(&l->thread, NULL, loop_main, l) != 0)
            return -1;
        l->started = true;
    }
    return 0;
}

void caller_stop_threads(struct server *srv)
{
    for (unsigned int i = 0; i < srv->nloops; i++) {
        struct caller_loop *l = &srv->loops[i];
        if (l->started) {
            uint64_t one = 1;
            ssize_t w = write(l->evfd, &one, sizeof one);
            (void)w;
            pthread_join(l->thread, NULL);
            l->started = false;
        }
    }
}

void caller_close_all(struct server *srv)
{
    for (unsigned int i = 0; i < srv->nloops; i++) {
        struct caller_loop *l = &srv->loops[i];
        while (l->conns)
            conn_close(l->conns, false);
        if (l->epfd >= 0)
            close(l->epfd);
        if (l->evfd >= 0)
            close(l->evfd);
        pthread_mutex_destroy(&l->mu);
    }
    free(srv->loops);
    srv->loops = NULL;
    srv->nloops = 0;
}
