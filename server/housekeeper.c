/*
 * housekeeper.c - the one background thread of mcpd.
 *
 * It watches the sockets of suspended connections (control streams and
 * parked callers) with EPOLLRDHUP, so a peer that goes away is noticed within
 * milliseconds even though MHD does not poll suspended connections, and with
 * EPOLLOUT while a parked stream has bytes its socket did not take; and it
 * runs the timers: stream pings, the GC sweep, task and wake deadlines, and
 * keep-alive comments for held streaming callers. New connections are
 * accepted on its epoll set too (acceptor.c). It sleeps until the next
 * deadline or until poked.
 */
#include "clock.h"
#include "log.h"
#include "server.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WAKE_ID UINT64_MAX

void housekeeper_watch(struct server *srv, struct conn_ctx *cc)
{
    if (cc->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.u64 = cc->id};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, cc->fd, &ev) == 0)
        cc->watched = true;
}

void housekeeper_want_write(struct server *srv, struct conn_ctx *cc, bool on)
{
    if (!cc->watched)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0u),
                             .data.u64 = cc->id};
    epoll_ctl(srv->epfd, EPOLL_CTL_MOD, cc->fd, &ev);
}

void housekeeper_unwatch(struct server *srv, struct conn_ctx *cc)
{
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, cc->fd, NULL);
    cc->watched = false;
}

void housekeeper_poke(struct server *srv, int64_t when)
{
    if (when < srv->hk_next_wake) {
        srv->hk_next_wake = when;
        uint64_t one = 1;
        ssize_t w = write(srv->evfd, &one, sizeof one);
        (void)w;
    }
}

void gc_tick(struct server *srv)
{
    int inactivated = 0, deleted = 0;
    int rc = db_gc(srv->db, clock_wall_ms(), srv->cfg.heartbeat_timeout_ms,
                   srv->cfg.inactive_retention_ms, srv->cfg.gc_batch, &inactivated, &deleted);
    if (rc != DB_OK)
        log_error("gc: database error: %s", db_errmsg(srv->db));
    else if (inactivated || deleted)
        log_info("gc: %d row(s) without heartbeat now inactive, %d expired row(s) deleted",
                 inactivated, deleted);
}

/* Pings go out in slices of the interval, each stream once per interval,
 * and at most PING_BATCH at a time: they are written after server.mu is
 * released (server_unlock), so a batch holds the lock only while it is
 * queued. Streams opened together (thousands within a second after a
 * restart) fall due together; the rest follow PING_BATCH_GAP_MS later. */
#define PING_SLICES 20
#define PING_BATCH STREAM_DEFERRED_MAX
#define PING_BATCH_GAP_MS 2

static int64_t ping_slice(const struct server *srv)
{
    int64_t slice = srv->cfg.ping_interval_ms / PING_SLICES;
    return slice > 0 ? slice : 1;
}

/* Runs whatever is due; returns the next deadline (server.mu held). */
static int64_t run_timers(struct server *srv, int64_t now, bool *gc_due)
{
    if (now >= srv->next_ping) {
        bool more = stream_ping_due(srv, now, PING_BATCH);
        srv->next_ping = now + (more ? PING_BATCH_GAP_MS : ping_slice(srv));
    }
    *gc_due = now >= srv->next_gc;
    if (*gc_due)
        srv->next_gc = now + srv->cfg.gc_interval_ms;
    int64_t next = srv->next_ping < srv->next_gc ? srv->next_ping : srv->next_gc;
    int64_t t = relay_tick(srv, now);
    if (t < next)
        next = t;
    t = wake_tick(srv, now);
    if (t < next)
        next = t;
    return next;
}

/* A watched socket reported events: its peer went away, or a parked
 * stream's socket can take more bytes. */
static void socket_event(struct server *srv, uint64_t id, uint32_t events)
{
    struct conn_ctx *cc;
    HASH_FIND(hh, srv->conns, &id, sizeof id, cc);
    if (!cc || !cc->waiting)
        return;
    struct req *r = cc->waiting;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        r->peer_gone = true;
        http_resume(r);
    } else if ((events & EPOLLOUT) && r->stream) {
        stream_flush(r->stream);
    }
}

static void *housekeeper_main(void *arg)
{
    struct server *srv = arg;
    struct epoll_event events[64];
    for (;;) {
        server_lock(srv);
        if (atomic_load(&srv->stopping)) {
            server_unlock(srv);
            break;
        }
        int64_t now = clock_mono_ms();
        bool gc_due;
        int64_t next = run_timers(srv, now, &gc_due);
        srv->hk_next_wake = next;
        server_unlock(srv);
        if (gc_due)
            gc_tick(srv);
        /* The acceptor's state is this thread's alone: no lock, so a burst
         * of new connections does not hold up the relay. */
        int64_t t = acceptor_tick(srv, clock_mono_ms());
        if (t < next)
            next = t;

        int64_t wait = next - clock_mono_ms();
        if (wait < 0)
            wait = 0;
        if (wait > 60000)
            wait = 60000;
        int n = epoll_wait(srv->epfd, events, 64, (int)wait);
        if (n < 0 && errno != EINTR) {
            log_error("housekeeper: epoll_wait: %s", strerror(errno));
            break;
        }
        bool locked = false;
        for (int i = 0; i < n; i++) {
            uint64_t id = events[i].data.u64;
            if (id == LISTEN_ID) {
                acceptor_ready(srv);
                continue;
            }
            if (id != WAKE_ID && (id & ACCEPT_TAG)) {
                acceptor_event(srv, id);
                continue;
            }
            if (!locked) {
                server_lock(srv);
                locked = true;
            }
            if (id == WAKE_ID) {
                uint64_t v;
                ssize_t r = read(srv->evfd, &v, sizeof v);
                (void)r;
            } else {
                socket_event(srv, id, events[i].events);
            }
        }
        if (locked)
            server_unlock(srv);
    }
    return NULL;
}

int housekeeper_start(struct server *srv)
{
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    srv->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->epfd < 0 || srv->evfd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_ID};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->evfd, &ev) < 0)
        return -1;
    int64_t now = clock_mono_ms();
    srv->next_ping = now + ping_slice(srv);
    srv->next_gc = now + srv->cfg.gc_interval_ms;
    srv->hk_next_wake = now;
    if (pthread_create(&srv->hk_thread, NULL, housekeeper_main, srv) != 0)
        return -1;
    return 0;
}

void housekeeper_stop(struct server *srv)
{
    uint64_t one = 1;
    ssize_t w = write(srv->evfd, &one, sizeof one);
    (void)w;
    pthread_join(srv->hk_thread, NULL);
}

void housekeeper_close(struct server *srv)
{
    /* Only once the HTTP workers have stopped: closing connections
     * unwatch their sockets in this epoll set until then. */
    if (srv->epfd >= 0)
        close(srv->epfd);
    if (srv->evfd >= 0)
        close(srv->evfd);
    srv->epfd = srv->evfd = -1;
}
