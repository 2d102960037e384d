/*
 * stream_backend.c - a small, fast OpenAI-compatible backend for the
 * benchmark: one thread, one epoll loop, HTTP/1.1 keep-alive.
 *
 *   GET  /v1/models             a one-model list (mcplocal's availability probe)
 *   POST /v1/chat/completions   "stream": true  -> max_tokens SSE chunks
 *                                                  (chat.completion.chunk), each
 *                                                  its own write, then [DONE]
 *                               otherwise        -> a fixed chat.completion
 *
 * Chunks go out back to back, or --interval-us apart to imitate a model
 * generating tokens: the first at once, then one every interval, each its own
 * HTTP chunk written on its own. A request can set its own pace with
 * "bench_interval_us" in its body (0: back to back); the paths the benchmark
 * compares forward the body unchanged, so one backend serves every kind of
 * stream. Paced streams keep their schedule whatever the reader does: a
 * chunk the socket cannot take is buffered and the next still falls due on
 * time, so a slow path shows as lag, not as a slower backend.
 *
 * The backend listens on 127.0.0.1, port 0 unless --port is given, and prints
 * "listening on http://127.0.0.1:PORT" once it accepts. SIGTERM or SIGINT
 * stop it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP (1u << 20) /* a request larger than this is refused */
#define MAX_TOKENS 100000 /* longest stream one request may ask for */
#define DEFAULT_TOKENS 16 /* chunks when the request names no max_tokens */
#define MAX_CONNS 4096
#define MAX_INTERVAL_US 10000000

struct conn {
    int fd;
    char *in;
    size_t in_len;
    char *out;
    size_t out_len, out_off, out_cap;
    bool want_out; /* EPOLLOUT armed */
    bool close_after;
    /* an SSE response in progress */
    bool streaming;
    int tokens_left, tokens_sent;
    int64_t interval_us; /* this stream's pace, 0 for back to back */
    int64_t next_at;     /* monotonic µs of the next chunk when paced */
    struct conn *next_active, *prev_active;
};

static volatile sig_atomic_t stop_flag;
static int epfd;
static int64_t interval_us; /* the pace of requests that name none */
static struct conn *active; /* conns with a paced stream in progress */
static int nconns;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int out_reserve(struct conn *c, size_t more)
{
    if (c->out_len + more <= c->out_cap)
        return 0;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + more <= c->out_cap)
            return 0;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + more)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
        return -1;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

static int out_append(struct conn *c, const char *s, size_t n)
{
    if (out_reserve(c, n) < 0)
        return -1;
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

static void set_events(struct conn *c, bool want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

/* Writes what it can; returns -1 when the connection is broken. */
static int flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, true);
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    set_events(c, false);
    return 0;
}

static void active_add(struct conn *c)
{
    c->prev_active = NULL;
    c->next_active = active;
    if (active)
        active->prev_active = c;
    active = c;
}

static void active_remove(struct conn *c)
{
    if (c->prev_active)
        c->prev_active->next_active = c->next_active;
    else if (active == c)
        active = c->next_active;
    if (c->next_active)
        c->next_active->prev_active = c->prev_active;
    c->next_active = c->prev_active = NULL;
}

static void conn_close(struct conn *c)
{
    if (c->streaming && c->interval_us > 0)
        active_remove(c);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
    nconns--;
}

