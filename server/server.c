/*
 * server.c - mcpd's lifecycle: open the database, start the HTTP daemon and
 * the housekeeper; on stop, end every stream and parked request, stop the
 * daemon, and leave no row of a closed stream active.
 */
#include "clock.h"
#include "log.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Raises the open-file limit as far as allowed; returns the connection cap. */
static unsigned int raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1000;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        if (want == RLIM_INFINITY || want > 1048576)
            want = 1048576;
        struct rlimit nrl = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nrl) == 0)
            rl.rlim_cur = want;
    }
    rlim_t limit = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
    if (limit > 1000000)
        limit = 1000000;
    log_info("open-file limit %llu: accepting up to %llu connections",
             (unsigned long long)rl.rlim_cur, (unsigned long long)limit);
    return (unsigned int)limit;
}

static int make_addr(const struct server_config *cfg, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    const char *host = cfg->listen_addr;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)cfg->listen_port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)cfg->listen_port);
        return 0;
    }
    return -1;
}

/* Stops the housekeeper (and with it accepting), then both daemons; the
 * stopping flag is set. */
static void stop_threads(struct server *srv)
{
    housekeeper_stop(srv);
    acceptor_stop(srv);
    caller_stop_threads(srv);
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    if (srv->mhd_streams)
        MHD_stop_daemon(srv->mhd_streams);
    caller_close_all(srv);
    housekeeper_close(srv);
    srv->mhd = srv->mhd_streams = NULL;
    http_responses_free(srv);
}

int server_start(struct server *srv, const struct server_config *cfg)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = *cfg;
    srv->listen_fd = -1;
    pthread_mutex_init(&srv->mu, NULL);
    atomic_init(&srv->stopping, false);
    char err[512];
    if (db_open(cfg->db_path, &srv->db, err, sizeof err) != DB_OK) {
        log_error("%s", err);
        return -1;
    }
    srv->auth = auth_new(srv->db);
    struct sockaddr_storage ss;
    if (make_addr(cfg, &ss) < 0) {
        log_error("cannot listen on '%s': not an IP address", cfg->listen_addr);
        return -1;
    }
    unsigned int conn_limit = raise_fd_limit();
    if (http_responses_init(srv) < 0) {
        log_error("out of memory");
        return -1;
    }
    socklen_t addrlen =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (acceptor_listen(srv, (struct sockaddr *)&ss, addrlen) < 0) {
        log_error("cannot listen on %s:%d: %s", cfg->listen_addr, cfg->listen_port,
                  strerror(errno));
        http_responses_free(srv);
        return -1;
    }
    if (housekeeper_start(srv) < 0) {
        log_error("cannot start the housekeeper thread");
        housekeeper_close(srv);
        acceptor_stop(srv);
        http_responses_free(srv);
        return -1;
    }
    /* Control streams spend their life suspended; one worker serves them. */
    srv->mhd = http_start(srv, (unsigned int)cfg->threads, conn_limit);
    srv->mhd_streams = srv->mhd ? http_start(srv, 1, conn_limit) : NULL;
    if (!srv->mhd_streams || caller_start(srv, (unsigned int)cfg->threads) < 0 ||
        acceptor_start(srv) < 0) {
        log_error("cannot start the HTTP server");
        server_lock(srv);
        atomic_store(&srv->stopping, true);
        server_unlock(srv);
        stop_threads(srv);
        return -1;
    }
    const char *host = cfg->listen_addr;
    bool v6 = strchr(host, ':') != NULL;
    log_info("database %s (schema %d), %d worker thread(s)", cfg->db_path,
             db_schema_version(srv->db), cfg->threads);
    log_info("listening on http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", srv->port);
    return 0;
}

void server_stop(struct server *srv)
{
    log_info("shutting down: closing streams and parked requests");
    server_lock(srv);
    atomic_store(&srv->stopping, true);
    relay_shutdown(srv);
    stream_close_all(srv);
    struct conn_ctx *cc, *tmp;
    HASH_ITER(hh, srv->conns, cc, tmp)
    {
        if (cc->waiting)
            http_resume(cc->waiting);
    }
    struct wake *hw, *hwtmp;
    HASH_ITER(hh, srv->wakes, hw, hwtmp)
    {
        for (int i = 0; i < hw->nheld; i++)
            http_resume(hw->held[i]); /* caller.c's held calls: 503 */
    }
    server_unlock(srv);
    stop_threads(srv);

    /* Every stream's completion flipped its rows; this catches any left. */
    struct session *s, *stmp;
    HASH_ITER(hh, srv->sessions, s, stmp)
    {
        db_session_deactivate(srv->db, s->id, clock_wall_ms(), NULL);
        HASH_DEL(srv->sessions, s);
        free(s);
    }
    struct task *t, *ttmp;
    HASH_ITER(hh, srv->tasks, t, ttmp)
    {
        HASH_DEL(srv->tasks, t);
        buf_release(&t->body);
        free(t);
    }
    struct tombstone *ts, *tstmp;
    HASH_ITER(hh, srv->tombstones, ts, tstmp)
    {
        HASH_DEL(srv->tombstones, ts);
        free(ts);
    }
    struct wake *w, *wtmp;
    HASH_ITER(hh, srv->wakes, w, wtmp)
    {
        HASH_DEL(srv->wakes, w);
        free(w->held);
        free(w);
    }
    route_cache_clear(srv);
    auth_free(srv->auth);
    db_close(srv->db);
    pthread_mutex_destroy(&srv->mu);
    log_info("stopped");
}
