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
    int fd = st->req->cc->fd;
    st->parked = true;
    buf_release(&st->out);
    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
    } else if (st->unsent.len > 0) {
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
    st->closing = true;
    if (!st->parked || st->unsent.len == 0)
        http_resume(st->req);
}

/* Cuts a parked stream off: its connection closes, and with it the session's
 * tasks fail (stream_closed). */
static void stream_break(struct stream *st)
{
    st->broken = true;
    http_resume(st->req);
}

static bool would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* Writes one frame to a parked stream as an HTTP chunk (server.mu held). */
static int stream_write(struct server *srv, struct stream *st, const char *frame, size_t len)
{
    char head[24];
    int hlen = snprintf(head, sizeof head, "%zx\r\n", len);
    struct iovec iov[3] = {{head, (size_t)hlen}, {(void *)frame, len}, {(void *)"\r\n", 2}};
    size_t total = (size_t)hlen + len + 2, sent = 0;
    if (st->unsent.len == 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
        ssize_t n = sendmsg(st->req->cc->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && !would_block(errno)) {
            stream_break(st);
            return -1;
        }
        sent = n > 0 ? (size_t)n : 0;
        if (sent == total)
            return 0;
    }
    /* Queue what the socket did not take, after anything already waiting. */
    for (int i = 0; i < 3; i++) {
        size_t skip = sent < iov[i].iov_len ? sent : iov[i].iov_len;
        sent -= skip;
        if (buf_append(&st->unsent, (char *)iov[i].iov_base + skip, iov[i].iov_len - skip) < 0) {
            log_warn("session %.8s…: stream backlog over %u bytes, closing it",
                     st->session ? st->session->id : "?", STREAM_BACKLOG_MAX);
            stream_break(st);
            return -1;
        }
    }
    housekeeper_want_write(srv, st->req->cc, true);
    return 0;
}

void stream_flush(struct stream *st)
{
    if (!st->parked || st->broken || !st->req->suspended)
        return;
    while (st->unsent.len > 0) {
        ssize_t n =
            send(st->req->cc->fd, st->unsent.data, st->unsent.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (would_block(errno))
                return;
            stream_break(st);
            return;
        }
        buf_consume(&st->unsent, (size_t)n);
    }
    housekeeper_want_write(st->req->srv, st->req->cc, false);
    if (st->closing)
        http_resume(st->req);
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
        buf_release(&st->out);
        free(st);
        return http_reply_error(r, 500, "out of memory");
    }

    server_lock(srv);
    if (atomic_load(&srv->stopping)) {
        server_unlock(srv);
        MHD_destroy_response(resp);
        buf_release(&st->out);
        free(st);
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
    buf_release(&st->out);
    buf_release(&st->unsent);
    free(st);
}

void stream_ping_due(struct server *srv, int64_t now)
{
    static const char ping[] = ": ping\n\n";
    struct session *s, *tmp;
    HASH_ITER(hh, srv->sessions, s, tmp)
    {
        struct stream *st = s->stream;
        if (st && st->next_ping <= now) {
            st->next_ping = now + srv->cfg.ping_interval_ms;
            dispatch(srv, s, ping, sizeof ping - 1);
        }
    }
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
