/*
 * housekeeper.h - mcpd's background thread: the broker's timers (pings,
 * timeouts), the GC sweep, the revocation sweep, and the watch on every
 * connection's socket for a peer that went away (libmicrohttpd does not
 * poll suspended connections, so without it a vanished caller or
 * publisher would go unseen until its next write).
 */
#ifndef MCPD_HOUSEKEEPER_H
#define MCPD_HOUSEKEEPER_H

#include <stdint.h>

struct server;
struct housekeeper;

/* Creates the watch set; the thread starts with housekeeper_run(). NULL on
 * failure. */
struct housekeeper *housekeeper_new(struct server *srv);
/* Starts the thread. 0 or -1. */
int housekeeper_run(struct housekeeper *hk);
/* Stops the thread (if running); the watch set stays usable. */
void housekeeper_stop(struct housekeeper *hk);
/* Frees it once no HTTP worker can call in. NULL is a no-op. */
void housekeeper_free(struct housekeeper *hk);

/* Any thread: watch (or stop watching) a connection's socket. */
void housekeeper_watch(struct housekeeper *hk, int fd, uint64_t conn_id);
void housekeeper_unwatch(struct housekeeper *hk, int fd);
/* Reports the connection's close again if it has already happened: for a
 * request that became a streamed upload after the first report. */
void housekeeper_rearm(struct housekeeper *hk, int fd, uint64_t conn_id);

#endif
