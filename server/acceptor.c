/*
 * acceptor.c - mcpd accepts its own connections and hands each one to
 * whoever serves its first request:
 *
 *   - the streams daemon (libmicrohttpd) takes connections whose first
 *     request is GET /api/v1/llms/_provider-stream: control streams, parked
 *     for hours;
 *   - caller.c's loops take callers (POST /v1/chat/completions,
 *     POST /api/v1/llms/<name>/infer) and result posts (caller.c says why);
 *   - the main daemon takes everything else: registration, heartbeats,
 *     listings.
 *
 * Why: libmicrohttpd walks a worker's whole list of suspended connections
 * each time it resumes one. Parked control streams are suspended for their
 * whole life, so with 10,000 publishers attached every parked caller's
 * resume walked thousands of them. Kept on a daemon of their own, they are
 * walked only when a stream ends, and the main daemon's lists hold only
 * callers actually waiting for an answer.
 *
 * The first bytes are looked at with MSG_PEEK, so the taker reads the whole
 * request itself. A connection that sends nothing within a second, or only
 * part of the request line, goes to the main daemon, which serves any
 * request, streams included. The accepting runs on the housekeeper's epoll
 * set, without server.mu: everything here belongs to the housekeeper
 * thread. Connections are long-lived (keep-alive), so this is off the
 * relay's path.
 */
#include "clock.h"
#include "log.h"
#include "server.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define STREAM_REQUEST_LINE "GET " MCP_ROUTE_STREAM
/* Enough for the longest request line routed by it: a caller's
 * POST /api/v1/llms/<name>/infer with the longest name. */
#define PEEK_BYTES 160
#define CLASSIFY_TIMEOUT_MS 1000
#define ACCEPT_BATCH 256
/* Out of file descriptors: stop accepting for this long. */
#define ACCEPT_PAUSE_MS 100

/* A connection accepted but not yet handed over: its first bytes are due. */
struct pending_conn {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t deadline;
    struct pending_conn *prev, *next;
};

static void pending_unlink(struct server *srv, struct pending_conn *pc)
{
    if (pc->prev)
        pc->prev->next = pc->next;
    else
        srv->pending = pc->next;
    if (pc->next)
        pc->next->prev = pc->prev;
}

enum peek_result { PEEK_STREAM, PEEK_CALLER, PEEK_OTHER, PEEK_WAIT, PEEK_CLOSED };

static void hand_over(struct server *srv, int fd, const struct sockaddr_storage *addr,
                      socklen_t addrlen, enum peek_result where)
{
    if (where == PEEK_CALLER) {
        caller_take(srv, fd, addr, addrlen);
        return;
    }
    struct MHD_Daemon *d = where == PEEK_STREAM ? srv->mhd_streams : srv->mhd;
    /* MHD owns the socket from here, and closes it when it cannot take it. */
    if (MHD_add_connection(d, fd, (const struct sockaddr *)addr, addrlen) != MHD_YES)
        log_warn("could not take a connection: %s", strerror(errno));
}

static enum peek_result peek(int fd)
{
    static const char want[] = STREAM_REQUEST_LINE;
    const size_t wlen = sizeof want - 1;
    char got[PEEK_BYTES];
    ssize_t n = recv(fd, got, sizeof got, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? PEEK_WAIT
                                                                           : PEEK_CLOSED;
    if (n == 0)
        return PEEK_CLOSED;
    switch (caller_classify(got, (size_t)n)) {
    case CALLER_YES:
        return PEEK_CALLER;
    case CALLER_MORE:
        return (size_t)n < sizeof got ? PEEK_WAIT : PEEK_OTHER;
    case CALLER_NO:
        break;
    }
    size_t k = (size_t)n < wlen ? (size_t)n : wlen;
    if (memcmp(got, want, k) != 0)
        return PEEK_OTHER;
    if ((size_t)n < wlen + 1)
        return PEEK_OTHER; /* only part of the line so far: main serves it */
    /* The path must end there: a space or a query string follows. */
    return (got[wlen] == ' ' || got[wlen] == '?') ? PEEK_STREAM : PEEK_OTHER;
}

/* Hands pc over if its first bytes tell where it goes (server.mu held). */
static void classify(struct server *srv, struct pending_conn *pc, bool timed_out)
{
    enum peek_result p = peek(pc->fd);
    if (p == PEEK_WAIT && !timed_out)
        return;
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, pc->fd, NULL);
    pending_unlink(srv, pc);
    if (p == PEEK_CLOSED)
        close(pc->fd);
    else
        hand_over(srv, pc->fd, &pc->addr, pc->addrlen, p == PEEK_WAIT ? PEEK_OTHER : p);
    free(pc);
}

