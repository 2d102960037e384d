/*
 * idle_publishers.c - holds N idle publishers on one mcpd, from one process
 * and one epoll loop, so the benchmark can measure what they cost.
 *
 * Each publisher registers a provider session (POST _provider-register, one
 * virtual Llm "<prefix>-<i>", with --pools N in pool "pool-<i % N>")
 * and then opens its control stream (GET
 * _provider-stream) on a connection of its own, as mcplocal does
 * (--stream-connection reuse opens it on the register connection instead,
 * as a client with one keep-alive connection would); it counts as attached
 * once the `hello` frame arrives, and from then on only reads (pings). Like mcplocal, every session
 * heartbeats at the interval mcpd announces in `hello` (or --heartbeat-ms; 0 turns it off);
 * heartbeats go out evenly spread over a few shared keep-alive connections.
 *
 * Prints "attached N in S s" once all are attached (exit 1 if that does not
 * happen within --attach-timeout), holds them until SIGTERM/SIGINT or
 * --hold seconds, then prints one JSON summary line and exits.
 */
#include <errno.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define RBUF_CAP 8192 /* setup responses are small */
#define HB_CONNS 4
#define SESSION_HEADER "x-mcpctl-provider-session"

enum pub_state { P_IDLE, P_CONNECTING, P_REGISTERING, P_OPENING, P_ATTACHED, P_DEAD };

struct pub {
    int fd;
    enum pub_state state;
    char sid[72];
    char *rbuf;
    size_t rlen;
    char *wbuf;
    size_t wlen, woff;
    int64_t next_hb; /* monotonic ms */
};

struct hbconn {
    int fd;
    bool busy;
    char rbuf[2048];
    size_t rlen;
    char wbuf[512];
    size_t wlen, woff;
};

/* epoll data: index into pubs, or HB_TAG | index of a heartbeat conn */
#define HB_TAG (1ull << 62)

static volatile sig_atomic_t stop_flag;
static int epfd;
static struct sockaddr_in target;
static char host_header[64];
static const char *token;
static const char *prefix = "idle";
static long npools; /* 0: no pools */
static struct pub *pubs;
static long npubs;
static struct hbconn hbs[HB_CONNS];
static int64_t hb_interval_ms = -1; /* -1: take it from hello */
/* FIFO of attached publishers in heartbeat order (all share one interval) */
static long *hbq;
static long hbq_head, hbq_len;
static long n_attached, n_dropped, n_failed, hb_ok, hb_failed, pings;
static char first_error[256];
static bool separate = true; /* open the stream on a new connection, as mcplocal does */

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void note_error(const char *what, const char *detail)
{
    if (first_error[0])
        return;
    snprintf(first_error, sizeof first_error, "%s: %.180s", what, detail);
    for (char *p = first_error; *p; p++)
        if (*p == '"' || *p == '\\' || *p == '\r' || *p == '\n')
            *p = ' ';
}

static int open_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void watch(int fd, uint64_t tag, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    epoll_ctl(epfd, op, fd, &ev);
}

static void pub_fail(struct pub *p, bool was_attached, const char *why)
{
    if (p->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
    }
    p->fd = -1;
    free(p->rbuf);
    free(p->wbuf);
    p->rbuf = p->wbuf = NULL;
    p->state = P_DEAD;
    if (was_attached) {
        n_attached--;
        n_dropped++;
    } else {
        n_failed++;
    }
    note_error(was_attached ? "stream dropped" : "setup failed", why);
}

/* Queues a request on p; it is written when the socket is writable. */
static void pub_send(struct pub *p, long idx, const char *req, size_t len)
{
    free(p->wbuf);
    p->wbuf = malloc(len);
    memcpy(p->wbuf, req, len);
    p->wlen = len;
    p->woff = 0;
    p->rlen = 0;
    watch(p->fd, (uint64_t)idx, EPOLLOUT, EPOLL_CTL_MOD);
}

