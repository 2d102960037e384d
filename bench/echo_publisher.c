/*
 * echo_publisher.c - the smallest publisher that can serve inference: it
 * registers one virtual Llm, opens its control stream, and answers every
 * `infer` task at once with a fixed chat completion, posted over a few
 * keep-alive connections. No backend, no JSON library, one epoll loop.
 *
 * The benchmark runs it next to mcplocal to split the relay's cost: relay
 * figures through this publisher are mcpd's own share.
 *
 * It heartbeats at the interval mcpd announces in `hello`, like mcplocal, so
 * its Llm stays active however long the benchmark runs. Prints "ready" once
 * the stream is up; runs until SIGTERM/SIGINT or --hold seconds, then prints
 * one JSON summary line.
 */
#include <arpa/inet.h>
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

#define POSTERS 16
#define SESSION_HEADER "x-mcpctl-provider-session"
#define IDQ_CAP 65536 /* task ids waiting for a free poster */
#define ID_MAX 64
#define SBUF_CAP (4u << 20)

static const char result_body[] =
    "{\"status\":200,\"body\":{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\","
    "\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,\"message\":{"
    "\"role\":\"assistant\",\"content\":\"Hello from the benchmark backend.\"},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":6,"
    "\"total_tokens\":15}}}";

struct poster {
    int fd;
    bool busy;
    char rbuf[4096];
    size_t rlen;
    char wbuf[1024];
    size_t wlen, woff;
};

static volatile sig_atomic_t stop_flag;
static int epfd;
static struct sockaddr_in target;
static char host_header[64];
static const char *token;
static char sid[ID_MAX + 8];
static struct poster posters[POSTERS];
static char idq[IDQ_CAP][ID_MAX + 1];
static long idq_head, idq_len;
static long tasks_seen, results_ok, results_failed, overflow;
static long hb_interval_ms = 30000; /* replaced by the one in hello */
static long hb_sent;
static bool hb_rearm; /* hello arrived: count the interval from now */

