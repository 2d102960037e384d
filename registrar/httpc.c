#include "httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes read from a socket at a time; also the most a paused request holds
 * back. */
#define HTTPC_RBUF 16384
/* A write buffer grown past this by a large request is given back. */
#define HTTPC_WBUF_KEEP 65536
/* libcurl's default when the caller sets no connect timeout. */
#define HTTPC_CONNECT_TIMEOUT_MS 300000

/* One address and port; its pooled connections, most recently used first. */
struct httpc_origin {
    struct sockaddr_storage addr;
    socklen_t alen;
    unsigned port;
    char text[INET6_ADDRSTRLEN]; /* the address, for error details */
    struct httpc_conn *idle;
    unsigned nidle;
    struct httpc_conn *pipes[HTTPC_PIPE_CONNS]; /* pipelined connections */
    unsigned npipes;
    struct httpc_origin *next;
};

/* A request on a pipelined connection, in the order sent. */
struct httpc_slot {
    struct httpc_req *q; /* NULL: released; its response is read and dropped */
    size_t start, end;   /* its bytes in the connection's wbuf */
};

struct httpc_conn {
    struct loop_fd w;
    short wev; /* the events watched; 0 when not in the loop */
    int fd;
    bool connected;
    bool ka_set;     /* TCP keepalive probes configured */
    int connect_err; /* connect() failed at once with this errno */
    unsigned served; /* responses completed on it */
    struct httpc *c;
    struct httpc_origin *origin;
    struct httpc_req *req; /* the request it carries, or NULL when idle */
    int64_t idle_since;
    struct httpc_conn *prev, *next; /* the origin's idle list */
    http_parser parser;
    /* The header whose name is being read: its first bytes, lower-cased
     * match state, and whether it is Content-Type. */
    unsigned char hname_len;
    bool hname_done, h_is_ctype;
    char hname[16];
    /* The request being sent: wbuf[woff..wlen) is still to go. */
    char *wbuf;
    size_t wlen, woff, wcap;
    /* Bytes read but not yet parsed (a paused request): rbuf[roff..rlen). */
    size_t rlen, roff;
    /* Pipelining: the FIFO (slots[0] is being answered), the flush list. */
    bool pipe, flush_queued;
    unsigned nslots;
    struct httpc_conn *flush_next;
    struct httpc_slot slots[HTTPC_PIPE_DEPTH];
    struct httpc_req sink; /* parses the responses of released requests */
    char rbuf[HTTPC_RBUF];
};

struct httpc {
    struct loop *loop;
    struct httpc_origin *origins;
    struct loop_timer reap_t;    /* closes connections idle too long */
    struct loop_hook flush_hook; /* sends what pipelined connections queued */
    struct httpc_conn *flush;    /* pipelined connections with bytes to send */
    unsigned nidle;
    bool proxy;     /* a proxy variable is set */
    bool proxy_all; /* ... and no no_proxy entry can be judged here */
    char *no_proxy; /* the no_proxy list when a proxy variable is set */
};

static const char *const error_text[] = {
    [HTTPC_OK] = NULL,
    [HTTPC_E_CONNECT] = "Couldn't connect to server",
    [HTTPC_E_TIMEOUT] = "Timeout was reached",
    [HTTPC_E_NOTHING] = "Server returned nothing (no headers, no data)",
    [HTTPC_E_RECV] = "Failure when receiving data from the peer",
    [HTTPC_E_SEND] = "Failed sending data to the peer",
    [HTTPC_E_PARTIAL] = "Transferred a partial file",
    [HTTPC_E_WEIRD] = "Weird server reply",
    [HTTPC_E_WRITE] = "Failed writing received data to disk/application",
    [HTTPC_E_NOMEM] = "Out of memory",
};

/* ---- the proxy rule --------------------------------------------------- */

static const char *env_either(const char *lower, const char *upper)
{
    const char *v = getenv(lower);
    if (!v || !*v)
        v = getenv(upper);
    return v && *v ? v : NULL;
}

static void read_proxy_env(struct httpc *c)
{
    c->proxy = env_either("http_proxy", "HTTP_PROXY") || env_either("all_proxy", "ALL_PROXY");
    if (!c->proxy)
        return;
    const char *np = env_either("no_proxy", "NO_PROXY");
    if (!np || strchr(np, '/')) {
        c->proxy_all = true; /* nothing exempt, or CIDR ranges: libcurl judges */
        return;
    }
    c->no_proxy = strdup(np);
    if (!c->no_proxy)
        c->proxy_all = true;
}

/* True when no_proxy exempts host (as written in the URL, brackets
 * stripped): "*" or an entry equal to it. */
static bool no_proxy_lists(const struct httpc *c, const char *host, size_t hlen)
{
    const char *p = c->no_proxy;
    while (*p) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        const char *e = p;
        size_t en = n;
        if (en >= 2 && e[0] == '[' && e[en - 1] == ']') {
            e++;
            en -= 2;
        }
        if ((en == 1 && e[0] == '*') || (en == hlen && en > 0 && strncasecmp(e, host, en) == 0))
            return true;
        p += n;
    }
    return false;
}

static bool proxied(const struct httpc *c, const char *host, size_t hlen)
{
    if (!c->proxy)
        return false;
    if (c->proxy_all)
        return true;
    return !no_proxy_lists(c, host, hlen);
}

/* ---- URLs ------------------------------------------------------------- */

struct target {
    struct sockaddr_storage addr;
    socklen_t alen;
    unsigned port;
    bool localhost;
    const char *authority; /* for Host */
    size_t authority_len;
    const char *path; /* path and query; "" means "/" */
    size_t path_len;
};

static int parse_port(const char *p, size_t n, unsigned *port)
{
    if (n == 0) {
        *port = 80;
        return 0;
    }
    if (n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

static void set_addr(struct target *t, int family, const void *a)
{
    memset(&t->addr, 0, sizeof t->addr);
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&t->addr;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)t->port);
        memcpy(&s->sin_addr, a, sizeof s->sin_addr);
        t->alen = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&t->addr;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)t->port);
        memcpy(&s->sin6_addr, a, sizeof s->sin6_addr);
        t->alen = sizeof *s;
    }
}