static void pub_start(long idx)
{
    struct pub *p = &pubs[idx];
    p->fd = open_socket();
    if (p->fd < 0) {
        pub_fail(p, false, strerror(errno));
        return;
    }
    p->rbuf = malloc(RBUF_CAP);
    p->state = P_CONNECTING;
    char body[384], req[1024], pool[64] = "";
    if (npools > 0)
        snprintf(pool, sizeof pool, ",\"poolName\":\"pool-%ld\"", idx % npools);
    int blen = snprintf(body, sizeof body,
                        "{\"providers\":[{\"name\":\"%s-%05ld\",\"type\":\"openai\","
                        "\"model\":\"bench-idle\",\"tier\":\"fast\"%s}]}",
                        prefix, idx, pool);
    int n = snprintf(req, sizeof req,
                     "POST /api/v1/llms/_provider-register HTTP/1.1\r\nHost: %s\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     host_header, token, blen, body);
    watch(p->fd, (uint64_t)idx, EPOLLOUT, EPOLL_CTL_ADD);
    p->wbuf = malloc((size_t)n);
    memcpy(p->wbuf, req, (size_t)n);
    p->wlen = (size_t)n;
    p->woff = 0;
}

/* Parses a complete response in buf: status, and where the body starts.
 * Returns 1 when complete (headers and Content-Length body), 0 when more is
 * needed, -1 when malformed. *body_len is -1 for a body without a length. */
static int parse_response(const char *buf, size_t len, int *status, size_t *body_off,
                          long *body_len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len >= RBUF_CAP - 1 ? -1 : 0;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    *body_off = (size_t)(end - buf) + 4;
    *body_len = -1;
    for (const char *l = memchr(buf, '\n', *body_off); l && l < end;
         l = memchr(l + 1, '\n', (size_t)(end - l))) {
        if (strncasecmp(l + 1, "Content-Length:", 15) == 0)
            *body_len = strtol(l + 16, NULL, 10);
    }
    if (*body_len >= 0 && len < *body_off + (size_t)*body_len)
        return 0;
    return 1;
}

static void pub_readable(struct pub *p, long idx)
{
    static char scratch[65536];
    if (p->state == P_ATTACHED) {
        for (;;) {
            ssize_t n = read(p->fd, scratch, sizeof scratch);
            if (n > 0) {
                if (memmem(scratch, (size_t)n, ": ping", 6))
                    pings++;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            pub_fail(p, true, n == 0 ? "mcpd closed the stream" : strerror(errno));
            return;
        }
    }
    ssize_t n = read(p->fd, p->rbuf + p->rlen, RBUF_CAP - 1 - p->rlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        pub_fail(p, false, n == 0 ? "mcpd closed the connection" : strerror(errno));
        return;
    }
    p->rlen += (size_t)n;
    p->rbuf[p->rlen] = '\0';
    int status;
    size_t off;
    long blen;
    int rc = parse_response(p->rbuf, p->rlen, &status, &off, &blen);
    if (rc == 0)
        return;
    if (rc < 0) {
        pub_fail(p, false, "malformed response");
        return;
    }
    if (status != 200) {
        pub_fail(p, false, p->rbuf);
        return;
    }
    if (p->state == P_REGISTERING) {
        static const char key[] = "\"providerSessionId\":\"";
        const char *s = strstr(p->rbuf + off, key);
        const char *e = s ? strchr(s + sizeof key - 1, '"') : NULL;
        if (!e || (size_t)(e - s) - (sizeof key - 1) >= sizeof p->sid) {
            pub_fail(p, false, "no providerSessionId in the register answer");
            return;
        }
        size_t sl = (size_t)(e - s) - (sizeof key - 1);
        memcpy(p->sid, s + sizeof key - 1, sl);
        p->sid[sl] = '\0';
        char req[512];
        int rl = snprintf(req, sizeof req,
                          "GET /api/v1/llms/_provider-stream HTTP/1.1\r\nHost: %s\r\n"
                          "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n" SESSION_HEADER
                          ": %s\r\n\r\n",
                          host_header, token, p->sid);
        p->state = P_OPENING;
        if (separate) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
            close(p->fd);
            p->fd = open_socket();
            if (p->fd < 0) {
                pub_fail(p, false, strerror(errno));
                return;
            }
            watch(p->fd, (uint64_t)idx, EPOLLOUT, EPOLL_CTL_ADD);
        }
        pub_send(p, idx, req, (size_t)rl);
        return;
    }
    /* P_OPENING: wait for the hello frame */
    const char *hello = strstr(p->rbuf + off, "event: hello");
    if (!hello)
        return;
    if (hb_interval_ms < 0) {
        const char *iv = strstr(hello, "\"heartbeatIntervalMs\":");
        hb_interval_ms = iv ? strtol(iv + 22, NULL, 10) : 30000;
    }
    p->state = P_ATTACHED;
    free(p->rbuf);
    free(p->wbuf);
    p->rbuf = p->wbuf = NULL;
    n_attached++;
    p->next_hb = now_ms() + (hb_interval_ms > 0 ? hb_interval_ms : 0);
    hbq[(hbq_head + hbq_len++) % npubs] = idx;
}

static void pub_writable(struct pub *p, long idx)
{
    while (p->woff < p->wlen) {
        ssize_t n = write(p->fd, p->wbuf + p->woff, p->wlen - p->woff);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0) {
            pub_fail(p, false, strerror(errno));
            return;
        }
        p->woff += (size_t)n;
    }
    if (p->state == P_CONNECTING)
        p->state = P_REGISTERING;
    watch(p->fd, (uint64_t)idx, EPOLLIN, EPOLL_CTL_MOD);
}

