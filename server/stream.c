/*
 * stream.c - control streams: GET _provider-stream binds a provider session
 * to a long-lived SSE response that carries hello, task, cancel and ping
 * frames. After its hello, a stream is parked: a suspended MHD connection
 * whose socket dispatch() writes frames to directly (see struct stream in
 * server.h).
 */
#include "clock.h"
#include "log.h"
#include "protocol.h"
#include "server.h"
#include "sse.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* A stream whose publisher does not read is cut off past this backlog. */
#define STREAM_BACKLOG_MAX (8u << 20)

/* From now on the socket is ours to write (server.mu held): MHD has sent
 * everything it had and keeps the connection suspended. Frames must not sit
 * in a cork or behind Nagle's algorithm. */
static void park(struct stream *st)
{
    int one = 1, zero = 0;
    st->fd = st->req->cc->fd;
    st->parked = true;
    buf_release(&st->out);
    setsockopt(st->fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    setsockopt(st->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static bool unsent_empty(struct stream *st)
{
    pthread_mutex_lock(&st->wmu);
    bool empty = st->unsent.len == 0;
    pthread_mutex_unlock(&st->wmu);
    return empty;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct req *r = cls;
    server_lock(r->srv);
    struct stream *st = r->stream;
    ssize_t n;
    if (!st || st->broken || r->peer_gone) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (!st->parked) {
        n = http_sse_pull(r, &st->out, st->closing, out, max);
        if (n == 0 && r->cc && r->cc->fd >= 0)
            park(st);
    } else if (!unsent_empty(st)) {
        /* Resumed in the middle of a chunk (shutdown): cut it off. */
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (st->closing || atomic_load(&r->srv->stopping)) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        http_suspend(r);
        n = 0;
    }
    server_unlock(r->srv);
    return n;
}

/* Ends a stream: what is queued goes out, then the response finishes. */
static void stream_end(struct stream *st)
{
    pthread_mutex_lock(&st->wmu);
    st->closing = true;
    bool empty = st->unsent.len == 0;
    pthread_mutex_unlock(&st->wmu);
    if (!st->parked || empty)
        http_resume(st->req);
}

/* Cuts a parked stream off: its connection closes, and with it the session's
 * tasks fail (stream_closed). */
static void stream_break(struct stream *st)
{
    pthread_mutex_lock(&st->wmu);
    st->broken = true;
    pthread_mutex_unlock(&st->wmu);
    http_resume(st->req);
}

static void stream_unref(struct stream *st)
{
    if (atomic_fetch_sub(&st->refs, 1) != 1)
        return;
    buf_release(&st->out);
    buf_release(&st->unsent);
    pthread_mutex_destroy(&st->wmu);
    free(st);
}

static bool would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

enum flush_result { FLUSH_WAIT, FLUSH_DONE, FLUSH_CLOSE, FLUSH_FAILED };

/* Sends what waits in `unsent` (st->wmu held). FLUSH_CLOSE: everything is
 * out and the stream is ending; FLUSH_FAILED: the socket is broken. */
static enum flush_result flush_unsent(struct server *srv, struct stream *st)
{
    st->flush_queued = false;
    if (st->dead || st->broken)
        return FLUSH_WAIT;
    while (st->unsent.len > 0) {
        ssize_t n = send(st->fd, st->unsent.data, st->unsent.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (!would_block(errno))
                return FLUSH_FAILED;
            if (!st->want_out) {
                st->want_out = true;
                housekeeper_want_write(srv, st->req->cc, true);
            }
            return FLUSH_WAIT;
        }
        buf_consume(&st->unsent, (size_t)n);
    }
    if (st->want_out) {
        st->want_out = false;
        housekeeper_want_write(srv, st->req->cc, false);
    }
    return st->closing ? FLUSH_CLOSE : FLUSH_DONE;
}

/* What a flush decided that needs server.mu (held). */
static void flush_outcome(struct stream *st, enum flush_result fr)
{
    if (st->dead)
        return;
    if (fr == FLUSH_FAILED)
        stream_break(st);
    else if (fr == FLUSH_CLOSE)
        http_resume(st->req);
}

/* Frames are written after server.mu is released (server_unlock): a send
 * on loopback runs the receiver's TCP processing too, and holding the lock
 * through it made the other workers wait. Each queued stream holds a
 * reference until its flush ran. */
#define DEFERRED_FLUSHES_MAX STREAM_DEFERRED_MAX
static _Thread_local struct stream *deferred_flushes[DEFERRED_FLUSHES_MAX];
static _Thread_local unsigned int n_deferred_flushes;

unsigned int stream_take_deferred(struct stream **out)
{
    unsigned int n = n_deferred_flushes;
    memcpy(out, deferred_flushes, n * sizeof out[0]);
    n_deferred_flushes = 0;
    return n;
}

void stream_flush_deferred(struct server *srv, struct stream **sts, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        struct stream *st = sts[i];
        pthread_mutex_lock(&st->wmu);
        enum flush_result fr = flush_unsent(srv, st);
        pthread_mutex_unlock(&st->wmu);
        if (fr == FLUSH_FAILED || fr == FLUSH_CLOSE) {
            server_lock(srv);
            flush_outcome(st, fr);
            server_unlock(srv);
        }
        stream_unref(st);
    }
}

/* Queues one frame on a parked stream as an HTTP chunk (server.mu held);
 * it goes out in server_unlock(). */
static int stream_write(struct server *srv, struct stream *st, const char *frame, size_t len)
{
    char head[24];
    int hlen = snprintf(head, sizeof head, "%zx\r\n", len);
    pthread_mutex_lock(&st->wmu);
    int rc = buf_reserve(&st->unsent, (size_t)hlen + len + 2);
    if (rc == 0) {
        buf_append(&st->unsent, head, (size_t)hlen);
        buf_append(&st->unsent, frame, len);
        buf_append(&st->unsent, "\r\n", 2);
    }
    bool queue = rc == 0 && !st->flush_queued;
    if (queue)
        st->flush_queued = true;
    enum flush_result fr = FLUSH_DONE;
    if (queue && n_deferred_flushes == DEFERRED_FLUSHES_MAX) {
        fr = flush_unsent(srv, st); /* a burst (pings): write now */
        queue = false;
    }
    pthread_mutex_unlock(&st->wmu);
    if (rc < 0) {
        log_warn("session %.8s…: stream backlog over %u bytes, closing it",
                 st->session ? st->session->id : "?", STREAM_BACKLOG_MAX);
        stream_break(st);
        return -1;
    }
    flush_outcome(st, fr);
    if (queue) {
        atomic_fetch_add(&st->refs, 1);
        deferred_flushes[n_deferred_flushes++] = st;
    }
    return 0;
}

void stream_flush(struct stream *st)
{
    if (!st->parked || !st->req->suspended)
        return;
    pthread_mutex_lock(&st->wmu);
    enum flush_result fr = flush_unsent(st->req->srv, st);
    pthread_mutex_unlock(&st->wmu);
    flush_outcome(st, fr);
}

static void set_stream_socket_options(struct req *r, int64_t ping_ms)
{
    if (!r->cc || r->cc->fd < 0)
        return;
    int one = 1;
    /* Unacknowledged pings past three intervals make the kernel drop a
     * stream whose publisher vanished without closing it. */
    unsigned int user_timeout = (unsigned int)(ping_ms * 3 > 10000 ? ping_ms * 3 : 10000);
    setsockopt(r->cc->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(r->cc->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

enum MHD_Result stream_open(struct req *r)
{
    struct server *srv = r->srv;
    const char *sid = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MCP_HEADER_SESSION);
    if (!sid || !*sid)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    if (strlen(sid) >= DB_SESSION_ID_LEN)
        return http_reply_error(r, 404, "no such provider session");
    int rc = db_session_check(srv->db, sid, r->owner);
    if (rc == DB_NOT_FOUND)
        return http_reply_error(r, 404, "no such provider session");
    if (rc != DB_OK)
        return http_reply_error(r, 500, "database error");

    struct stream *st = calloc(1, sizeof *st);
    if (!st)
        return http_reply_error(r, 500, "out of memory");
    buf_init(&st->out, STREAM_BACKLOG_MAX);
    buf_init(&st->unsent, STREAM_BACKLOG_MAX);
    pthread_mutex_init(&st->wmu, NULL);
    atomic_init(&st->refs, 1);
    st->fd = -1;
    st->req = r;
    st->next_ping = clock_mono_ms() + srv->cfg.ping_interval_ms;
    char hello[256];
    int hlen =
        snprintf(hello, sizeof hello,
                 "{\"providerSessionId\":\"%s\",\"heartbeatIntervalSeconds\":%lld,"
                 "\"pingIntervalSeconds\":%lld,\"heartbeatIntervalMs\":%lld,"
                 "\"pingIntervalMs\":%lld}",
                 sid, (long long)((srv->cfg.heartbeat_interval_ms + 999) / 1000),
                 (long long)((srv->cfg.ping_interval_ms + 999) / 1000),
                 (long long)srv->cfg.heartbeat_interval_ms, (long long)srv->cfg.ping_interval_ms);
    sse_encode_event(&st->out, MCP_EVENT_HELLO, NULL, hello, (size_t)hlen);

    struct MHD_Response *resp = http_sse_response(stream_read, r);
    if (!resp) {
        stream_unref(st);
        return http_reply_error(r, 500, "out of memory");
    }

    server_lock(srv);
    if (atomic_load(&srv->stopping)) {
        server_unlock(srv);
        MHD_destroy_response(resp);
        stream_unref(st);
        return http_reply_unavailable(r, 5, "server shutting down");
    }
    struct session *s;
    HASH_FIND_STR(srv->sessions, sid, s);
    if (!s) {
        s = calloc(1, sizeof *s);
        snprintf(s->id, sizeof s->id, "%s", sid);
        snprintf(s->owner, sizeof s->owner, "%s", r->owner);
        HASH_ADD_STR(srv->sessions, id, s);
    }
    if (s->stream) {
        log_info("session %.8s…: a new stream replaces the open one", sid);
        struct stream *old = s->stream;
        old->session = NULL;
        stream_end(old);
        relay_session_lost(srv, s, "publisher reconnected");
    }
    s->stream = st;
    st->session = s;
    r->stream = st;
    server_unlock(srv);

    set_stream_socket_options(r, srv->cfg.ping_interval_ms);
    log_info("session %.8s… of '%s': stream open", sid, r->owner);
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

int dispatch(struct server *srv, struct session *s, const char *frame, size_t len)
{
    (void)srv;
    struct stream *st = s ? s->stream : NULL;
    if (!st || st->closing || st->broken)
        return -1;
    if (st->parked)
        return stream_write(srv, st, frame, len);
    if (buf_append(&st->out, frame, len) < 0) {
        log_warn("session %.8s…: stream backlog over %u bytes, closing it", s->id,
                 STREAM_BACKLOG_MAX);
        stream_end(st);
        return -1;
    }
    http_resume(st->req);
    return 0;
}

void stream_closed(struct req *r)
{
    struct server *srv = r->srv;
    struct stream *st = r->stream;
    r->stream = NULL;
    struct session *s = st->session;
    if (s) {
        s->stream = NULL;
        int changed = 0;
        db_session_deactivate(srv->db, s->id, clock_wall_ms(), &changed);
        log_info("session %.8s…: stream closed, %d row(s) inactive", s->id, changed);
        relay_session_lost(srv, s, "publisher disconnected");
        HASH_DEL(srv->sessions, s);
        free(s);
    }
    /* MHD closes the socket after this returns: no flush may touch it. */
    pthread_mutex_lock(&st->wmu);
    st->dead = true;
    pthread_mutex_unlock(&st->wmu);
    stream_unref(st);
}

bool stream_ping_due(struct server *srv, int64_t now, int max)
{
    static const char ping[] = ": ping\n\n";
    struct session *s, *tmp;
    HASH_ITER(hh, srv->sessions, s, tmp)
    {
        struct stream *st = s->stream;
        if (st && st->next_ping <= now) {
            if (max-- == 0)
                return true;
            st->next_ping = now + srv->cfg.ping_interval_ms;
            dispatch(srv, s, ping, sizeof ping - 1);
        }
    }
    return false;
}

void stream_close_all(struct server *srv)
{
    struct session *s, *tmp;
    HASH_ITER(hh, srv->sessions, s, tmp)
    {
        if (s->stream)
            stream_end(s->stream);
    }
}
