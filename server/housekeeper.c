/*
 * housekeeper.c - the background thread: one epoll set with every
 * connection's socket (for EPOLLRDHUP) and an eventfd to stop it; between
 * events it runs the broker's timers, a GC batch when one is due, the
 * sweep for revoked and expired tokens, the flush of the usage counts
 * and the tokens' last uses, and writes the access log's buffered lines.
 */
#include "housekeeper.h"
#include "accesslog.h"
#include "clock.h"
#include "http.h"
#include "log.h"
#include "usage.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define STOP_ID UINT64_MAX
/* The longest sleep: the broker's deadlines are met within this. */
#define MAX_SLEEP_MS 50
/* How often revoked and expired tokens are looked for, and how far back
 * (longer than the auth cache's lifetime, so a stream opened on a cached
 * answer just before the revocation is still found). */
#define REVOKE_EVERY_MS 1000
#define REVOKE_LOOKBACK_MS (2 * AUTH_CACHE_TTL_MS)
/* A streamed result post whose poster closed is failed this long after. */
#define CUT_GRACE_MS 100
#define CUTS_MAX 256

struct housekeeper {
    struct server *srv;
    int epfd;
    int evfd;
    pthread_t thread;
    bool running;
    int64_t next_gc;
    bool gc_more; /* the last batch was full */
    int64_t next_revoke;
    int64_t next_flush;
    int64_t next_log_flush; /* the access log's buffered lines */
    /* Sessions a GC batch found stale. */
    char (*stale)[DB_SESSION_ID_LEN];
    unsigned nstale;
    /* Posters that closed, to look at again. */
    struct {
        uint64_t conn_id;
        int64_t due;
    } cuts[CUTS_MAX];
    unsigned ncuts;
};

struct housekeeper *housekeeper_new(struct server *srv)
{
    struct housekeeper *hk = calloc(1, sizeof *hk);
    if (!hk)
        return NULL;
    hk->srv = srv;
    hk->epfd = epoll_create1(EPOLL_CLOEXEC);
    hk->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    hk->stale = calloc((size_t)srv->cfg.gc_batch, sizeof *hk->stale);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STOP_ID};
    if (hk->epfd < 0 || hk->evfd < 0 || !hk->stale ||
        epoll_ctl(hk->epfd, EPOLL_CTL_ADD, hk->evfd, &ev) < 0) {
        housekeeper_free(hk);
        return NULL;
    }
    return hk;
}

void housekeeper_free(struct housekeeper *hk)
{
    if (!hk)
        return;
    housekeeper_stop(hk);
    if (hk->epfd >= 0)
        close(hk->epfd);
    if (hk->evfd >= 0)
        close(hk->evfd);
    free(hk->stale);
    free(hk);
}

void housekeeper_watch(struct housekeeper *hk, int fd, uint64_t conn_id)
{
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.u64 = conn_id};
    epoll_ctl(hk->epfd, EPOLL_CTL_ADD, fd, &ev);
}