/* ---- heartbeats ---- */

static void hb_close(struct hbconn *h)
{
    if (h->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, h->fd, NULL);
        close(h->fd);
    }
    h->fd = -1;
    h->busy = false;
}

static void hb_send(int i, const char *sid)
{
    struct hbconn *h = &hbs[i];
    if (h->fd < 0) {
        h->fd = open_socket();
        if (h->fd < 0) {
            hb_failed++;
            return;
        }
        watch(h->fd, HB_TAG | (uint64_t)i, EPOLLOUT, EPOLL_CTL_ADD);
    } else {
        watch(h->fd, HB_TAG | (uint64_t)i, EPOLLOUT, EPOLL_CTL_MOD);
    }
    h->wlen = (size_t)snprintf(h->wbuf, sizeof h->wbuf,
                               "POST /api/v1/llms/_provider-heartbeat HTTP/1.1\r\nHost: %s\r\n"
                               "Authorization: Bearer %s\r\n" SESSION_HEADER ": %s\r\n"
                               "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                               host_header, token, sid);
    h->woff = 0;
    h->rlen = 0;
    h->busy = true;
}

static void hb_event(int i, uint32_t events)
{
    struct hbconn *h = &hbs[i];
    if (events & EPOLLOUT) {
        while (h->woff < h->wlen) {
            ssize_t n = write(h->fd, h->wbuf + h->woff, h->wlen - h->woff);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (n < 0) {
                hb_failed++;
                hb_close(h);
                return;
            }
            h->woff += (size_t)n;
        }
        watch(h->fd, HB_TAG | (uint64_t)i, EPOLLIN, EPOLL_CTL_MOD);
        return;
    }
    ssize_t n = read(h->fd, h->rbuf + h->rlen, sizeof h->rbuf - 1 - h->rlen);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (h->busy)
            hb_failed++;
        hb_close(h);
        return;
    }
    h->rlen += (size_t)n;
    h->rbuf[h->rlen] = '\0';
    int status;
    size_t off;
    long blen;
    int rc = parse_response(h->rbuf, h->rlen, &status, &off, &blen);
    if (rc == 0)
        return;
    if (rc > 0 && status == 200) {
        hb_ok++;
    } else {
        hb_failed++;
        note_error("heartbeat refused", h->rbuf);
    }
    h->busy = false;
    if (rc < 0)
        hb_close(h);
}

/* Sends the heartbeats that are due on free connections. */
static void hb_run(int64_t now)
{
    if (hb_interval_ms <= 0)
        return;
    for (int i = 0; i < HB_CONNS && hbq_len > 0; i++) {
        if (hbs[i].busy)
            continue;
        long idx = hbq[hbq_head];
        struct pub *p = &pubs[idx];
        if (p->state == P_ATTACHED && p->next_hb > now)
            return;
        hbq_head = (hbq_head + 1) % npubs;
        hbq_len--;
        if (p->state != P_ATTACHED)
            continue;
        hb_send(i, p->sid);
        p->next_hb += hb_interval_ms;
        hbq[(hbq_head + hbq_len++) % npubs] = idx;
    }
}

static void usage(void)
{
    fputs("usage: idle_publishers --port PORT --token TOKEN --count N [--prefix P]\n"
          "                       [--pools N] [--concurrency C] [--heartbeat-ms MS]\n"
          "                       [--attach-timeout SECONDS] [--hold SECONDS]\n"
          "                       [--stream-connection reuse|new]\n",
          stderr);
}

