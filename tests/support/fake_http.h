/*
 * fake_http.h - what the fake HTTP peers in tests share: a libmicrohttpd
 * daemon on 127.0.0.1 port 0, request bodies collected with a cap, JSON
 * replies, peer-gone checks, and absolute deadlines for condition waits.
 */
#ifndef TEST_FAKE_HTTP_H
#define TEST_FAKE_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Starts a thread-per-connection daemon on 127.0.0.1 with an OS-chosen port
 * (written to *port). Bodies are collected by fake_http_collect() and freed
 * by the daemon's completion callback. NULL on failure. */
struct MHD_Daemon *fake_http_start(MHD_AccessHandlerCallback handler, void *cls, int *port);

/* In an access handler: collects the body (at most cap bytes; the rest is
 * dropped). Returns NULL while the body is still arriving (return MHD_YES),
 * else the complete NUL-terminated body ("" when none). */
const char *fake_http_collect(void **con_cls, const char *upload, size_t *upload_size, size_t cap);

/* Queues a reply with the given content type. */
enum MHD_Result fake_http_reply(struct MHD_Connection *c, unsigned status, const char *ctype,
                                const char *body);
/* True when the peer has closed its side of the connection. */
bool fake_http_peer_gone(struct MHD_Connection *c);

/* *ts = now + timeout_ms on CLOCK_REALTIME, for pthread_cond_timedwait(). */
void fake_http_deadline(struct timespec *ts, int timeout_ms);
void fake_http_sleep_ms(int ms);

#endif
