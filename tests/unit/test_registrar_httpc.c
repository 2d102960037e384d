/* The loop's own HTTP/1.1 client (httpc.c) through transport.h, against a
 * raw TCP fake server that can do what a well-behaved one never does: split
 * chunks at odd bytes, close idle keep-alive connections, cut responses
 * short, stay silent, answer garbage. Also checks that https, host names
 * and proxies still go to libcurl. */
#include "clock.h"
#include "loop.h"
#include "tmpdir.h"
#include "transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- the raw fake server ---------------------------------------------- */

struct raw;
/* Serves one accepted connection (conn counts from 1); the server closes
 * fd afterwards. Connections are served one at a time. */
typedef void (*raw_script_fn)(struct raw *s, int fd, int conn);

struct raw {
    int lfd, port;
    pthread_t th;
    raw_script_fn script;
    const char *reply; /* for the scripts that send a fixed reply */
    atomic_int conns, requests;
    atomic_bool peer_closed; /* a script saw the client close mid-response */
    int held;                /* a connection kept open, unserved (or 0) */
    pthread_mutex_t mu;
    char last[8192]; /* the last request read, head and body */
    /* script_pipe: how the first connection behaves, how many requests it
     * waits for, the requests its first recv() held, and "conn:body " for
     * every request seen, in order. */
    int first_mode, expect;
    atomic_int first_recv_reqs, last_recv_reqs;
    char seen[1024];
};

static void *raw_main(void *ud)
{
    struct raw *s = ud;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        int n = atomic_fetch_add(&s->conns, 1) + 1;
        s->script(s, fd, n);
        close(fd);
    }
    return NULL;
}

static struct raw *raw_start(int family, raw_script_fn script, const char *reply)
{
    struct raw *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->script = script;
    s->reply = reply;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    }
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&ss, &len), 0);
    s->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
    assert_int_equal(pthread_create(&s->th, NULL, raw_main, s), 0);
    return s;
}

/* Stop after the client's loop is freed: scripts wait for it to close. */
static void raw_stop(struct raw *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    if (s->held > 0)
        close(s->held);
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void raw_last(struct raw *s, char *out, size_t cap)
{
    pthread_mutex_lock(&s->mu);
    snprintf(out, cap, "%s", s->last);
    pthread_mutex_unlock(&s->mu);
}

/* Reads one request (head and Content-Length body). Returns 1, or 0 when
 * the client closed the connection first. */
static int raw_read_request(struct raw *s, int fd)
{
    char buf[8192];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        if (n == sizeof buf - 1)
            return 0;
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0)
            return 0;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head = (size_t)(end + 4 - buf), body = 0;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl && cl < end)
        body = strtoul(cl + 17, NULL, 10);
    while (n < head + body && n < sizeof buf - 1) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0)
            return 0;
        n += (size_t)r;
    }
    buf[n] = '\0';
    pthread_mutex_lock(&s->mu);
    memcpy(s->last, buf, n + 1);
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->requests, 1);
    return 1;
}

static void raw_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        data += w;
        len -= (size_t)w;
    }
}

static void raw_send_str(int fd, const char *s)
{
    raw_send(fd, s, strlen(s));
}

/* Waits until the client closes the connection. */
static void raw_drain(struct raw *s, int fd)
{
    char b[4096];
    while (recv(fd, b, sizeof b, 0) > 0)
        ;
    atomic_store(&s->peer_closed, true);
}

/* Keep-alive: every request gets s->reply. */
static void script_reply(struct raw *s, int fd, int conn)
{
    (void)conn;
    while (raw_read_request(s, fd))
        raw_send_str(fd, s->reply);
}

/* s->reply once, then the connection is closed. */
static void script_reply_close(struct raw *s, int fd, int conn)
{
    (void)conn;
    if (raw_read_request(s, fd))
        raw_send_str(fd, s->reply);
}

/* The first connection answers once, then closes when the next request
 * arrives without answering it: a keep-alive connection the server dropped
 * just as the client reused it. Later connections answer normally. */
static void script_stale(struct raw *s, int fd, int conn)
{
    if (conn > 1) {
        script_reply(s, fd, conn);
        return;
    }
    if (raw_read_request(s, fd))
        raw_send_str(fd, s->reply);
    raw_read_request(s, fd);
}