/* Appends one piece of a chunked response body. */
static int append_piece(struct conn *c, const char *data, size_t len)
{
    char head[24];
    int h = snprintf(head, sizeof head, "%zx\r\n", len);
    if (out_append(c, head, (size_t)h) < 0 || out_append(c, data, len) < 0 ||
        out_append(c, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* Emits the next chunk of c's stream (and the end when it was the last). */
static int emit_chunk(struct conn *c)
{
    char ev[512];
    int n;
    if (c->tokens_left > 0) {
        n = snprintf(ev, sizeof ev,
                     "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
                     "\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,"
                     "\"delta\":{%s\"content\":\"tok%d \"},\"finish_reason\":%s}]}\n\n",
                     c->tokens_sent == 0 ? "\"role\":\"assistant\"," : "", c->tokens_sent,
                     c->tokens_left == 1 ? "\"stop\"" : "null");
        if (append_piece(c, ev, (size_t)n) < 0)
            return -1;
        c->tokens_left--;
        c->tokens_sent++;
    }
    if (c->tokens_left == 0) {
        static const char done[] = "data: [DONE]\n\n";
        if (append_piece(c, done, sizeof done - 1) < 0 || out_append(c, "0\r\n\r\n", 5) < 0)
            return -1;
        if (c->interval_us > 0)
            active_remove(c);
        c->streaming = false;
    }
    return flush_out(c);
}

static int reply(struct conn *c, int status, const char *ctype, const char *body)
{
    char head[256];
    size_t len = strlen(body);
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     status == 200 ? "OK" : "Error", ctype, len,
                     c->close_after ? "Connection: close\r\n" : "");
    if (out_append(c, head, (size_t)h) < 0 || out_append(c, body, len) < 0)
        return -1;
    return 0;
}

static const char completion[] =
    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"model\":\"bench\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"Hello from the benchmark backend.\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":6,\"total_tokens\":15}}";

static const char models[] =
    "{\"object\":\"list\",\"data\":[{\"id\":\"bench\",\"object\":\"model\","
    "\"owned_by\":\"bench\"}]}";

/* Finds `"key"` in a JSON body and returns what follows the colon, or NULL.
 * Good enough for the fixed request bodies the benchmark sends. */
static const char *json_value(const char *body, size_t len, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 <= len; i++) {
        if (body[i] != '"' || memcmp(body + i + 1, key, klen) != 0 || body[i + 1 + klen] != '"')
            continue;
        size_t j = i + klen + 2;
        while (j < len && (body[j] == ' ' || body[j] == '\t' || body[j] == ':'))
            j++;
        return j < len ? body + j : NULL;
    }
    return NULL;
}

/* Handles one complete request; returns -1 to close the connection. */
static int handle(struct conn *c, const char *method, const char *path, const char *body,
                  size_t blen)
{
    if (strcmp(method, "GET") == 0 && strcmp(path, "/v1/models") == 0)
        return reply(c, 200, "application/json", models) < 0 ? -1 : flush_out(c);
    if (strcmp(method, "POST") != 0 || strcmp(path, "/v1/chat/completions") != 0)
        return reply(c, 404, "application/json", "{\"error\":\"no such route\"}") < 0
                   ? -1
                   : flush_out(c);
    const char *s = json_value(body, blen, "stream");
    bool stream = s && (size_t)(body + blen - s) >= 4 && memcmp(s, "true", 4) == 0;
    if (!stream)
        return reply(c, 200, "application/json", completion) < 0 ? -1 : flush_out(c);

    long tokens = DEFAULT_TOKENS;
    const char *mt = json_value(body, blen, "max_tokens");
    if (mt) {
        tokens = strtol(mt, NULL, 10);
        if (tokens < 1)
            tokens = 1;
        if (tokens > MAX_TOKENS)
            tokens = MAX_TOKENS;
    }
    int64_t pace = interval_us;
    const char *iv = json_value(body, blen, "bench_interval_us");
    if (iv) {
        pace = strtoll(iv, NULL, 10);
        if (pace < 0)
            pace = 0;
        if (pace > MAX_INTERVAL_US)
            pace = MAX_INTERVAL_US;
    }
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    if (out_append(c, head, sizeof head - 1) < 0)
        return -1;
    c->streaming = true;
    c->tokens_left = (int)tokens;
    c->tokens_sent = 0;
    c->interval_us = pace;
    if (pace > 0) {
        /* First token at once, the others paced by the timer loop. */
        active_add(c);
        c->next_at = now_us() + pace;
        return emit_chunk(c);
    }
    while (c->streaming) {
        if (emit_chunk(c) < 0)
            return -1;
    }
    return 0;
}

/* Parses and handles every complete request in c->in. */
static int process_input(struct conn *c)
{
    while (!c->streaming && c->in_len > 0) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end)
            return c->in_len >= IN_CAP ? -1 : 0;
        size_t head_len = (size_t)(end - c->in) + 4;
        char method[8], path[256];
        if (sscanf(c->in, "%7s %255s", method, path) != 2)
            return -1;
        size_t clen = 0;
        c->close_after = false;
        for (char *line = memchr(c->in, '\n', head_len); line && line < end;
             line = memchr(line + 1, '\n', (size_t)(end - line))) {
            const char *h = line + 1;
            if (strncasecmp(h, "Content-Length:", 15) == 0)
                clen = strtoul(h + 15, NULL, 10);
            else if (strncasecmp(h, "Connection:", 11) == 0) {
                const char *eol = memchr(h, '\n', (size_t)(end + 2 - h));
                c->close_after = eol && memmem(h, (size_t)(eol - h), "close", 5) != NULL;
            } else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0)
                return -1; /* chunked uploads are not needed here */
        }
        if (clen > IN_CAP - head_len)
            return -1;
        if (c->in_len < head_len + clen)
            return 0;
        if (handle(c, method, path, c->in + head_len, clen) < 0)
            return -1;
        size_t used = head_len + clen;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (c->close_after && !c->streaming && c->out_len == 0)
            return -1;
    }
    return 0;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        if (c->in_len == IN_CAP) {
            conn_close(c);
            return;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->in_len += (size_t)n;
    }
    if (process_input(c) < 0)
        conn_close(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (nconns >= MAX_CONNS) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c)
            c->in = malloc(IN_CAP);
        if (!c || !c->in) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c->in);
            free(c);
            continue;
        }
        nconns++;
    }
}

/* Sends every paced chunk that is due; returns the ms until the next one. */
static int run_timers(void)
{
    int64_t now = now_us(), next = -1;
    struct conn *c = active;
    while (c) {
        struct conn *nx = c->next_active;
        if (c->next_at <= now) {
            c->next_at += c->interval_us;
            /* A finished stream lets pipelined requests behind it run. */
            if (emit_chunk(c) < 0 || (!c->streaming && process_input(c) < 0)) {
                conn_close(c);
                c = nx;
                continue;
            }
        }
        if (c->streaming && (next < 0 || c->next_at < next))
            next = c->next_at;
        c = nx;
    }
    if (next < 0)
        return 1000;
    int64_t ms = (next - now + 999) / 1000;
    return ms < 0 ? 0 : (int)ms;
}

static void usage(void)
{
    fputs("usage: stream_backend [--port N] [--interval-us N]\n", stderr);
}

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--interval-us") == 0 && i + 1 < argc) {
            interval_us = strtoll(argv[++i], NULL, 10);
        } else {
            usage();
            return 2;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, "stream_backend: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        return 1;
    }
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("listening on http://127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);

    struct epoll_event evs[256];
    while (!stop_flag) {
        int timeout = run_timers();
        int n = epoll_wait(epfd, evs, 256, timeout);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                accept_all(lfd);
                continue;
            }
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                conn_close(c);
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c) < 0) {
                    conn_close(c);
                    continue;
                }
            }
            if (evs[i].events & EPOLLIN)
                on_readable(c);
        }
    }
    close(lfd);
    return 0;
}
