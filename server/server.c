/*
 * server.c - mcpd's lifecycle: open the database, start the housekeeper and
 * the HTTP daemon; on stop, fail every waiting caller and end every stream,
 * stop the daemon, and leave no row of a closed stream active.
 */
#include "server.h"
#include "accesslog.h"
#include "clock.h"
#include "file.h"
#include "housekeeper.h"
#include "http.h"
#include "log.h"
#include "routes.h"
#include "usage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Raises the open-file limit to the hard limit; returns the connections it
 * leaves room for (descriptors for the database, logs and epoll set
 * aside), and in *cap the cap: --max-connections when it fits. */
static unsigned int raise_fd_limit(int wanted, unsigned int *cap)
{
    struct rlimit rl;
    rlim_t limit = 1000;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rlim_t want = rl.rlim_max;
            if (want == RLIM_INFINITY || want > 1048576)
                want = 1048576;
            struct rlimit nrl = {want, rl.rlim_max};
            if (setrlimit(RLIMIT_NOFILE, &nrl) == 0)
                rl.rlim_cur = want;
        }
        limit = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
    }
    if (limit > 1000000)
        limit = 1000000;
    *cap = (unsigned int)limit;
    if (wanted > 0 && (rlim_t)wanted <= limit)
        *cap = (unsigned int)wanted;
    else if (wanted > 0)
        log_warn("--max-connections %d is above what the open-file limit allows (%llu)", wanted,
                 (unsigned long long)limit);
    log_info("open-file limit %llu: accepting up to %u connections",
             (unsigned long long)(limit + 64), *cap);
    return (unsigned int)limit;
}

static int load_tls(struct server *srv)
{
    const struct server_config *cfg = &srv->cfg;
    if (!cfg->tls_cert[0])
        return 0;
    const char *paths[2] = {cfg->tls_cert, cfg->tls_key};
    char **dst[2] = {&srv->tls_cert, &srv->tls_key};
    for (int i = 0; i < 2; i++) {
        size_t len;
        int rc = file_read_all(paths[i], 1 << 20, dst[i], &len);
        if (rc < 0) {
            log_error("cannot read TLS %s '%s': %s", i ? "key" : "certificate", paths[i],
                      rc == -2 ? "larger than 1 MiB" : strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Frees what server_start() made; every thread is stopped. */
static void release(struct server *srv)
{
    housekeeper_free(srv->hk);
    broker_free(srv->broker);
    routes_free(srv->routes);
    usage_free(srv->usage);
    metrics_free(srv->metrics);
    accesslog_free(srv->access);
    auth_free(srv->auth);
    db_close(srv->db);
    free(srv->tls_cert);
    free(srv->tls_key);
    pthread_mutex_destroy(&srv->life_mu);
    pthread_mutex_destroy(&srv->watch_mu);
    srv->hk = NULL;
    srv->broker = NULL;
    srv->metrics = NULL;
    srv->access = NULL;
}

int server_start(struct server *srv, const struct server_config *cfg)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = *cfg;
    srv->listen_fd = -1;
    pthread_mutex_init(&srv->life_mu, NULL);
    pthread_mutex_init(&srv->watch_mu, NULL);
    atomic_init(&srv->stopping, false);
    char err[512];
    if (accesslog_open(cfg->access_log, &srv->access, err, sizeof err) < 0) {
        log_error("%s", err);
        release(srv);
        return -1;
    }
    if (db_open(cfg->db_path, &srv->db, err, sizeof err) != DB_OK) {
        log_error("%s", err);
        release(srv);
        return -1;
    }
    /* No stream is bound yet: every published row waits for its publisher. */
    int changed = 0;
    if (db_deactivate_all(srv->db, clock_wall_ms(), &changed) != DB_OK) {
        log_error("cannot mark the rows inactive: %s", db_errmsg(srv->db));
        release(srv);
        return -1;
    }
    if (changed)
        log_info("%d row(s) inactive until their publishers reconnect", changed);
    struct broker_config bc = {
        .infer_timeout_ms = cfg->infer_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .wake_timeout_ms = cfg->wake_timeout_ms,
        .ping_interval_ms = cfg->ping_interval_ms,
        .heartbeat_interval_ms = cfg->heartbeat_interval_ms,
        .max_inflight = cfg->max_inflight,
        .max_held = cfg->max_held,
        .max_frame = (size_t)cfg->max_body + 1024,
        .stream_backlog = 8u << 20,
        .caller_backlog = 16u << 20,
        .max_result = (size_t)cfg->max_body * 4,
        .result_stream = cfg->result_stream,
        .on_wake_end = metrics_wake,
    };
    srv->metrics = metrics_new(http_routes, R_COUNT);
    bc.observer = srv->metrics;
    srv->auth = auth_new(srv->db);
    srv->broker = broker_new(&bc);
    srv->routes = routes_new();
    srv->usage = usage_new(srv->db);
    srv->hk = housekeeper_new(srv);
    if (!srv->metrics || !srv->auth || !srv->broker || !srv->routes || !srv->usage || !srv->hk) {
        log_error("cannot start: out of memory or descriptors");
        release(srv);
        return -1;
    }
    if (load_tls(srv) < 0) {
        release(srv);
        return -1;
    }
    unsigned int cap;
    unsigned int fd_limit = raise_fd_limit(cfg->max_connections, &cap);
    if (!http_start(srv, cap, fd_limit)) {
        release(srv);
        return -1;
    }
    if (housekeeper_run(srv->hk) < 0) {
        log_error("cannot start the housekeeper thread");
        atomic_store(&srv->stopping, true);
        broker_shutdown(srv->broker);
        http_stop(srv);
        release(srv);
        return -1;
    }
    const char *host = cfg->listen_addr;
    bool v6 = strchr(host, ':') != NULL;
    log_info("database %s (schema %d), %d worker thread(s)", cfg->db_path,
             db_schema_version(srv->db), cfg->threads);
    log_info("listening on %s://%s%s%s:%d", srv->tls_cert ? "https" : "http", v6 ? "[" : "", host,
             v6 ? "]" : "", srv->port);
    return 0;
}

void server_reopen_logs(struct server *srv)
{
    if (!srv->access)
        return;
    if (accesslog_reopen(srv->access) < 0)
        log_error("cannot reopen access log '%s': %s; still writing to the old file",
                  srv->cfg.access_log, strerror(errno));
    else if (strcmp(srv->cfg.access_log, "-") != 0)
        log_info("access log '%s' reopened", srv->cfg.access_log);
}

void server_flush_counts(struct server *srv, bool again)
{
    const char *kept = again ? " (kept for the next try)" : "";
    if (usage_flush(srv->usage) != DB_OK)
        log_error("cannot write the usage counts%s: %s", kept, db_errmsg(srv->db));
    if (auth_flush(srv->auth) != DB_OK)
        log_error("cannot write when tokens were last used%s: %s", kept, db_errmsg(srv->db));
}

void server_stop(struct server *srv)
{
    log_info("shutting down: closing streams and waiting callers");
    atomic_store(&srv->stopping, true);
    broker_shutdown(srv->broker);
    housekeeper_stop(srv->hk);
    http_stop(srv);
    /* Every request is over: what they counted is written now. */
    server_flush_counts(srv, false);
    /* Every stream's close flipped its rows; this catches any left. */
    db_deactivate_all(srv->db, clock_wall_ms(), NULL);
    release(srv);
    log_info("stopped");
}