/* The first connection answers once and is then held open but never read
 * again, so the server can go on to the next one; later connections answer
 * normally. */
static void script_hold_first(struct raw *s, int fd, int conn)
{
    if (conn > 1) {
        script_reply(s, fd, conn);
        return;
    }
    if (raw_read_request(s, fd))
        raw_send_str(fd, s->reply);
    s->held = dup(fd);
}

/* Answers once, then cuts the second response short after a few bytes. */
static void script_partial_second(struct raw *s, int fd, int conn)
{
    (void)conn;
    if (raw_read_request(s, fd))
        raw_send_str(fd, s->reply);
    if (raw_read_request(s, fd))
        raw_send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
}

/* Reads the request and says nothing until the client gives up. */
static void script_silent(struct raw *s, int fd, int conn)
{
    (void)conn;
    if (raw_read_request(s, fd))
        raw_drain(s, fd);
}

/* Reads the request and closes without a byte. */
static void script_empty(struct raw *s, int fd, int conn)
{
    (void)conn;
    raw_read_request(s, fd);
}

/* A chunked body whose bytes arrive in odd-sized pieces. */
static const char chunked_reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n"
                                    "7\r\ndata: a\r\n"
                                    "1b\r\n\n\ndata: {\"x\":\"hello world\"}\r\n"
                                    "0002\r\n\n\n\r\n"
                                    "0\r\n\r\n";
static const char chunked_body[] = "data: a\n\ndata: {\"x\":\"hello world\"}\n\n";

static void script_chunked_split(struct raw *s, int fd, int conn)
{
    (void)conn;
    static const size_t pieces[] = {1, 3, 7, 2, 11, 5, 1, 13, 2, 4};
    while (raw_read_request(s, fd)) {
        size_t off = 0, len = sizeof chunked_reply - 1;
        for (size_t i = 0; off < len; i++) {
            size_t n = pieces[i % (sizeof pieces / sizeof pieces[0])];
            if (n > len - off)
                n = len - off;
            raw_send(fd, chunked_reply + off, n);
            off += n;
            usleep(1000); /* pacing, so the client reads the pieces apart */
        }
    }
}

#define BIG_CHUNKS 200
#define BIG_CHUNK 1000

/* A large chunked 200 sent as fast as the socket takes it. */
static void script_big_stream(struct raw *s, int fd, int conn)
{
    (void)conn;
    if (!raw_read_request(s, fd))
        return;
    raw_send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n");
    char chunk[BIG_CHUNK + 16];
    int h = snprintf(chunk, sizeof chunk, "%x\r\n", BIG_CHUNK);
    memset(chunk + h, 'x', BIG_CHUNK);
    memcpy(chunk + h + BIG_CHUNK, "\r\n", 2);
    for (int i = 0; i < BIG_CHUNKS; i++)
        raw_send(fd, chunk, (size_t)h + BIG_CHUNK + 2);
    raw_send_str(fd, "0\r\n\r\n");
    raw_read_request(s, fd);
}

/* One chunk, then silence until the client closes. */
static void script_one_chunk(struct raw *s, int fd, int conn)
{
    (void)conn;
    if (!raw_read_request(s, fd))
        return;
    raw_send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    raw_drain(s, fd);
}

/* Records the first bytes the client sends (a TLS hello, for instance). */
static void script_first_bytes(struct raw *s, int fd, int conn)
{
    (void)conn;
    char b[64];
    ssize_t n = recv(fd, b, sizeof b - 1, 0);
    pthread_mutex_lock(&s->mu);
    if (n > 0)
        memcpy(s->last, b, (size_t)n);
    s->last[n > 0 ? n : 0] = '\0';
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->requests, 1);
}

/* ---- the client side -------------------------------------------------- */