int main(int argc, char **argv)
{
    int port = 0;
    long concurrency = 64, attach_timeout = 180, hold = 900;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--token") == 0)
            token = v;
        else if (strcmp(a, "--count") == 0)
            npubs = strtol(v, NULL, 10);
        else if (strcmp(a, "--prefix") == 0)
            prefix = v;
        else if (strcmp(a, "--pools") == 0)
            npools = strtol(v, NULL, 10);
        else if (strcmp(a, "--concurrency") == 0)
            concurrency = strtol(v, NULL, 10);
        else if (strcmp(a, "--heartbeat-ms") == 0)
            hb_interval_ms = strtol(v, NULL, 10);
        else if (strcmp(a, "--attach-timeout") == 0)
            attach_timeout = strtol(v, NULL, 10);
        else if (strcmp(a, "--hold") == 0)
            hold = strtol(v, NULL, 10);
        else if (strcmp(a, "--stream-connection") == 0 && strcmp(v, "new") == 0)
            separate = true;
        else if (strcmp(a, "--stream-connection") == 0 && strcmp(v, "reuse") == 0)
            separate = false;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (port <= 0 || port > 65535 || !token || npubs < 1 || npubs > 100000 || concurrency < 1) {
        usage();
        return 2;
    }

    /* One descriptor per publisher: take the whole hard limit. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)npubs + HB_CONNS + 16 > rl.rlim_cur) {
        fprintf(stderr, "idle_publishers: %ld publishers need more than the open-file limit %llu\n",
                npubs, (unsigned long long)rl.rlim_cur);
        return 1;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    snprintf(host_header, sizeof host_header, "127.0.0.1:%d", port);
    pubs = calloc((size_t)npubs, sizeof *pubs);
    hbq = calloc((size_t)npubs, sizeof *hbq);
    if (!pubs || !hbq)
        return 1;
    for (long i = 0; i < npubs; i++)
        pubs[i].fd = -1;
    for (int i = 0; i < HB_CONNS; i++)
        hbs[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);

    int64_t t0 = now_ms();
    int64_t attach_deadline = t0 + attach_timeout * 1000;
    int64_t hold_deadline = t0 + hold * 1000;
    long next_start = 0;
    bool reported = false;
    struct epoll_event evs[512];
    while (!stop_flag) {
        int64_t now = now_ms();
        long in_setup = next_start - n_attached - n_failed - n_dropped;
        while (next_start < npubs && in_setup < concurrency) {
            pub_start(next_start++);
            in_setup++;
        }
        if (!reported && n_attached + n_failed + n_dropped == npubs) {
            reported = true;
            if (n_attached < npubs) {
                fprintf(stderr, "idle_publishers: only %ld of %ld attached: %s\n", n_attached,
                        npubs, first_error);
                break;
            }
            printf("attached %ld in %.3f s\n", n_attached, (double)(now - t0) / 1000);
            fflush(stdout);
        }
        if (!reported && now > attach_deadline) {
            fprintf(stderr, "idle_publishers: %ld of %ld attached after %ld s: %s\n", n_attached,
                    npubs, attach_timeout, first_error);
            break;
        }
        if (now > hold_deadline)
            break;
        hb_run(now);
        int n = epoll_wait(epfd, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag & HB_TAG) {
                hb_event((int)(tag & ~HB_TAG), evs[i].events);
                continue;
            }
            struct pub *p = &pubs[tag];
            if (p->state == P_DEAD)
                continue;
            if (evs[i].events & EPOLLOUT)
                pub_writable(p, (long)tag);
            else
                pub_readable(p, (long)tag);
        }
    }
    int rc = reported && n_attached == npubs ? 0 : 1;
    printf("{\"publishers\":%ld,\"attached\":%ld,\"failed\":%ld,\"dropped\":%ld,"
           "\"heartbeats_ok\":%ld,\"heartbeats_failed\":%ld,\"heartbeat_interval_ms\":%lld,"
           "\"pings\":%ld,\"first_error\":\"%s\"}\n",
           npubs, n_attached, n_failed, n_dropped, hb_ok, hb_failed, (long long)hb_interval_ms,
           pings, first_error);
    fflush(stdout);
    for (long i = 0; i < npubs; i++) {
        if (pubs[i].fd >= 0)
            close(pubs[i].fd);
        free(pubs[i].rbuf);
        free(pubs[i].wbuf);
    }
    for (int i = 0; i < HB_CONNS; i++)
        hb_close(&hbs[i]);
    free(pubs);
    free(hbq);
    return rc;
}