void acceptor_ready(struct server *srv)
{
    /* The listening socket is level-triggered: what is left after a batch
     * is reported again, after the housekeeper's other events. */
    for (int batch = 0; batch < ACCEPT_BATCH; batch++) {
        struct sockaddr_storage addr;
        socklen_t addrlen = sizeof addr;
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&addr, &addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("cannot accept connections: %s; pausing for %d ms", strerror(errno),
                         ACCEPT_PAUSE_MS);
                epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
                srv->accept_paused_until = clock_mono_ms() + ACCEPT_PAUSE_MS;
            }
            return; /* EAGAIN: all taken */
        }
        enum peek_result p = peek(fd);
        if (p == PEEK_CLOSED) {
            close(fd);
            continue;
        }
        if (p != PEEK_WAIT) {
            hand_over(srv, fd, &addr, addrlen, p);
            continue;
        }
        struct pending_conn *pc = calloc(1, sizeof *pc);
        if (!pc) {
            hand_over(srv, fd, &addr, addrlen, PEEK_OTHER);
            continue;
        }
        pc->fd = fd;
        pc->addr = addr;
        pc->addrlen = addrlen;
        pc->deadline = clock_mono_ms() + CLASSIFY_TIMEOUT_MS;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                 .data.u64 = ACCEPT_TAG | (uint64_t)(uintptr_t)pc};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            free(pc);
            hand_over(srv, fd, &addr, addrlen, PEEK_OTHER);
            continue;
        }
        pc->next = srv->pending;
        if (pc->next)
            pc->next->prev = pc;
        srv->pending = pc;
    }
}

void acceptor_event(struct server *srv, uint64_t data)
{
    classify(srv, (struct pending_conn *)(uintptr_t)(data & ~ACCEPT_TAG), false);
}

int64_t acceptor_tick(struct server *srv, int64_t now)
{
    int64_t next = INT64_MAX;
    if (srv->accept_paused_until && srv->accept_paused_until <= now) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = LISTEN_ID};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->listen_fd, &ev) == 0)
            srv->accept_paused_until = 0;
        else
            srv->accept_paused_until = now + ACCEPT_PAUSE_MS;
    }
    if (srv->accept_paused_until)
        next = srv->accept_paused_until;
    /* Newest first: the oldest sit at the tail. */
    struct pending_conn *pc = srv->pending, *nx;
    for (; pc; pc = nx) {
        nx = pc->next;
        if (pc->deadline <= now)
            classify(srv, pc, true);
        else if (pc->deadline < next)
            next = pc->deadline;
    }
    return next;
}

int acceptor_listen(struct server *srv, const struct sockaddr *addr, socklen_t addrlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, addr, addrlen) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    srv->listen_fd = fd;
    return 0;
}

int acceptor_start(struct server *srv)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = LISTEN_ID};
    return epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->listen_fd, &ev);
}

void acceptor_stop(struct server *srv)
{
    if (srv->listen_fd >= 0) {
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
        close(srv->listen_fd);
        srv->listen_fd = -1;
    }
    while (srv->pending) {
        struct pending_conn *pc = srv->pending;
        pending_unlink(srv, pc);
        close(pc->fd);
        free(pc);
    }
}