static const char ok_reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Content-Length: 11\r\n\r\n{\"ok\":true}";

struct call {
    struct loop *loop;
    struct http_req *r;
    bool done, ok, timed_out;
    long status;
    int datas;
    bool pause_first, free_in_data, free_in_done;
    char error[128], detail[256], ctype[128];
    char body[256 * 1024];
    size_t body_len;
};

static void append(struct call *c, const char *data, size_t len)
{
    if (len > sizeof c->body - 1 - c->body_len)
        len = sizeof c->body - 1 - c->body_len;
    memcpy(c->body + c->body_len, data, len);
    c->body_len += len;
    c->body[c->body_len] = '\0';
}

static int on_call_data(struct http_req *r, const char *data, size_t len, void *ud)
{
    struct call *c = ud;
    c->datas++;
    append(c, data, len);
    if (c->free_in_data) {
        http_req_free(r);
        c->r = NULL;
        return 0;
    }
    if (c->pause_first && c->datas == 1)
        http_req_pause(r);
    return 0;
}

static void on_call_done(struct http_req *r, void *ud)
{
    struct call *c = ud;
    c->done = true;
    c->ok = http_req_ok(r);
    c->status = http_req_status(r);
    c->timed_out = http_req_timed_out(r);
    snprintf(c->error, sizeof c->error, "%s", http_req_error(r) ? http_req_error(r) : "");
    snprintf(c->detail, sizeof c->detail, "%s",
             http_req_error_detail(r) ? http_req_error_detail(r) : "");
    const char *ct = http_req_content_type(r);
    snprintf(c->ctype, sizeof c->ctype, "%s", ct ? ct : "");
    if (!c->datas) {
        size_t len = 0;
        const char *b = http_req_body(r, &len);
        append(c, b, len);
    }
    if (c->free_in_done) {
        http_req_free(r);
        c->r = NULL;
    }
}

static void run_until(struct loop *l, const bool *flag, int timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;
    while (!*flag && clock_mono_ms() < end)
        assert_int_equal(loop_run_once(l, 20), 0);
    assert_true(*flag);
}

static void run_for(struct loop *l, int ms)
{
    int64_t end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end)
        loop_run_once(l, 10);
}

static void call_start(struct call *c, struct loop *l, struct http_req_opts o)
{
    memset(c, 0, offsetof(struct call, body));
    c->body[0] = '\0';
    c->body_len = 0;
    c->loop = l;
    if (!o.method)
        o.method = "GET";
    if (!o.max_body)
        o.max_body = 1024 * 1024;
    o.on_done = on_call_done;
    o.ud = c;
    assert_int_equal(http_req_start(l, &o, &c->r), 0);
}

/* Starts c, runs until it ends, frees the request. */
static void call_run(struct call *c, struct loop *l, const struct http_req_opts *o)
{
    call_start(c, l, *o);
    run_until(l, &c->done, 5000);
    http_req_free(c->r);
    c->r = NULL;
}

static void url_of(char *out, size_t cap, const struct raw *s, const char *path)
{
    snprintf(out, cap, "http://127.0.0.1:%d%s", s->port, path);
}

static struct call *new_call(void)
{
    struct call *c = malloc(sizeof *c);
    assert_non_null(c);
    return c;
}

/* One raw server, one loop and one call, as most tests want them. */
struct fx {
    struct raw *s;
    struct loop *l;
    struct call *c;
    char url[128];
};

static void fx_open(struct fx *f, int family, raw_script_fn script, const char *reply,
                    const char *path)
{
    f->s = raw_start(family, script, reply);
    f->l = loop_new();
    f->c = new_call();
    url_of(f->url, sizeof f->url, f->s, path);
}

/* Frees the loop first: the server's scripts wait for the client to close. */
static void fx_close(struct fx *f)
{
    free(f->c);
    loop_free(f->l);
    if (f->s)
        raw_stop(f->s);
    memset(f, 0, sizeof *f);
}

/* ---- tests ------------------------------------------------------------ */

static int setup(void **state)
{
    *state = tmpdir_create("mcplocal-httpc");
    return 0;
}

static int teardown(void **state)
{
    tmpdir_remove(*state);
    return 0;
}