/* Fills t when url is one this client takes; -1 otherwise. */
static int parse_url(const struct httpc *c, const char *url, struct target *t)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return -1;
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    const char *rest = a + alen;
    if (alen == 0 || memchr(a, '@', alen))
        return -1;
    const char *host = a, *port = NULL;
    size_t hlen;
    char text[INET6_ADDRSTRLEN];
    int family = AF_INET;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close)
            return -1;
        host = a + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < a + alen) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
        }
        family = AF_INET6;
    } else {
        const char *colon = memchr(a, ':', alen);
        hlen = colon ? (size_t)(colon - a) : alen;
        port = colon ? colon + 1 : NULL;
    }
    if (hlen == 0 || hlen >= sizeof text)
        return -1;
    if (parse_port(port, port ? (size_t)(a + alen - port) : 0, &t->port) < 0)
        return -1;
    memcpy(text, host, hlen);
    text[hlen] = '\0';
    unsigned char bin[sizeof(struct in6_addr)];
    t->localhost = family == AF_INET && strcasecmp(text, "localhost") == 0;
    if (t->localhost)
        inet_pton(AF_INET, "127.0.0.1", bin);
    else if (inet_pton(family, text, bin) != 1)
        return -1;
    if (proxied(c, host, hlen))
        return -1;
    /* Anything libcurl would have to escape or strip is left to it. */
    size_t plen = strcspn(rest, " \t\r\n#");
    if (rest[plen] != '\0' && rest[plen] != '#')
        return -1;
    set_addr(t, family, bin);
    t->authority = a;
    t->authority_len = alen;
    t->path = rest;
    t->path_len = plen;
    return 0;
}

/* ---- origins and connections ----------------------------------------- */

static struct httpc_origin *origin_get(struct httpc *c, const struct sockaddr_storage *addr,
                                       socklen_t alen, unsigned port)
{
    for (struct httpc_origin *o = c->origins; o; o = o->next)
        if (o->alen == alen && memcmp(&o->addr, addr, alen) == 0)
            return o;
    struct httpc_origin *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    memcpy(&o->addr, addr, alen);
    o->alen = alen;
    o->port = port;
    const void *bin = addr->ss_family == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)addr)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
    inet_ntop(addr->ss_family, bin, o->text, sizeof o->text);
    o->next = c->origins;
    c->origins = o;
    return o;
}

static void on_conn_event(struct loop *l, int fd, short revents, void *ud);

static void conn_watch(struct httpc_conn *k, short events)
{
    struct loop *l = k->c->loop;
    if (events == k->wev)
        return;
    if (events == 0) {
        loop_fd_remove(l, &k->w);
    } else if (k->wev == 0) {
        if (loop_fd_add(l, &k->w, k->fd, events, on_conn_event, k) < 0)
            return; /* cannot happen for a fresh socket; the deadline ends it */
    } else {
        loop_fd_modify(l, &k->w, events);
    }
    k->wev = events;
}

static void idle_unlink(struct httpc_conn *k)
{
    struct httpc_origin *o = k->origin;
    if (k->prev)
        k->prev->next = k->next;
    else
        o->idle = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    o->nidle--;
    k->c->nidle--;
}

static void conn_close(struct httpc_conn *k)
{
    conn_watch(k, 0);
    close(k->fd);
    free(k->wbuf);
    free(k);
}

