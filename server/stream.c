/*
 * stream.c - control streams: GET _provider-stream binds a provider session
 * to a long-lived SSE response that carries hello, task, cancel and ping
 * frames. The response's body reader pulls frames from the broker's queue
 * and parks (suspends the connection) when there are none.
 */
#include "clock.h"
#include "log.h"
#include "routes.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <string.h>

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct req *r = cls;
    ssize_t n = broker_stream_read(r->srv->broker, r->stream, out, max);
    if (n == BROKER_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

enum MHD_Result stream_open(struct req *r)
{
    struct server *srv = r->srv;
    const char *sid = http_session_header(r);
    if (!sid)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    int rc = db_session_check(srv->db, sid, r->owner);
    if (rc == DB_NOT_FOUND)
        return http_reply_error(r, 404, "no such provider session");
    if (rc != DB_OK)
        return http_reply_error(r, 500, "database error");
    snprintf(r->session, sizeof r->session, "%s", sid);
    struct MHD_Response *resp = http_sse_response(stream_read, r);
    if (!resp)
        return MHD_NO;
    /* Bound and revived together, so a close or a GC batch in between
     * cannot leave the rows of a live stream inactive. */
    pthread_mutex_lock(&srv->life_mu);
    r->stream =
        broker_stream_open(srv->broker, sid, r->owner, r->token_hash, &r->ep, clock_mono_ms());
    int revived = 0;
    if (r->stream && db_session_revive(srv->db, sid, clock_wall_ms(), &revived) != DB_OK)
        log_error("session %.8s…: cannot revive its rows: %s", sid, db_errmsg(srv->db));
    pthread_mutex_unlock(&srv->life_mu);
    if (!r->stream) {
        MHD_destroy_response(resp);
        return http_reply_error(r, 503, "server shutting down");
    }
    log_info("session %.8s… of '%s': control stream open%s", sid, r->owner,
             revived ? " (rows active again)" : "");
    /* Idle, a stream is suspended and never times out; with frames
     * waiting, a publisher that takes nothing for this long is gone. */
    int64_t stall_ms = srv->cfg.ping_interval_ms / 2;
    stall_ms = stall_ms < 5000 ? 5000 : stall_ms > 30000 ? 30000 : stall_ms;
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int)(stall_ms / 1000));
    /* A publisher that vanished without closing leaves pings unacknowledged:
     * past three intervals the kernel drops the connection. A socket
     * option, not I/O: libmicrohttpd still does every read and write. */
    if (r->cc && r->cc->fd >= 0) {
        int one = 1;
        int64_t ping_ms = srv->cfg.ping_interval_ms;
        unsigned int user_timeout = (unsigned int)(ping_ms * 3 > 10000 ? ping_ms * 3 : 10000);
        setsockopt(r->cc->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        setsockopt(r->cc->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
    }
    enum MHD_Result ret = http_queue(r, 200, resp, 0);
    MHD_destroy_response(resp);
    return ret;
}

void stream_closed(struct req *r)
{
    struct server *srv = r->srv;
    char sid[BROKER_ID_LEN];
    pthread_mutex_lock(&srv->life_mu);
    bool deactivate = broker_stream_closed(srv->broker, r->stream, sid);
    r->stream = NULL;
    int changed = 0;
    if (deactivate && db_session_deactivate(srv->db, sid, clock_wall_ms(), &changed) != DB_OK)
        log_error("session %.8s…: cannot mark its rows inactive: %s", sid, db_errmsg(srv->db));
    pthread_mutex_unlock(&srv->life_mu);
    log_info("session %.8s…: control stream closed%s", sid,
             changed ? ", its rows are inactive" : "");
}