static void test_content_length(void **state)
{
    (void)state;
    struct fx f = {0};
    char req[8192], host[64];
    fx_open(&f, AF_INET, script_reply, ok_reply, "/v1/chat?x=1");
    const char *headers[] = {"Content-Type: application/json", "X-Test: 1", NULL};
    call_run(f.c, f.l,
             &(struct http_req_opts){.method = "POST",
                                     .url = f.url,
                                     .headers = headers,
                                     .body = "{\"a\":1}",
                                     .body_len = 7});
    assert_true(f.c->ok);
    assert_int_equal(f.c->status, 200);
    assert_string_equal(f.c->body, "{\"ok\":true}");
    assert_string_equal(f.c->ctype, "application/json");
    assert_string_equal(f.c->error, "");
    raw_last(f.s, req, sizeof req);
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", f.s->port);
    assert_true(strncmp(req, "POST /v1/chat?x=1 HTTP/1.1\r\n", 28) == 0);
    assert_non_null(strstr(req, host));
    assert_non_null(strstr(req, "\r\nUser-Agent: mcplocal\r\n"));
    assert_non_null(strstr(req, "\r\nX-Test: 1\r\n"));
    assert_non_null(strstr(req, "\r\nContent-Length: 7\r\n"));
    assert_null(strcasestr(req, "Expect:"));
    assert_string_equal(strstr(req, "\r\n\r\n") + 4, "{\"a\":1}");

    /* A GET carries no Content-Length; a body-less POST says 0. */
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    raw_last(f.s, req, sizeof req);
    assert_null(strstr(req, "Content-Length"));
    call_run(f.c, f.l, &(struct http_req_opts){.method = "POST", .url = f.url});
    raw_last(f.s, req, sizeof req);
    assert_non_null(strstr(req, "\r\nContent-Length: 0\r\n"));
    assert_true(f.c->ok);
    fx_close(&f);
}

static void test_chunked_split(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_chunked_split, NULL, "/stream");
    /* Collected. */
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    assert_string_equal(f.c->body, chunked_body);
    assert_string_equal(f.c->ctype, "text/event-stream");
    /* Streamed, on the same connection. */
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url, .on_data = on_call_data});
    assert_true(f.c->ok);
    assert_true(f.c->datas > 1);
    assert_string_equal(f.c->body, chunked_body);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    fx_close(&f);
}

static void test_close_delimited(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_reply_close,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world", "/");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    assert_string_equal(f.c->body, "hello world");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    assert_int_equal(atomic_load(&f.s->conns), 2);
    fx_close(&f);
}

static void test_keepalive_reuse(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_reply, ok_reply, "/v1/x");
    for (int i = 0; i < 5; i++) {
        call_run(
            f.c, f.l,
            &(struct http_req_opts){.method = "POST", .url = f.url, .body = "x", .body_len = 1});
        assert_true(f.c->ok);
        assert_string_equal(f.c->body, "{\"ok\":true}");
    }
    assert_int_equal(atomic_load(&f.s->requests), 5);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    /* localhost is 127.0.0.1 and shares the pool. */
    snprintf(f.url, sizeof f.url, "http://localhost:%d/v1/x", f.s->port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    fx_close(&f);
}

/* A long-lived stream never takes a pooled connection. */
static void test_keepalive_stream_gets_its_own_connection(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_hold_first, ok_reply, "/v1/x");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    /* Reusing the idle connection would get no answer. */
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url, .keepalive = true});
    assert_true(f.c->ok);
    assert_int_equal(atomic_load(&f.s->conns), 2);
    fx_close(&f);
}

static void test_no_reuse_after_close_or_http10(void **state)
{
    (void)state;
    struct fx f = {0};
    static const char *const replies[] = {
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    };
    for (size_t i = 0; i < 2; i++) {
        fx_open(&f, AF_INET, script_reply, replies[i], "/");
        call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
        assert_true(f.c->ok);
        call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
        assert_true(f.c->ok);
        assert_string_equal(f.c->body, "ok");
        assert_int_equal(atomic_load(&f.s->conns), 2);
        fx_close(&f);
    }
}

static void test_stale_connection_retried_once(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_stale, ok_reply, "/v1/x");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    call_run(
        f.c, f.l,
        &(struct http_req_opts){.method = "POST", .url = f.url, .body = "again", .body_len = 5});
    assert_true(f.c->ok);
    assert_string_equal(f.c->body, "{\"ok\":true}");
    assert_int_equal(atomic_load(&f.s->conns), 2);
    assert_int_equal(atomic_load(&f.s->requests), 3); /* the resent one twice */
    char req[8192];
    raw_last(f.s, req, sizeof req);
    assert_string_equal(strstr(req, "\r\n\r\n") + 4, "again");
    fx_close(&f);
}