/* control stream: raw bytes, then de-chunked body, then SSE lines */
static int sfd = -1;
static char *sraw;
static size_t sraw_len;
static bool headers_done;
static char *body;
static size_t body_len;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int connect_blocking(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Registers the session (blocking, once at start); fills sid. */
static int do_register(const char *name)
{
    int fd = connect_blocking();
    if (fd < 0)
        return -1;
    char b[256], req[1024];
    int bl = snprintf(b, sizeof b,
                      "{\"providers\":[{\"name\":\"%s\",\"type\":\"openai\",\"model\":\"bench\"}]}",
                      name);
    int n = snprintf(req, sizeof req,
                     "POST /api/v1/llms/_provider-register HTTP/1.1\r\nHost: %s\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     host_header, token, bl, b);
    char resp[8192];
    size_t len = 0;
    if (write_all(fd, req, (size_t)n) < 0) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, resp + len, sizeof resp - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    resp[len] = '\0';
    static const char key[] = "\"providerSessionId\":\"";
    const char *s = strstr(resp, key);
    const char *e = s ? strchr(s + sizeof key - 1, '"') : NULL;
    if (strncmp(resp, "HTTP/1.1 200", 12) != 0 || !e ||
        (size_t)(e - s) - (sizeof key - 1) > ID_MAX) {
        fprintf(stderr, "echo_publisher: register failed: %.300s\n", resp);
        return -1;
    }
    size_t l = (size_t)(e - s) - (sizeof key - 1);
    memcpy(sid, s + sizeof key - 1, l);
    sid[l] = '\0';
    return 0;
}

static void watch(int fd, uint64_t tag, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    epoll_ctl(epfd, op, fd, &ev);
}

static void poster_close(struct poster *p)
{
    if (p->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
    }
    p->fd = -1;
    p->busy = false;
}

static void poster_send(int i, const char *task_id)
{
    struct poster *p = &posters[i];
    if (p->fd < 0) {
        p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (p->fd < 0 || (connect(p->fd, (struct sockaddr *)&target, sizeof target) < 0 &&
                          errno != EINPROGRESS)) {
            results_failed++;
            poster_close(p);
            return;
        }
        watch(p->fd, (uint64_t)i, EPOLLOUT, EPOLL_CTL_ADD);
    } else {
        watch(p->fd, (uint64_t)i, EPOLLOUT, EPOLL_CTL_MOD);
    }
    if (task_id[0] == '\0') { /* an empty id stands for a heartbeat */
        p->wlen = (size_t)snprintf(p->wbuf, sizeof p->wbuf,
                                   "POST /api/v1/llms/_provider-heartbeat HTTP/1.1\r\n"
                                   "Host: %s\r\nAuthorization: Bearer %s\r\n" SESSION_HEADER
                                   ": %s\r\nContent-Type: application/json\r\n"
                                   "Content-Length: 2\r\n\r\n{}",
                                   host_header, token, sid);
        hb_sent++;
    } else {
        p->wlen =
            (size_t)snprintf(p->wbuf, sizeof p->wbuf,
                             "POST /api/v1/llms/_provider-task/%s/result HTTP/1.1\r\n"
                             "Host: %s\r\nAuthorization: Bearer %s\r\n" SESSION_HEADER
                             ": %s\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             task_id, host_header, token, sid, sizeof result_body - 1, result_body);
    }
    p->woff = 0;
    p->rlen = 0;
    p->busy = true;
}

static void pump_queue(void)
{
    for (int i = 0; i < POSTERS && idq_len > 0; i++) {
        if (posters[i].busy)
            continue;
        poster_send(i, idq[idq_head]);
        idq_head = (idq_head + 1) % IDQ_CAP;
        idq_len--;
    }
}

static void poster_event(int i, uint32_t events)
{
    struct poster *p = &posters[i];
    if (p->fd < 0)
        return;
    if (events & EPOLLOUT) {
        while (p->woff < p->wlen) {
            ssize_t n = write(p->fd, p->wbuf + p->woff, p->wlen - p->woff);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (n < 0) {
                results_failed++;
                poster_close(p);
                return;
            }
            p->woff += (size_t)n;
        }
        watch(p->fd, (uint64_t)i, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    ssize_t n = read(p->fd, p->rbuf + p->rlen, sizeof p->rbuf - 1 - p->rlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (p->busy)
            results_failed++;
        poster_close(p);
        return;
    }
    p->rlen += (size_t)n;
    p->rbuf[p->rlen] = '\0';
    char *end = strstr(p->rbuf, "\r\n\r\n");
    if (!end)
        return;
    const char *cl = strcasestr(p->rbuf, "\r\nContent-Length:");
    size_t need = (size_t)(end - p->rbuf) + 4 + (cl ? strtoul(cl + 17, NULL, 10) : 0);
    if (p->rlen < need)
        return;
    if (strncmp(p->rbuf, "HTTP/1.1 200", 12) == 0)
        results_ok++;
    else
        results_failed++;
    p->busy = false;
    p->rlen = 0;
}

/* One complete SSE line of the control stream. */
static void on_line(const char *line, size_t len)
{
    static const char data[] = "data: ";
    if (len < sizeof data - 1 || memcmp(line, data, sizeof data - 1) != 0)
        return;
    static const char hb[] = "\"heartbeatIntervalMs\":";
    const char *h = memmem(line, len, hb, sizeof hb - 1);
    if (h && !memmem(line, len, "\"taskId\"", 8)) { /* the hello frame */
        long v = strtol(h + sizeof hb - 1, NULL, 10);
        if (v > 0)
            hb_interval_ms = v;
        hb_rearm = true;
        return;
    }
    static const char kind[] = "\"kind\":\"infer\"";
    static const char key[] = "\"taskId\":\"";
    if (!memmem(line, len, kind, sizeof kind - 1))
        return;
    const char *s = memmem(line, len, key, sizeof key - 1);
    if (!s)
        return;
    s += sizeof key - 1;
    const char *e = memchr(s, '"', len - (size_t)(s - line));
    if (!e || e - s > ID_MAX)
        return;
    tasks_seen++;
    if (idq_len == IDQ_CAP) {
        overflow++;
        return;
    }
    char *slot = idq[(idq_head + idq_len++) % IDQ_CAP];
    memcpy(slot, s, (size_t)(e - s));
    slot[e - s] = '\0';
}

/* Consumes complete lines from the de-chunked body. */
static void parse_body(void)
{
    size_t off = 0;
    for (;;) {
        char *nl = memchr(body + off, '\n', body_len - off);
        if (!nl)
            break;
        on_line(body + off, (size_t)(nl - (body + off)));
        off = (size_t)(nl - body) + 1;
    }
    memmove(body, body + off, body_len - off);
    body_len -= off;
}

/* Moves complete chunks from sraw into body (HTTP/1.1 chunked encoding). */
static int dechunk(void)
{
    size_t off = 0;
    for (;;) {
        char *crlf = memmem(sraw + off, sraw_len - off, "\r\n", 2);
        if (!crlf)
            break;
        size_t size = strtoul(sraw + off, NULL, 16);
        size_t start = (size_t)(crlf - sraw) + 2;
        if (size == 0)
            return -1; /* the stream ended */
        if (sraw_len - start < size + 2)
            break;
        if (body_len + size > SBUF_CAP)
            return -1;
        memcpy(body + body_len, sraw + start, size);
        body_len += size;
        off = start + size + 2;
    }
    memmove(sraw, sraw + off, sraw_len - off);
    sraw_len -= off;
    return 0;
}

static int stream_readable(void)
{
    for (;;) {
        ssize_t n = read(sfd, sraw + sraw_len, SBUF_CAP - sraw_len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0)
            return -1;
        sraw_len += (size_t)n;
        if (!headers_done) {
            char *end = memmem(sraw, sraw_len, "\r\n\r\n", 4);
            if (!end)
                continue;
            if (strncmp(sraw, "HTTP/1.1 200", 12) != 0)
                return -1;
            size_t hl = (size_t)(end - sraw) + 4;
            memmove(sraw, sraw + hl, sraw_len - hl);
            sraw_len -= hl;
            headers_done = true;
        }
        if (dechunk() < 0)
            return -1;
        parse_body();
        if (sraw_len == SBUF_CAP)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int port = 0;
    long hold = 900;
    const char *name = "bench-echo";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--token") == 0)
            token = argv[i + 1];
        else if (strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--hold") == 0)
            hold = strtol(argv[i + 1], NULL, 10);
    }
    if (port <= 0 || !token || argc % 2 == 0) {
        fputs("usage: echo_publisher --port PORT --token TOKEN [--name LLM] [--hold SECONDS]\n",
              stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    snprintf(host_header, sizeof host_header, "127.0.0.1:%d", port);
    sraw = malloc(SBUF_CAP);
    body = malloc(SBUF_CAP);
    if (!sraw || !body || do_register(name) < 0)
        return 1;

    sfd = connect_blocking();
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET /api/v1/llms/_provider-stream HTTP/1.1\r\nHost: %s\r\n"
                     "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n" SESSION_HEADER
                     ": %s\r\n\r\n",
                     host_header, token, sid);
    if (sfd < 0 || write_all(sfd, req, (size_t)n) < 0) {
        fprintf(stderr, "echo_publisher: cannot open the control stream\n");
        return 1;
    }
    if (fcntl(sfd, F_SETFL, fcntl(sfd, F_GETFL) | O_NONBLOCK) < 0)
        return 1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < POSTERS; i++)
        posters[i].fd = -1;
    watch(sfd, UINT64_MAX, EPOLLIN, EPOLL_CTL_ADD);
    printf("ready %s\n", sid);
    fflush(stdout);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t next_hb = (int64_t)t0.tv_sec * 1000 + t0.tv_nsec / 1000000 + hb_interval_ms;
    struct epoll_event evs[64];
    int rc = 0;
    while (!stop_flag) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > hold)
            break;
        int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        if (hb_rearm) {
            hb_rearm = false;
            next_hb = now_ms + hb_interval_ms;
        }
        if (now_ms >= next_hb && idq_len < IDQ_CAP) {
            idq[(idq_head + idq_len++) % IDQ_CAP][0] = '\0';
            next_hb = now_ms + hb_interval_ms;
            pump_queue();
        }
        int k = epoll_wait(epfd, evs, 64, 1000);
        for (int i = 0; i < k; i++) {
            if (evs[i].data.u64 == UINT64_MAX) {
                if (stream_readable() < 0) {
                    fprintf(stderr, "echo_publisher: the control stream ended\n");
                    stop_flag = 1;
                    rc = 1;
                }
            } else {
                poster_event((int)evs[i].data.u64, evs[i].events);
            }
        }
        pump_queue();
    }
    printf("{\"tasks\":%ld,\"heartbeats\":%ld,\"posts_ok\":%ld,\"posts_failed\":%ld,"
           "\"queue_overflow\":%ld}\n",
           tasks_seen, hb_sent, results_ok, results_failed, overflow);
    return rc;
}