void housekeeper_rearm(struct housekeeper *hk, int fd, uint64_t conn_id)
{
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.u64 = conn_id};
    epoll_ctl(hk->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void housekeeper_unwatch(struct housekeeper *hk, int fd)
{
    epoll_ctl(hk->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void on_stale(void *ud, const char *session)
{
    struct housekeeper *hk = ud;
    if (hk->nstale < (unsigned)hk->srv->cfg.gc_batch) /* one per row flipped */
        memcpy(hk->stale[hk->nstale++], session, DB_SESSION_ID_LEN);
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* One GC batch: rows without a heartbeat go inactive and their sessions'
 * streams are closed (their tasks fail at once); expired rows are deleted.
 * life_mu keeps a stream bound meanwhile from being undone by the batch. */
static void gc_batch(struct housekeeper *hk)
{
    struct server *srv = hk->srv;
    int inactivated = 0, deleted = 0;
    hk->nstale = 0;
    int64_t start = clock_mono_us();
    pthread_mutex_lock(&srv->life_mu);
    int rc = db_gc(srv->db, clock_wall_ms(), srv->cfg.heartbeat_timeout_ms,
                   srv->cfg.inactive_retention_ms, srv->cfg.gc_batch, on_stale, hk, &inactivated,
                   &deleted);
    /* A session comes once per row: sorted, each is expired once. */
    qsort(hk->stale, hk->nstale, sizeof hk->stale[0], compare_ids);
    unsigned sessions = 0;
    for (unsigned i = 0; rc == DB_OK && i < hk->nstale; i++) {
        if (i > 0 && strcmp(hk->stale[i], hk->stale[i - 1]) == 0)
            continue;
        sessions++;
        broker_session_expire(srv->broker, hk->stale[i],
                              "no heartbeat from the publisher within the heartbeat timeout");
    }
    pthread_mutex_unlock(&srv->life_mu);
    metrics_gc_batch(srv->metrics, rc == DB_OK, inactivated, deleted, clock_mono_us() - start);
    hk->gc_more = rc == DB_OK && (inactivated >= srv->cfg.gc_batch || deleted >= srv->cfg.gc_batch);
    if (rc != DB_OK)
        log_error("gc: database error: %s", db_errmsg(srv->db));
    else if (inactivated || deleted)
        log_info("gc: %d row(s) without heartbeat now inactive (%u session(s) closed), %d "
                 "expired row(s) deleted",
                 inactivated, sessions, deleted);
}

static void on_ended(void *ud, const char *hash)
{
    struct server *srv = ud;
    auth_forget(srv->auth, hash);
    int n = broker_revoke(srv->broker, hash);
    if (n > 0)
        log_info("closed %d control stream(s) opened with a revoked or expired token", n);
}

static void *run(void *arg)
{
    struct housekeeper *hk = arg;
    struct server *srv = hk->srv;
    struct epoll_event evs[64];
    int64_t next = clock_mono_ms();
    for (;;) {
        int64_t now = clock_mono_ms();
        int64_t wait = next - now;
        if (wait > MAX_SLEEP_MS)
            wait = MAX_SLEEP_MS;
        if (wait < 0)
            wait = 0;
        int n = epoll_wait(hk->epfd, evs, 64, (int)wait);
        if (n < 0 && errno != EINTR) {
            log_error("housekeeper: epoll_wait: %s", strerror(errno));
            break;
        }
        bool stop = false;
        now = clock_mono_ms();
        for (int i = 0; i < n; i++) {
            uint64_t id = evs[i].data.u64;
            if (id == STOP_ID) {
                stop = true;
            } else if (http_peer_gone(srv, id, hk->ncuts == CUTS_MAX)) {
                hk->cuts[hk->ncuts].conn_id = id;
                hk->cuts[hk->ncuts].due = now + CUT_GRACE_MS;
                hk->ncuts++;
            }
        }
        if (stop)
            break;
        for (unsigned i = 0; i < hk->ncuts;) {
            if (hk->cuts[i].due > now) {
                i++;
                continue;
            }
            http_peer_gone(srv, hk->cuts[i].conn_id, true);
            hk->cuts[i] = hk->cuts[--hk->ncuts];
        }
        next = broker_tick(srv->broker, now);
        if (now >= hk->next_gc) {
            gc_batch(hk);
            hk->next_gc = hk->gc_more ? now : now + srv->cfg.gc_interval_ms;
        }
        if (now >= hk->next_revoke) {
            int64_t wall = clock_wall_ms();
            if (db_token_ended_since(srv->db, wall - REVOKE_LOOKBACK_MS, wall, on_ended, srv) !=
                DB_OK)
                log_error("revocation sweep: database error: %s", db_errmsg(srv->db));
            hk->next_revoke = now + REVOKE_EVERY_MS;
        }
        if (now >= hk->next_flush) {
            server_flush_counts(srv, true);
            hk->next_flush = now + USAGE_FLUSH_EVERY_MS;
        }
        if (now >= hk->next_log_flush) {
            accesslog_flush(srv->access);
            hk->next_log_flush = now + ACCESSLOG_FLUSH_MS;
        }
        if (hk->next_gc < next)
            next = hk->next_gc;
        for (unsigned i = 0; i < hk->ncuts; i++)
            if (hk->cuts[i].due < next)
                next = hk->cuts[i].due;
    }
    return NULL;
}

int housekeeper_run(struct housekeeper *hk)
{
    hk->next_gc = clock_mono_ms() + hk->srv->cfg.gc_interval_ms;
    hk->next_flush = clock_mono_ms() + USAGE_FLUSH_EVERY_MS;
    if (pthread_create(&hk->thread, NULL, run, hk) != 0)
        return -1;
    hk->running = true;
    return 0;
}

void housekeeper_stop(struct housekeeper *hk)
{
    if (!hk || !hk->running)
        return;
    uint64_t one = 1;
    ssize_t w = write(hk->evfd, &one, sizeof one);
    (void)w;
    pthread_join(hk->thread, NULL);
    hk->running = false;
}