static void test_no_retry_after_response_bytes(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_partial_second, ok_reply, "/");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_false(f.c->ok);
    assert_int_equal(f.c->status, 200);
    assert_string_equal(f.c->error, "Transferred a partial file");
    assert_int_equal(atomic_load(&f.s->conns), 1);
    fx_close(&f);

    /* A fresh connection that closes without a byte is not retried. */
    fx_open(&f, AF_INET, script_empty, NULL, "/");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_false(f.c->ok);
    assert_int_equal(f.c->status, 0);
    assert_string_equal(f.c->error, "Server returned nothing (no headers, no data)");
    assert_int_equal(atomic_load(&f.s->conns), 1);
    fx_close(&f);
}

static void test_stream_pause_resume(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_big_stream, NULL, "/big");
    call_start(f.c, f.l, (struct http_req_opts){.url = f.url, .on_data = on_call_data});
    f.c->pause_first = true;
    while (f.c->datas == 0 && !f.c->done)
        loop_run_once(f.l, 20);
    assert_int_equal(f.c->datas, 1);
    /* Paused: nothing more is handed over, though the server sent it all. */
    run_for(f.l, 150);
    assert_int_equal(f.c->datas, 1);
    assert_false(f.c->done);
    http_req_resume(f.c->r);
    run_until(f.l, &f.c->done, 5000);
    assert_true(f.c->ok);
    assert_int_equal(f.c->body_len, BIG_CHUNKS * BIG_CHUNK);
    http_req_free(f.c->r);
    fx_close(&f);
}

static void test_max_body(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_big_stream, NULL, "/big");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url, .max_body = 5000});
    assert_false(f.c->ok);
    assert_int_equal(f.c->status, 200);
    assert_string_equal(f.c->error, "response too large");
    fx_close(&f);
}

static void test_connect_refused(void **state)
{
    (void)state;
    struct fx f = {0};
    /* A port nobody listens on: bound, then closed. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    int port = ntohs(a.sin_port);
    close(fd);
    f.l = loop_new();
    f.c = new_call();
    char where[64];
    snprintf(f.url, sizeof f.url, "http://127.0.0.1:%d/", port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_false(f.c->ok);
    assert_int_equal(f.c->status, 0);
    assert_false(f.c->timed_out);
    assert_string_equal(f.c->error, "Couldn't connect to server");
    snprintf(where, sizeof where, "127.0.0.1 port %d", port);
    assert_non_null(strstr(f.c->detail, where));
    fx_close(&f);
}

static void test_timeout(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_silent, NULL, "/");
    int64_t t0 = clock_mono_ms();
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url, .timeout_ms = 150});
    int64_t took = clock_mono_ms() - t0;
    assert_false(f.c->ok);
    assert_true(f.c->timed_out);
    assert_string_equal(f.c->error, "Timeout was reached");
    assert_true(took >= 150 && took < 3000);
    /* The timed-out connection is closed, not pooled. */
    int64_t end = clock_mono_ms() + 5000;
    while (!atomic_load(&f.s->peer_closed) && clock_mono_ms() < end)
        loop_run_once(f.l, 10);
    assert_true(atomic_load(&f.s->peer_closed));
    fx_close(&f);
}

static void test_garbage_status_line(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_reply_close, "garbage\r\n\r\n", "/");
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_false(f.c->ok);
    assert_string_equal(f.c->error, "Weird server reply");
    fx_close(&f);
}

static void test_free_inside_callbacks(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_one_chunk, NULL, "/");
    /* Freed inside on_data: no on_done, and the connection is closed. */
    call_start(f.c, f.l, (struct http_req_opts){.url = f.url, .on_data = on_call_data});
    f.c->free_in_data = true;
    int64_t end = clock_mono_ms() + 5000;
    while (!atomic_load(&f.s->peer_closed) && clock_mono_ms() < end)
        loop_run_once(f.l, 10);
    assert_true(atomic_load(&f.s->peer_closed));
    assert_int_equal(f.c->datas, 1);
    assert_string_equal(f.c->body, "hello");
    run_for(f.l, 30);
    assert_false(f.c->done);
    assert_null(f.c->r);
    fx_close(&f);

    /* Freed inside on_done, and freed from outside while running. */
    fx_open(&f, AF_INET, script_reply, ok_reply, "/");
    call_start(f.c, f.l, (struct http_req_opts){.url = f.url});
    f.c->free_in_done = true;
    run_until(f.l, &f.c->done, 5000);
    assert_true(f.c->ok);
    assert_null(f.c->r);
    call_start(f.c, f.l, (struct http_req_opts){.url = f.url});
    http_req_free(f.c->r);
    run_for(f.l, 30);
    assert_false(f.c->done);
    fx_close(&f);
}

