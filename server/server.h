/*
 * server.h - mcpd as a whole: what it is made of, and how it starts and
 * stops.
 *
 * Threads: libmicrohttpd's worker pool (--threads) runs every request
 * callback; the housekeeper thread (housekeeper.c) runs the timers, the GC
 * and the revocation sweep, and watches connections for a vanished peer;
 * the accepting thread (http.c) hands each new connection to the daemon;
 * the access log's writer (accesslog.c) writes the lines the workers add.
 *
 * State and its owners:
 * - the broker (broker.h): sessions, stream queues, tasks, callers, wakes;
 *   its own lock;
 * - the database (db.h): the durable rows; its own lock;
 * - the routing cache (routes.h): Llm name -> session and status;
 * - the usage counts (usage.h) and the tokens' last uses (auth.h): in
 *   memory, each under its own lock, written in batches by the
 *   housekeeper and at shutdown;
 * - libmicrohttpd: every connection and socket.
 * life_mu orders the lifecycle decisions that touch both the broker and
 * the database — a stream bound or closed, a heartbeat's revival, a GC
 * sweep — so that their database writes land in the order the broker took
 * them. It is never held on the relay's path. Lock order: life_mu, then
 * the broker's or the database's lock.
 */
#ifndef MCPD_SERVER_H
#define MCPD_SERVER_H

#include "auth.h"
#include "broker.h"
#include "config.h"
#include "db.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

struct accesslog;
struct housekeeper;
struct metrics;
struct routes;
struct usage;

struct server {
    struct server_config cfg;
    struct db *db;
    struct auth *auth;
    struct broker *broker;
    struct routes *routes;
    struct usage *usage;
    struct housekeeper *hk;
    struct metrics *metrics;
    struct accesslog *access; /* NULL: --access-log off */
    struct MHD_Daemon *mhd;
    int listen_fd; /* mcpd's own: http.c's thread accepts */
    pthread_t accept_thread;
    atomic_uint open_conns; /* connections open, counted by http.c */
    unsigned int max_conns; /* the cap */
    int port;               /* the port bound */
    atomic_bool stopping;   /* shutdown has begun */
    pthread_mutex_t life_mu;
    char *tls_cert; /* PEM text, when serving HTTPS */
    char *tls_key;
    /* Connections by id, for the housekeeper's watch (http.c). */
    pthread_mutex_t watch_mu;
    struct conn *conns;
    uint64_t next_conn_id;
};

/* Opens the database, marks every virtual row inactive until its
 * publisher binds a stream again, starts the housekeeper and the HTTP
 * daemon. 0, or -1 with the reason logged and nothing left running. */
int server_start(struct server *srv, const struct server_config *cfg);

/* SIGHUP (main thread): opens the access log file again. */
void server_reopen_logs(struct server *srv);

/* Fails every waiting caller, ends every stream, stops the daemon and the
 * housekeeper, writes the usage counts and the tokens' last uses, marks
 * the rows inactive and frees everything. */
void server_stop(struct server *srv);
/* Writes the usage counts and the tokens' last uses gathered in memory;
 * again: a failure keeps them for the next call (the housekeeper's). */
void server_flush_counts(struct server *srv, bool again);

#endif