static void set_keepalive(struct httpc_conn *k)
{
    int on = 1, idle = 30, intvl = 10, cnt = 3;
    setsockopt(k->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(k->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(k->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(k->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    k->ka_set = true;
}

/* Opens a connection to o: connected, connecting, or failed at once
 * (connect_err set, reported by the caller). NULL when out of memory or out
 * of sockets, with *err set to the errno. */
static struct httpc_conn *conn_open(struct httpc *c, struct httpc_origin *o, int *err)
{
    struct httpc_conn *k = malloc(sizeof *k);
    if (!k) {
        *err = ENOMEM;
        return NULL;
    }
    memset(k, 0, offsetof(struct httpc_conn, rbuf));
    k->c = c;
    k->origin = o;
    k->fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        *err = errno;
        free(k);
        return NULL;
    }
    int one = 1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
    if (connect(k->fd, (const struct sockaddr *)&o->addr, o->alen) == 0)
        k->connected = true;
    else if (errno == EINPROGRESS)
        conn_watch(k, CURL_WAIT_POLLOUT);
    else
        k->connect_err = errno;
    return k;
}

/* Takes a pipelined connection out of its origin and the flush list. */
static void pipe_unlink(struct httpc_conn *k)
{
    struct httpc_origin *o = k->origin;
    struct httpc *c = k->c;
    for (unsigned i = 0; i < o->npipes; i++)
        if (o->pipes[i] == k) {
            o->pipes[i] = o->pipes[--o->npipes];
            break;
        }
    if (k->flush_queued) {
        for (struct httpc_conn **pp = &c->flush; *pp; pp = &(*pp)->flush_next)
            if (*pp == k) {
                *pp = k->flush_next;
                break;
            }
        k->flush_queued = false;
    }
}

static void pipe_close(struct httpc_conn *k)
{
    pipe_unlink(k);
    conn_close(k);
}

static void reap_idle(struct loop *l, void *ud)
{
    struct httpc *c = ud;
    int64_t now = loop_now(l), next = 0;
    for (struct httpc_origin *o = c->origins; o; o = o->next) {
        struct httpc_conn *k = o->idle;
        while (k) {
            struct httpc_conn *n = k->next;
            int64_t due = k->idle_since + HTTPC_IDLE_MS;
            if (due <= now) {
                idle_unlink(k);
                conn_close(k);
            } else if (next == 0 || due < next) {
                next = due;
            }
            k = n;
        }
        for (unsigned i = 0; i < o->npipes;) {
            k = o->pipes[i];
            int64_t due = k->idle_since + HTTPC_IDLE_MS;
            if (k->nslots || k->woff < k->wlen || !k->connected) {
                i++;
            } else if (due <= now) {
                pipe_close(k);
            } else {
                if (next == 0 || due < next)
                    next = due;
                i++;
            }
        }
    }
    if (next)
        loop_timer_start(l, &c->reap_t, next - now);
}

/* Puts a connection whose response ended cleanly back in its origin's
 * pool, or closes it when the pool is full. */
static void conn_release(struct httpc_conn *k)
{
    struct httpc *c = k->c;
    struct httpc_origin *o = k->origin;
    k->req = NULL;
    if (o->nidle >= HTTPC_MAX_IDLE) {
        conn_close(k);
        return;
    }
    k->served++;
    k->wlen = k->woff = 0;
    if (k->wcap > HTTPC_WBUF_KEEP) {
        free(k->wbuf);
        k->wbuf = NULL;
        k->wcap = 0;
    }
    k->rlen = k->roff = 0;
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
    k->idle_since = loop_now(c->loop);
    conn_watch(k, CURL_WAIT_POLLIN);
    k->prev = NULL;
    k->next = o->idle;
    if (o->idle)
        o->idle->prev = k;
    o->idle = k;
    o->nidle++;
    c->nidle++;
    if (!c->reap_t.armed)
        loop_timer_start(c->loop, &c->reap_t, HTTPC_IDLE_MS);
}

/* ---- ending a request ------------------------------------------------- */

static void arm_timer(struct httpc_req *q, int64_t now);
static void pipe_break(struct httpc_conn *k, struct httpc_req *except, enum httpc_error e, int err);

/* Ends q: detaches (and closes) its connection, then calls on_done as the
 * very last thing, since the owner may free q there. While q is still
 * being started the report waits for the loop. */
static void finish(struct httpc_req *q)
{
    if (q->conn && q->pipelined) {
        pipe_break(q->conn, q, q->err, 0);
    } else if (q->conn) {
        conn_close(q->conn);
        q->conn = NULL;
    }
    if (q->starting) {
        q->report_pending = true;
        loop_timer_start(q->c->loop, &q->timer, 0);
        return;
    }
    q->running = false;
    loop_timer_stop(q->c->loop, &q->timer);
    struct loop *l = q->c->loop;
    loop_busy_enter(l);
    q->on_done(q->ud);
    loop_busy_leave(l);
}

static void fail(struct httpc_req *q, enum httpc_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct httpc_req *q, enum httpc_error e, const char *fmt, ...)
{
    q->err = e;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(q->detail, sizeof q->detail, fmt, ap);
    va_end(ap);
    if (e != HTTPC_E_CONNECT && n >= 0 && (size_t)n < sizeof q->detail && q->origin)
        snprintf(q->detail + n, sizeof q->detail - (size_t)n, " (%s port %u)", q->origin->text,
                 q->origin->port);
    finish(q);
}

/* ---- sending ---------------------------------------------------------- */

static int attach_new_conn(struct httpc_req *q, struct httpc_origin *o, struct httpc_conn *from);
static int conn_begin(struct httpc_req *q, struct httpc_conn *k, int64_t now);

static int wreserve(struct httpc_conn *k, size_t more)
{
    if (k->wlen + more <= k->wcap)
        return 0;
    size_t cap = k->wcap ? k->wcap : 1024;
    while (cap < k->wlen + more)
        cap *= 2;
    char *p = realloc(k->wbuf, cap);
    if (!p)
        return -1;
    k->wbuf = p;
    k->wcap = cap;
    return 0;
}

static void wput(struct httpc_conn *k, const char *s, size_t n)
{
    memcpy(k->wbuf + k->wlen, s, n);
    k->wlen += n;
}

/* A header line the caller gave that replaces one of ours. */
static bool names(const char *line, const char *name, size_t n)
{
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Lays the whole request out at the end of k's write buffer. */
static int build_request(struct httpc_conn *k, const struct http_req_opts *o,
                         const struct target *t)
{
    bool has_host = false, has_ua = false, has_accept = false;
    size_t mlen = strlen(o->method);
    size_t need = mlen + t->path_len + 1 + 16 + 8 + t->authority_len + 64 + 32 + o->body_len;
    for (size_t i = 0; o->headers && o->headers[i]; i++) {
        const char *h = o->headers[i];
        char f = (char)(h[0] | 0x20);
        if (f == 'h')
            has_host = has_host || names(h, "Host", 4);
        else if (f == 'u')
            has_ua = has_ua || names(h, "User-Agent", 10);
        else if (f == 'a')
            has_accept = has_accept || names(h, "Accept", 6);
        need += strlen(h) + 2;
    }
    if (wreserve(k, need) < 0)
        return -1;
    wput(k, o->method, mlen);
    wput(k, " ", 1);
    if (t->path_len == 0 || t->path[0] == '?')
        wput(k, "/", 1);
    wput(k, t->path, t->path_len);
    wput(k, " HTTP/1.1\r\n", 11);
    if (!has_host) {
        wput(k, "Host: ", 6);
        wput(k, t->authority, t->authority_len);
        wput(k, "\r\n", 2);
    }
    if (!has_ua)
        wput(k, "User-Agent: mcplocal\r\n", 22);
    if (!has_accept)
        wput(k, "Accept: */*\r\n", 13);
    for (size_t i = 0; o->headers && o->headers[i]; i++) {
        size_t n = strlen(o->headers[i]);
        if (n > 0 && o->headers[i][n - 1] == ':')
            continue; /* "Name:" removes a header in libcurl; never sent */
        wput(k, o->headers[i], n);
        wput(k, "\r\n", 2);
    }
    bool bodyless = strcmp(o->method, "GET") == 0 || strcmp(o->method, "HEAD") == 0;
    if (o->body || !bodyless) {
        char cl[40];
        int n = snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", o->body ? o->body_len : 0);
        wput(k, cl, (size_t)n);
    }
    wput(k, "\r\n", 2);
    if (o->body)
        wput(k, o->body, o->body_len);
    return 0;
}

/* A request on a reused connection failed before any response byte: send
 * it once more on a new connection. Returns -1 when q ended instead. */
static int retry_or_fail(struct httpc_req *q, enum httpc_error e, int err, const char *what)
{
    struct httpc_conn *k = q->conn;
    if (q->reused && !q->retried && !q->got_bytes) {
        q->retried = true;
        q->reused = false;
        return attach_new_conn(q, k->origin, k);
    }
    if (e == HTTPC_E_NOTHING)
        fail(q, e, "Empty reply from server");
    else
        fail(q, e, "%s failure: %s", what, strerror(err));
    return -1;
}

/* Sends wbuf[woff..wlen). Returns 0 when all went, EAGAIN when the socket
 * is full, or the errno of a failure. */
static int wsend(struct httpc_conn *k)
{
    while (k->woff < k->wlen) {
        ssize_t n = send(k->fd, k->wbuf + k->woff, k->wlen - k->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EWOULDBLOCK ? EAGAIN : errno;
        }
        k->woff += (size_t)n;
    }
    return 0;
}

/* Sends what is left of the request. Returns 0, or -1 when q ended. */
static int conn_flush(struct httpc_conn *k)
{
    struct httpc_req *q = k->req;
    int err = wsend(k);
    if (err == EAGAIN) {
        conn_watch(k, CURL_WAIT_POLLIN | CURL_WAIT_POLLOUT);
        return 0;
    }
    if (err)
        return retry_or_fail(q, HTTPC_E_SEND, err, "Send");
    conn_watch(k, q->pause_wanted ? 0 : CURL_WAIT_POLLIN);
    return 0;
}

/* ---- connecting ------------------------------------------------------- */

/* q's connection k could not connect (err): localhost goes on to ::1 once,
 * anything else ends q. Returns 0 while q goes on, -1 when it ended. */
static int connect_failed(struct httpc_req *q, struct httpc_conn *k, int err)
{
    if (err == ECONNREFUSED && q->localhost && !q->tried_v6) {
        q->tried_v6 = true;
        struct target t = {.port = q->origin->port};
        set_addr(&t, AF_INET6, &in6addr_loopback);
        struct httpc_origin *o = origin_get(q->c, &t.addr, t.alen, t.port);
        if (o)
            return attach_new_conn(q, o, k);
    }
    int64_t took = loop_now(q->c->loop) - q->started;
    fail(q, HTTPC_E_CONNECT, "Failed to connect to %s port %u after %lld ms: %s", q->origin->text,
         q->origin->port, (long long)took, strerror(err));
    return -1;
}

/* Moves q from its connection 'from' (which is closed) to a new one to o,
 * with the request bytes. Returns 0 while q goes on, -1 when it ended. */
static int attach_new_conn(struct httpc_req *q, struct httpc_origin *o, struct httpc_conn *from)
{
    int err = 0;
    struct httpc_conn *k = conn_open(q->c, o, &err);
    q->origin = o;
    if (!k) {
        if (err == ENOMEM)
            fail(q, HTTPC_E_NOMEM, "out of memory");
        else
            fail(q, HTTPC_E_CONNECT, "cannot make a socket: %s", strerror(err));
        return -1;
    }
    /* Swap buffers: the request moves without a copy. */
    char *b = k->wbuf;
    size_t cap = k->wcap;
    k->wbuf = from->wbuf;
    k->wcap = from->wcap;
    k->wlen = from->wlen;
    from->wbuf = b;
    from->wcap = cap;
    conn_close(from);
    q->conn = k;
    k->req = q;
    return conn_begin(q, k, loop_now(q->c->loop));
}

/* Starts q on its new connection k (its request laid out). Returns 0
 * while q goes on, -1 when it ended. */
static int conn_begin(struct httpc_req *q, struct httpc_conn *k, int64_t now)
{
    if (q->keepalive)
        set_keepalive(k);
    if (k->connect_err)
        return connect_failed(q, k, k->connect_err);
    if (k->connected)
        return conn_flush(k);
    q->connect_due = now + q->connect_timeout_ms;
    if (!q->starting)
        arm_timer(q, now);
    return 0;
}

static void connect_done(struct httpc_conn *k)
{
    struct httpc_req *q = k->req;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        connect_failed(q, k, err);
        return;
    }
    k->connected = true;
    q->connect_due = 0;
    conn_flush(k);
}

/* ---- receiving -------------------------------------------------------- */

static struct httpc_req *req_of(http_parser *p)
{
    return ((struct httpc_conn *)p->data)->req;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct httpc_conn *k = p->data;
    if (k->hname_done) {
        k->hname_done = false;
        k->hname_len = 0;
    }
    for (size_t i = 0; i < len && k->hname_len < sizeof k->hname; i++)
        k->hname[k->hname_len++] = (char)(at[i] | 0x20);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct httpc_conn *k = p->data;
    struct httpc_req *q = k->req;
    if (!k->hname_done) {
        k->hname_done = true;
        k->h_is_ctype = k->hname_len == 12 && memcmp(k->hname, "content-type", 12) == 0;
        if (k->h_is_ctype)
            q->ctype_len = 0;
    }
    if (k->h_is_ctype) {
        size_t room = sizeof q->ctype - 1 - q->ctype_len;
        size_t n = len < room ? len : room;
        memcpy(q->ctype + q->ctype_len, at, n);
        q->ctype_len = (unsigned char)(q->ctype_len + n);
        q->ctype[q->ctype_len] = '\0';
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct httpc_conn *k = p->data;
    struct httpc_req *q = k->req;
    k->hname_done = true;
    q->status = p->status_code;
    q->interim = q->status >= 100 && q->status < 200;
    q->headers_done = !q->interim;
    if (q->interim)
        q->status = 0;
    return q->is_head || q->interim ? 1 : 0;
}

static int on_parser_body(http_parser *p, const char *at, size_t len)
{
    struct httpc_req *q = req_of(p);
    if (q->on_body(q->ud, at, len) != 0) {
        q->err = HTTPC_E_WRITE;
        return -1;
    }
    if (q->pause_wanted)
        http_parser_pause(p, 1);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct httpc_req *q = req_of(p);
    if (!q->interim)
        q->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_parser_body,
    .on_message_complete = on_message_complete,
};

/* A 1xx response ended: the real one follows. */
static void skip_interim(struct httpc_conn *k, struct httpc_req *q)
{
    q->interim = false;
    q->ctype_len = 0;
    q->ctype[0] = '\0';
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
}

/* The response ended: pool the connection when it may carry another. */
static void complete(struct httpc_req *q, bool eof)
{
    struct httpc_conn *k = q->conn;
    q->conn = NULL;
    bool keep =
        !eof && http_should_keep_alive(&k->parser) && k->roff == k->rlen && k->woff == k->wlen;
    if (keep)
        conn_release(k);
    else
        conn_close(k);
    finish(q);
}

/* Parses rbuf[roff..rlen) (or the end of the stream when eof). Returns 0
 * while q goes on, -1 when it ended. */
static int parse(struct httpc_conn *k, bool eof)
{
    struct httpc_req *q = k->req;
    struct loop *l = k->c->loop;
    for (;;) {
        loop_busy_enter(l);
        size_t used = http_parser_execute(&k->parser, &parser_settings, k->rbuf + k->roff,
                                          eof ? 0 : k->rlen - k->roff);
        loop_busy_leave(l);
        if (!eof)
            k->roff += used;
        enum http_errno e = HTTP_PARSER_ERRNO(&k->parser);
        if (q->err == HTTPC_E_WRITE) {
            fail(q, HTTPC_E_WRITE, "Failure writing output to destination");
            return -1;
        }
        if (q->complete) {
            complete(q, eof);
            return -1;
        }
        if (q->interim && e == HPE_PAUSED) {
            skip_interim(k, q);
            continue;
        }
        if (e == HPE_PAUSED || e == HPE_OK || eof)
            return 0; /* at the end of the stream, on_eof() says what broke */
        fail(q, HTTPC_E_WEIRD, "malformed response: %s", http_errno_description(e));
        return -1;
    }
}

static int on_eof(struct httpc_conn *k)
{
    struct httpc_req *q = k->req;
    if (!q->got_bytes)
        return retry_or_fail(q, HTTPC_E_NOTHING, 0, NULL);
    if (parse(k, true) < 0)
        return -1;
    if (q->headers_done)
        fail(q, HTTPC_E_PARTIAL, "transfer closed with outstanding read data remaining");
    else
        fail(q, HTTPC_E_RECV, "connection closed in the middle of the response header");
    return -1;
}

/* Reads and parses what the socket has. */
static void conn_read(struct httpc_conn *k)
{
    struct httpc_req *q = k->req;
    for (;;) {
        if (q->pause_wanted || k->roff < k->rlen) {
            /* Held-back bytes go first (see resume_now()). */
            conn_watch(k, 0);
            return;
        }
        ssize_t n = recv(k->fd, k->rbuf, sizeof k->rbuf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            retry_or_fail(q, HTTPC_E_RECV, errno, "Recv");
            return;
        }
        if (n == 0) {
            on_eof(k);
            return;
        }
        q->got_bytes = true;
        q->rx += (uint64_t)n;
        k->rlen = (size_t)n;
        k->roff = 0;
        if (parse(k, false) < 0)
            return;
        if ((size_t)n < sizeof k->rbuf && !q->pause_wanted && k->roff == k->rlen)
            return;
    }
}

static void pipe_event(struct httpc_conn *k, short revents);

static void on_conn_event(struct loop *l, int fd, short revents, void *ud)
{
    (void)l;
    (void)fd;
    struct httpc_conn *k = ud;
    if (k->pipe) {
        pipe_event(k, revents);
        return;
    }
    if (!k->req) {
        /* Idle: the peer closed it, or sent what nobody asked for. */
        char b;
        ssize_t n = recv(k->fd, &b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        idle_unlink(k);
        conn_close(k);
        return;
    }
    if (!k->connected) {
        connect_done(k);
        return;
    }
    if ((revents & CURL_WAIT_POLLOUT) && k->woff < k->wlen) {
        struct httpc_req *q = k->req;
        if (conn_flush(k) < 0 || q->conn != k)
            return;
    }
    if (revents & CURL_WAIT_POLLIN)
        conn_read(k);
}

/* ---- pipelining ------------------------------------------------------- */

static int sink_body(void *ud, const char *data, size_t len)
{
    (void)ud;
    (void)data;
    (void)len;
    return 0;
}

/* Readies k's sink to parse the response of a released request. */
static void sink_reset(struct httpc_conn *k)
{
    struct httpc_req *s = &k->sink;
    s->c = k->c;
    s->on_body = sink_body;
    s->status = 0;
    s->err = HTTPC_OK;
    s->complete = s->interim = s->headers_done = s->got_bytes = false;
    s->ctype_len = 0;
}

/* Drops the bytes before the oldest unanswered request, keeping those that
 * may have to be sent again. */
static void pipe_compact(struct httpc_conn *k)
{
    size_t base = k->woff;
    if (k->nslots && k->slots[0].start < base)
        base = k->slots[0].start;
    if (base == 0)
        return;
    memmove(k->wbuf, k->wbuf + base, k->wlen - base);
    k->wlen -= base;
    k->woff -= base;
    for (unsigned i = 0; i < k->nslots; i++) {
        k->slots[i].start -= base;
        k->slots[i].end -= base;
    }
}

/* A pipelined connection to o for one more request, or NULL when all are
 * full and no new one can be opened. */
static struct httpc_conn *pipe_pick(struct httpc *c, struct httpc_origin *o)
{
    struct httpc_conn *best = NULL;
    for (unsigned i = 0; i < o->npipes; i++) {
        struct httpc_conn *k = o->pipes[i];
        if (k->nslots >= HTTPC_PIPE_DEPTH)
            continue;
        if (k->woff < k->wlen || !k->connected)
            return k; /* its bytes go out together */
        if (!best || k->nslots < best->nslots)
            best = k;
    }
    if ((best && best->nslots == 0) || o->npipes >= HTTPC_PIPE_CONNS)
        return best;
    int err = 0;
    struct httpc_conn *k = conn_open(c, o, &err);
    if (!k)
        return best;
    if (k->connect_err) {
        conn_close(k);
        return best;
    }
    k->pipe = true;
    k->idle_since = loop_now(c->loop);
    sink_reset(k);
    o->pipes[o->npipes++] = k;
    return k;
}

static void pipe_want_flush(struct httpc_conn *k)
{
    struct httpc *c = k->c;
    if (!k->flush_queued) {
        k->flush_queued = true;
        k->flush_next = c->flush;
        c->flush = k;
    }
    loop_hook_arm(c->loop, &c->flush_hook);
}

/* Queues q, whose bytes are wbuf[start..wlen), on k. */
static void pipe_push(struct httpc_conn *k, struct httpc_req *q, size_t start)
{
    k->slots[k->nslots++] = (struct httpc_slot){.q = q, .start = start, .end = k->wlen};
    q->conn = k;
    if (k->connected) {
        q->connect_due = 0;
        pipe_want_flush(k);
    } else {
        q->connect_due = loop_now(k->c->loop) + q->connect_timeout_ms;
    }
}

/* Sends q's request bytes again on another connection. Returns -1 when
 * none can be had. */
static int pipe_requeue(struct httpc_req *q, const char *bytes, size_t len)
{
    struct httpc_conn *k = pipe_pick(q->c, q->origin);
    if (!k)
        return -1;
    pipe_compact(k);
    if (wreserve(k, len) < 0)
        return -1;
    size_t start = k->wlen;
    wput(k, bytes, len);
    pipe_push(k, q, start);
    q->got_bytes = false;
    arm_timer(q, loop_now(q->c->loop));
    return 0;
}

/* Ends q with e, reported from the loop (no callback runs now). */
static void pipe_fail_later(struct httpc_req *q, enum httpc_error e, int err)
{
    q->conn = NULL;
    q->starting = true;
    switch (e) {
    case HTTPC_E_NOTHING:
        fail(q, e, "Empty reply from server");
        break;
    case HTTPC_E_SEND:
        fail(q, e, "Send failure: %s", strerror(err));
        break;
    case HTTPC_E_RECV:
        if (err)
            fail(q, e, "Recv failure: %s", strerror(err));
        else
            fail(q, e, "connection closed in the middle of the response header");
        break;
    case HTTPC_E_PARTIAL:
        fail(q, e, "transfer closed with outstanding read data remaining");
        break;
    case HTTPC_E_CONNECT:
        fail(q, e, "Failed to connect to %s port %u: %s", q->origin->text, q->origin->port,
             strerror(err));
        break;
    default:
        fail(q, e, "connection closed after a failure of a request ahead");
        break;
    }
    q->starting = false;
}

/* Closes pipelined connection k after failure e: a partly answered request
 * fails, the unanswered ones are sent once more elsewhere (or fail). except
 * is the request whose failure caused it; its caller ends it. */
static void pipe_break(struct httpc_conn *k, struct httpc_req *except, enum httpc_error e, int err)
{
    struct httpc_slot s[HTTPC_PIPE_DEPTH];
    unsigned n = k->nslots;
    memcpy(s, k->slots, n * sizeof s[0]);
    k->nslots = 0;
    k->req = NULL;
    pipe_unlink(k);
    for (unsigned i = 0; i < n; i++) {
        struct httpc_req *q = s[i].q;
        if (!q)
            continue;
        q->conn = NULL;
        if (q == except)
            continue;
        if (q->got_bytes) {
            pipe_fail_later(q, q->headers_done ? HTTPC_E_PARTIAL : HTTPC_E_RECV, 0);
            continue;
        }
        if (!q->retried) {
            q->retried = true;
            if (pipe_requeue(q, k->wbuf + s[i].start, s[i].end - s[i].start) == 0)
                continue;
        }
        pipe_fail_later(q, e, err);
    }
    conn_close(k);
}

/* Sends what k has queued. Returns 0, or -1 when k was closed. */
static int pipe_flush(struct httpc_conn *k)
{
    int err = wsend(k);
    if (err == EAGAIN) {
        conn_watch(k, CURL_WAIT_POLLIN | CURL_WAIT_POLLOUT);
        return 0;
    }
    if (err) {
        pipe_break(k, NULL, HTTPC_E_SEND, err);
        return -1;
    }
    conn_watch(k, CURL_WAIT_POLLIN);
    return 0;
}

/* The loop hook: one send per connection for what this iteration queued. */
static void flush_all(struct loop *l, void *ud)
{
    (void)l;
    struct httpc *c = ud;
    while (c->flush) {
        struct httpc_conn *k = c->flush;
        c->flush = k->flush_next;
        k->flush_queued = false;
        if (k->connected && k->woff < k->wlen)
            pipe_flush(k);
    }
}

/* The head request's response ended: hand it over, start afresh for the
 * next. Returns 0, or -1 when k was closed. */
static int pipe_complete(struct httpc_conn *k)
{
    struct httpc_req *q = k->slots[0].q;
    bool keep = http_should_keep_alive(&k->parser);
    k->nslots--;
    memmove(k->slots, k->slots + 1, k->nslots * sizeof k->slots[0]);
    k->served++;
    k->req = NULL;
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
    sink_reset(k);
    if (k->nslots == 0) {
        k->idle_since = loop_now(k->c->loop);
        if (!k->c->reap_t.armed)
            loop_timer_start(k->c->loop, &k->c->reap_t, HTTPC_IDLE_MS);
    }
    if (q) {
        q->conn = NULL;
        finish(q); /* k stays open: nothing a callback may do closes it */
    }
    if (!keep) {
        pipe_break(k, NULL, HTTPC_E_NOTHING, 0);
        return -1;
    }
    return 0;
}

/* Parses rbuf[roff..rlen) across consecutive responses. Returns 0, or -1
 * when k was closed. */
static int pipe_parse(struct httpc_conn *k)
{
    struct loop *l = k->c->loop;
    while (k->roff < k->rlen) {
        if (k->nslots == 0) {
            pipe_break(k, NULL, HTTPC_E_WEIRD, 0); /* bytes nobody asked for */
            return -1;
        }
        struct httpc_req *q = k->slots[0].q ? k->slots[0].q : &k->sink;
        k->req = q;
        q->got_bytes = true;
        loop_busy_enter(l);
        size_t used =
            http_parser_execute(&k->parser, &parser_settings, k->rbuf + k->roff, k->rlen - k->roff);
        loop_busy_leave(l);
        k->roff += used;
        q->rx += used;
        enum http_errno e = HTTP_PARSER_ERRNO(&k->parser);
        if (q->complete) {
            if (pipe_complete(k) < 0)
                return -1;
            continue;
        }
        if (q->interim && e == HPE_PAUSED) {
            skip_interim(k, q);
            continue;
        }
        if (e == HPE_OK && q->err != HTTPC_E_WRITE)
            continue;
        if (q == &k->sink) {
            pipe_break(k, NULL, HTTPC_E_WEIRD, 0);
        } else {
            pipe_break(k, q, HTTPC_E_WEIRD, 0);
            if (q->err == HTTPC_E_WRITE)
                fail(q, HTTPC_E_WRITE, "Failure writing output to destination");
            else
                fail(q, HTTPC_E_WEIRD, "malformed response: %s", http_errno_description(e));
        }
        return -1;
    }
    return 0;
}

static void pipe_eof(struct httpc_conn *k)
{
    if (k->nslots && k->slots[0].q && k->slots[0].q->got_bytes) {
        /* A close-delimited body ends here. */
        struct loop *l = k->c->loop;
        k->req = k->slots[0].q;
        loop_busy_enter(l);
        http_parser_execute(&k->parser, &parser_settings, k->rbuf, 0);
        loop_busy_leave(l);
        if (k->req->complete && pipe_complete(k) < 0)
            return;
    }
    pipe_break(k, NULL, HTTPC_E_NOTHING, 0);
}

static void pipe_read(struct httpc_conn *k)
{
    for (;;) {
        ssize_t n = recv(k->fd, k->rbuf, sizeof k->rbuf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pipe_break(k, NULL, HTTPC_E_RECV, errno);
            return;
        }
        if (n == 0) {
            pipe_eof(k);
            return;
        }
        k->rlen = (size_t)n;
        k->roff = 0;
        if (pipe_parse(k) < 0 || (size_t)n < sizeof k->rbuf)
            return;
    }
}

static void pipe_event(struct httpc_conn *k, short revents)
{
    if (!k->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0) {
            pipe_break(k, NULL, HTTPC_E_CONNECT, err);
            return;
        }
        k->connected = true;
        for (unsigned i = 0; i < k->nslots; i++)
            if (k->slots[i].q)
                k->slots[i].q->connect_due = 0;
        pipe_flush(k);
        return;
    }
    if ((revents & CURL_WAIT_POLLOUT) && k->woff < k->wlen && pipe_flush(k) < 0)
        return;
    if (revents & CURL_WAIT_POLLIN)
        pipe_read(k);
}

/* The owner lets go of pipelined q. */
static void pipe_drop(struct httpc_req *q)
{
    struct httpc_conn *k = q->conn;
    unsigned i = 0;
    while (i < k->nslots && k->slots[i].q != q)
        i++;
    if (i == k->nslots) {
        q->conn = NULL;
        return;
    }
    if (q->got_bytes) {
        /* Its response is arriving: the others go again elsewhere. */
        pipe_break(k, q, HTTPC_E_RECV, 0);
    } else if (k->slots[i].start >= k->woff) {
        /* Not sent at all: its bytes go. */
        size_t start = k->slots[i].start, len = k->slots[i].end - start;
        memmove(k->wbuf + start, k->wbuf + start + len, k->wlen - start - len);
        k->wlen -= len;
        for (unsigned j = i + 1; j < k->nslots; j++) {
            k->slots[j].start -= len;
            k->slots[j].end -= len;
        }
        k->nslots--;
        memmove(k->slots + i, k->slots + i + 1, (k->nslots - i) * sizeof k->slots[0]);
        if (k->nslots == 0)
            k->idle_since = loop_now(k->c->loop);
    } else {
        k->slots[i].q = NULL;
    }
    q->conn = NULL;
}

/* ---- deadlines -------------------------------------------------------- */

static void arm_timer(struct httpc_req *q, int64_t now)
{
    int64_t due = q->deadline;
    if (q->connect_due && (!due || q->connect_due < due))
        due = q->connect_due;
    if (q->stall_due && (!due || q->stall_due < due))
        due = q->stall_due;
    if (due)
        loop_timer_start(q->c->loop, &q->timer, due - now);
    else
        loop_timer_stop(q->c->loop, &q->timer);
}

/* A resumed request: parse what was held back, then read again. Returns 0
 * while q goes on, -1 when it ended. */
static int resume_now(struct httpc_req *q)
{
    struct httpc_conn *k = q->conn;
    if (!k || !k->connected || q->pause_wanted)
        return 0;
    http_parser_pause(&k->parser, 0);
    if (k->roff < k->rlen && parse(k, false) < 0)
        return -1;
    if (!q->pause_wanted && k->roff == k->rlen && k->woff == k->wlen)
        conn_watch(k, CURL_WAIT_POLLIN);
    return 0;
}

static void on_timer(struct loop *l, void *ud)
{
    struct httpc_req *q = ud;
    if (q->report_pending) {
        q->report_pending = false;
        finish(q);
        return;
    }
    if (q->kick) {
        q->kick = false;
        if (resume_now(q) < 0)
            return;
    }
    int64_t now = loop_now(l);
    if (q->deadline && now >= q->deadline) {
        fail(q, HTTPC_E_TIMEOUT,
             "Operation timed out after %lld milliseconds with %llu bytes received",
             (long long)(now - q->started), (unsigned long long)q->rx);
        return;
    }
    if (q->connect_due && now >= q->connect_due && q->conn && !q->conn->connected) {
        fail(q, HTTPC_E_TIMEOUT, "Connection timed out after %lld milliseconds",
             (long long)(now - q->started));
        return;
    }
    if (q->stall_due && now >= q->stall_due) {
        if (q->rx == q->stall_mark && !q->pause_wanted) {
            fail(q, HTTPC_E_TIMEOUT,
                 "Operation too slow. Less than 1 bytes/sec transferred the last %lld seconds",
                 (long long)(q->stall_ms / 1000));
            return;
        }
        q->stall_mark = q->rx;
        q->stall_due = now + q->stall_ms;
    }
    arm_timer(q, now);
}

/* ---- the API ---------------------------------------------------------- */

struct httpc *httpc_new(struct loop *l)
{
    struct httpc *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = l;
    loop_timer_init(&c->reap_t, reap_idle, c);
    loop_hook_init(&c->flush_hook, flush_all, c);
    read_proxy_env(c);
    return c;
}

void httpc_free(struct httpc *c)
{
    if (!c)
        return;
    loop_timer_stop(c->loop, &c->reap_t);
    loop_hook_cancel(c->loop, &c->flush_hook);
    while (c->origins) {
        struct httpc_origin *o = c->origins;
        c->origins = o->next;
        while (o->npipes)
            pipe_close(o->pipes[0]);
        while (o->idle) {
            struct httpc_conn *k = o->idle;
            idle_unlink(k);
            conn_close(k);
        }
        free(o);
    }
    free(c->no_proxy);
    free(c);
}

int httpc_req_start(struct httpc *c, struct httpc_req *q, const struct http_req_opts *o,
                    httpc_body_fn on_body, httpc_done_fn on_done, void *ud)
{
    struct target t;
    if (parse_url(c, o->url, &t) < 0)
        return HTTPC_DECLINED;
    struct httpc_origin *org = origin_get(c, &t.addr, t.alen, t.port);
    if (!org)
        return -1;
    memset(q, 0, sizeof *q);
    q->c = c;
    q->on_body = on_body;
    q->on_done = on_done;
    q->ud = ud;
    q->origin = org;
    q->keepalive = o->keepalive;
    q->localhost = t.localhost;
    q->is_head = strcmp(o->method, "HEAD") == 0;
    q->connect_timeout_ms =
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : HTTPC_CONNECT_TIMEOUT_MS;
    loop_timer_init(&q->timer, on_timer, q);
    q->started = loop_now(c->loop);
    if (o->timeout_ms > 0)
        q->deadline = q->started + o->timeout_ms;
    if (o->low_speed_time_s > 0) {
        q->stall_ms = (int64_t)o->low_speed_time_s * 1000;
        q->stall_due = q->started + q->stall_ms;
    }
    q->starting = true;
    q->running = true;

    if (o->pipeline && !o->keepalive && !o->on_data && !q->is_head && !t.localhost) {
        struct httpc_conn *k = pipe_pick(c, org);
        if (k) {
            q->pipelined = true;
            pipe_compact(k);
            size_t start = k->wlen;
            if (build_request(k, o, &t) < 0)
                return -1;
            pipe_push(k, q, start);
            q->starting = false;
            arm_timer(q, q->started);
            return 0;
        }
        /* All full, or no new connection: one of its own, as before. */
    }

    /* A long-lived stream (keepalive probes) gets a connection of its own:
     * it would hold a pooled one for hours, and mcpd gives connections that
     * open with a control stream a worker of their own. */
    struct httpc_conn *k = q->keepalive ? NULL : org->idle;
    if (k) {
        idle_unlink(k);
        if (build_request(k, o, &t) < 0) {
            conn_release(k);
            return -1;
        }
        if (q->keepalive && !k->ka_set)
            set_keepalive(k);
        q->reused = true;
        q->conn = k;
        k->req = q;
        conn_flush(k);
    } else {
        int err = 0;
        k = conn_open(c, org, &err);
        if (!k && err == ENOMEM)
            return -1;
        if (!k) {
            fail(q, HTTPC_E_CONNECT, "cannot make a socket: %s", strerror(err));
        } else if (build_request(k, o, &t) < 0) {
            conn_close(k);
            return -1;
        } else {
            q->conn = k;
            k->req = q;
            conn_begin(q, k, q->started);
        }
    }
    q->starting = false;
    if (!q->report_pending)
        arm_timer(q, q->started);
    return 0;
}

void httpc_req_release(struct httpc_req *q)
{
    if (!q->c)
        return;
    loop_timer_stop(q->c->loop, &q->timer);
    if (q->conn && q->pipelined) {
        pipe_drop(q);
    } else if (q->conn) {
        /* Mid-response: the connection cannot carry another. */
        conn_close(q->conn);
        q->conn = NULL;
    }
    q->running = false;
    q->c = NULL;
}

bool httpc_req_ok(const struct httpc_req *q)
{
    return !q->running && q->complete && q->err == HTTPC_OK;
}

long httpc_req_status(const struct httpc_req *q)
{
    return q->headers_done ? q->status : 0;
}

const char *httpc_req_content_type(const struct httpc_req *q)
{
    return q->ctype_len ? q->ctype : NULL;
}

const char *httpc_req_error(const struct httpc_req *q)
{
    if (q->running || q->err == HTTPC_OK)
        return NULL;
    return error_text[q->err];
}

const char *httpc_req_error_detail(const struct httpc_req *q)
{
    if (q->running || q->err == HTTPC_OK)
        return NULL;
    return q->detail[0] ? q->detail : error_text[q->err];
}

bool httpc_req_timed_out(const struct httpc_req *q)
{
    return !q->running && q->err == HTTPC_E_TIMEOUT;
}

void httpc_req_pause(struct httpc_req *q)
{
    if (q->pipelined)
        return; /* never asked for: pipelined requests collect their body */
    q->pause_wanted = true;
}

void httpc_req_resume(struct httpc_req *q)
{
    if (q->pipelined)
        return;
    if (!q->pause_wanted)
        return;
    q->pause_wanted = false;
    if (!q->running || !q->c)
        return;
    /* Held-back bytes are handed over from the loop, not from inside the
     * caller (who may be in another request's callback). */
    q->kick = true;
    if (!q->starting)
        loop_timer_start(q->c->loop, &q->timer, 0);
}