/* ---- pipelining ------------------------------------------------------- */

enum { PIPE_ECHO, PIPE_CLOSE_AFTER_ONE, PIPE_SILENT };

/* The length of the complete request at the start of buf, or 0. */
static size_t raw_request_len(const char *buf, size_t n, const char **body, size_t *blen)
{
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end + 4 - buf), cl = 0;
    const char *h = memmem(buf, head, "\r\nContent-Length:", 17);
    if (h)
        cl = strtoul(h + 17, NULL, 10);
    if (n < head + cl)
        return 0;
    *body = buf + head;
    *blen = cl;
    return head + cl;
}

/* Reads requests as they come, several per recv() when the client sends
 * them together, and answers each with "re:" and its body (PIPE_ECHO). The
 * first connection may instead answer only the first request and close
 * once s->expect arrived (PIPE_CLOSE_AFTER_ONE), or answer nothing until
 * the client closes (PIPE_SILENT). */
static void script_pipe(struct raw *s, int fd, int conn)
{
    int mode = conn == 1 ? s->first_mode : PIPE_ECHO;
    char buf[16384];
    size_t n = 0;
    int got = 0, recvs = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - n, 0);
        if (r <= 0)
            return;
        n += (size_t)r;
        recvs++;
        const char *body;
        size_t blen, len;
        /* Counted before any answer goes out: the client may finish (and
         * the test read these) as soon as the answers arrive. */
        int in_this = 0;
        for (size_t off = 0; (len = raw_request_len(buf + off, n - off, &body, &blen)) > 0;
             off += len)
            in_this++;
        if (conn == 1 && recvs == 1)
            atomic_store(&s->first_recv_reqs, in_this);
        if (in_this)
            atomic_store(&s->last_recv_reqs, in_this);
        while ((len = raw_request_len(buf, n, &body, &blen)) > 0) {
            pthread_mutex_lock(&s->mu);
            size_t sl = strlen(s->seen);
            snprintf(s->seen + sl, sizeof s->seen - sl, "%d:%.*s ", conn, (int)blen, body);
            pthread_mutex_unlock(&s->mu);
            atomic_fetch_add(&s->requests, 1);
            got++;
            if (mode == PIPE_ECHO || (mode == PIPE_CLOSE_AFTER_ONE && got == 1)) {
                char resp[512];
                int m = snprintf(resp, sizeof resp,
                                 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\nre:%.*s", blen + 3,
                                 (int)blen, body);
                raw_send(fd, resp, (size_t)m);
            }
            memmove(buf, buf + len, n - len);
            n -= len;
        }
        if (mode == PIPE_CLOSE_AFTER_ONE && got >= s->expect)
            return;
    }
}

static void raw_seen(struct raw *s, char *out, size_t cap)
{
    pthread_mutex_lock(&s->mu);
    snprintf(out, cap, "%s", s->seen);
    pthread_mutex_unlock(&s->mu);
}

/* Starts n pipelined POSTs whose bodies are the letters from 'a'. */
static void pipe_start(struct call **c, int n, struct loop *l, const char *url,
                       int64_t head_timeout_ms)
{
    static const char letters[] = "abcdefgh";
    for (int i = 0; i < n; i++) {
        c[i] = new_call();
        call_start(c[i], l,
                   (struct http_req_opts){.method = "POST",
                                          .url = url,
                                          .body = letters + i,
                                          .body_len = 1,
                                          .pipeline = true,
                                          .timeout_ms =
                                              i == 0 && head_timeout_ms ? head_timeout_ms : 5000});
    }
}

static void pipe_run(struct call **c, int n, struct loop *l)
{
    for (int i = 0; i < n; i++)
        if (c[i])
            run_until(l, &c[i]->done, 5000);
}

static void pipe_free(struct call **c, int n)
{
    for (int i = 0; i < n; i++)
        if (c[i]) {
            http_req_free(c[i]->r);
            free(c[i]);
        }
}

static void test_pipeline_one_send_in_order(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_pipe, NULL, "/r");
    struct call *c[3];
    pipe_start(c, 3, f.l, f.url, 0);
    pipe_run(c, 3, f.l);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    assert_int_equal(atomic_load(&f.s->first_recv_reqs), 3);
    char seen[1024];
    raw_seen(f.s, seen, sizeof seen);
    assert_string_equal(seen, "1:a 1:b 1:c ");
    assert_true(c[0]->ok && c[1]->ok && c[2]->ok);
    assert_string_equal(c[0]->body, "re:a");
    assert_string_equal(c[1]->body, "re:b");
    assert_string_equal(c[2]->body, "re:c");
    pipe_free(c, 3);

    /* The warm connection carries the next burst, again in one recv(). */
    pipe_start(c, 3, f.l, f.url, 0);
    pipe_run(c, 3, f.l);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    raw_seen(f.s, seen, sizeof seen);
    assert_string_equal(seen, "1:a 1:b 1:c 1:a 1:b 1:c ");
    assert_int_equal(atomic_load(&f.s->last_recv_reqs), 3);
    assert_string_equal(c[2]->body, "re:c");
    pipe_free(c, 3);
    fx_close(&f);
}

static void test_pipeline_close_resends_unanswered(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_pipe, NULL, "/r");
    f.s->first_mode = PIPE_CLOSE_AFTER_ONE;
    f.s->expect = 3;
    struct call *c[3];
    pipe_start(c, 3, f.l, f.url, 0);
    pipe_run(c, 3, f.l);
    char seen[1024];
    raw_seen(f.s, seen, sizeof seen);
    assert_string_equal(seen, "1:a 1:b 1:c 2:b 2:c "); /* a answered: not again */
    assert_int_equal(atomic_load(&f.s->conns), 2);
    assert_true(c[0]->ok && c[1]->ok && c[2]->ok);
    assert_string_equal(c[0]->body, "re:a");
    assert_string_equal(c[1]->body, "re:b");
    assert_string_equal(c[2]->body, "re:c");
    pipe_free(c, 3);
    fx_close(&f);
}

static void test_pipeline_free_mid_flight(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_pipe, NULL, "/r");
    struct call *c[3];
    /* Freed before it was sent: it never goes out. */
    pipe_start(c, 3, f.l, f.url, 0);
    http_req_free(c[1]->r);
    free(c[1]);
    c[1] = NULL;
    pipe_run(c, 3, f.l);
    char seen[1024];
    raw_seen(f.s, seen, sizeof seen);
    assert_string_equal(seen, "1:a 1:c ");
    assert_string_equal(c[0]->body, "re:a");
    assert_string_equal(c[2]->body, "re:c");
    pipe_free(c, 3);

    /* Freed once sent: its response is read and dropped, the others still
     * get their own. */
    pipe_start(c, 3, f.l, f.url, 0);
    int64_t end = clock_mono_ms() + 5000;
    while (atomic_load(&f.s->requests) < 5 && clock_mono_ms() < end)
        loop_run_once(f.l, 10);
    assert_false(c[1]->done);
    http_req_free(c[1]->r);
    free(c[1]);
    c[1] = NULL;
    pipe_run(c, 3, f.l);
    assert_true(c[0]->ok && c[2]->ok);
    assert_string_equal(c[0]->body, "re:a");
    assert_string_equal(c[2]->body, "re:c");
    pipe_free(c, 3);

    /* The connection stays in step for the next request. */
    pipe_start(c, 1, f.l, f.url, 0);
    pipe_run(c, 1, f.l);
    assert_string_equal(c[0]->body, "re:a");
    pipe_free(c, 1);
    assert_int_equal(atomic_load(&f.s->conns), 1);
    raw_seen(f.s, seen, sizeof seen);
    assert_string_equal(seen, "1:a 1:c 1:a 1:b 1:c 1:a ");
    fx_close(&f);
}

static void test_pipeline_head_timeout(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_open(&f, AF_INET, script_pipe, NULL, "/r");
    f.s->first_mode = PIPE_SILENT;
    struct call *c[3];
    int64_t t0 = clock_mono_ms();
    pipe_start(c, 3, f.l, f.url, 150);
    pipe_run(c, 3, f.l);
    assert_true(c[0]->timed_out);
    assert_string_equal(c[0]->error, "Timeout was reached");
    assert_true(clock_mono_ms() - t0 < 3000);
    /* The ones behind it went again on a new connection. */
    assert_true(c[1]->ok && c[2]->ok);
    assert_string_equal(c[1]->body, "re:b");
    assert_string_equal(c[2]->body, "re:c");
    char seen[1024];
    raw_seen(f.s, seen, sizeof seen);
    assert_string_equal(seen, "1:a 1:b 1:c 2:b 2:c ");
    pipe_free(c, 3);
    fx_close(&f);
}

static void test_localhost_falls_back_to_v6(void **state)
{
    (void)state;
    struct fx f = {0};
    f.s = raw_start(AF_INET6, script_reply, ok_reply);
    f.l = loop_new();
    f.c = new_call();
    snprintf(f.url, sizeof f.url, "http://localhost:%d/", f.s->port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    /* Something else may own the port on 127.0.0.1; only then is this
     * not the fallback. */
    if (atomic_load(&f.s->conns) == 1) {
        assert_true(f.c->ok);
        assert_string_equal(f.c->body, "{\"ok\":true}");
    }
    snprintf(f.url, sizeof f.url, "http://[::1]:%d/", f.s->port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    fx_close(&f);
}

static void test_other_urls_go_to_libcurl(void **state)
{
    (void)state;
    struct fx f = {0};
    /* https: the server sees a TLS handshake record, not a request line. */
    f.s = raw_start(AF_INET, script_first_bytes, NULL);
    f.l = loop_new();
    f.c = new_call();
    char req[8192];
    snprintf(f.url, sizeof f.url, "https://127.0.0.1:%d/", f.s->port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url, .timeout_ms = 3000});
    assert_false(f.c->ok);
    raw_last(f.s, req, sizeof req);
    assert_int_equal((unsigned char)req[0], 0x16);
    fx_close(&f);

    /* A host name is looked up, which only libcurl does. */
    f.l = loop_new();
    f.c = new_call();
    call_run(f.c, f.l, &(struct http_req_opts){.url = "http://mcplocal-test.invalid/"});
    assert_false(f.c->ok);
    assert_string_equal(f.c->error, "Couldn't resolve host name");
    fx_close(&f);

    /* A proxy: the request goes to it with the absolute URL; a host that
     * no_proxy lists goes direct. */
    f.s = raw_start(AF_INET, script_reply, ok_reply);
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", f.s->port);
    setenv("http_proxy", proxy, 1);
    f.l = loop_new();
    f.c = new_call();
    snprintf(f.url, sizeof f.url, "http://127.0.0.2:%d/via", f.s->port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    raw_last(f.s, req, sizeof req);
    char line[128];
    snprintf(line, sizeof line, "GET http://127.0.0.2:%d/via HTTP/1.1\r\n", f.s->port);
    assert_true(strncmp(req, line, strlen(line)) == 0);
    loop_free(f.l);
    setenv("no_proxy", "example.com, 127.0.0.1", 1);
    f.l = loop_new();
    snprintf(f.url, sizeof f.url, "http://127.0.0.1:%d/direct", f.s->port);
    call_run(f.c, f.l, &(struct http_req_opts){.url = f.url});
    assert_true(f.c->ok);
    raw_last(f.s, req, sizeof req);
    assert_true(strncmp(req, "GET /direct HTTP/1.1\r\n", 22) == 0);
    unsetenv("http_proxy");
    unsetenv("no_proxy");
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_delimited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_stream_gets_its_own_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_no_reuse_after_close_or_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_connection_retried_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_retry_after_response_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_status_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_localhost_falls_back_to_v6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_urls_go_to_libcurl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_one_send_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_close_resends_unanswered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_free_mid_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_head_timeout, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
