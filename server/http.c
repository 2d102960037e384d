/*
 * http.c - libmicrohttpd glue: per-request context, body collection with a
 * cap, authentication, routing, JSON replies, suspension bookkeeping.
 *
 * Route handlers run once the whole body has arrived. A handler either
 * replies at once or parks the request (suspends it) and the relay resumes
 * it later, when MHD calls on_request again and relay_resume() replies.
 */
#include "log.h"
#include "protocol.h"
#include "server.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the path segment [s, e) into out when it fits. */
static bool take_param(struct route_match *m, const char *s, size_t n)
{
    if (n == 0 || n >= sizeof m->param || memchr(s, '/', n))
        return false;
    memcpy(m->param, s, n);
    m->param[n] = '\0';
    return true;
}

void http_match_route(const char *url, struct route_match *m)
{
    memset(m, 0, sizeof *m);
    static const char llms[] = MCP_ROUTE_LLMS "/";
    static const char task[] = MCP_ROUTE_TASK_PREFIX;
    if (strcmp(url, MCP_ROUTE_HEALTHZ) == 0) {
        m->route = R_HEALTHZ;
        m->method = "GET";
    } else if (strcmp(url, MCP_ROUTE_LLMS) == 0) {
        m->route = R_LIST;
        m->method = "GET";
    } else if (strcmp(url, MCP_ROUTE_REGISTER) == 0) {
        m->route = R_REGISTER;
        m->method = "POST";
    } else if (strcmp(url, MCP_ROUTE_STREAM) == 0) {
        m->route = R_STREAM;
        m->method = "GET";
    } else if (strcmp(url, MCP_ROUTE_HEARTBEAT) == 0) {
        m->route = R_HEARTBEAT;
        m->method = "POST";
    } else if (strcmp(url, MCP_ROUTE_OPENAI_CHAT) == 0) {
        m->route = R_OPENAI_CHAT;
        m->method = "POST";
    } else if (strcmp(url, MCP_ROUTE_OPENAI_MODELS) == 0) {
        m->route = R_OPENAI_MODELS;
        m->method = "GET";
    } else if (strncmp(url, task, sizeof task - 1) == 0) {
        const char *id = url + sizeof task - 1;
        const char *slash = strchr(id, '/');
        if (slash && strcmp(slash, "/result") == 0) {
            m->route = R_RESULT;
            m->method = "POST";
            m->bad_param = !take_param(m, id, (size_t)(slash - id));
        }
    } else if (strncmp(url, llms, sizeof llms - 1) == 0) {
        const char *name = url + sizeof llms - 1;
        const char *slash = strchr(name, '/');
        if (!slash) {
            m->route = R_GET;
            m->method = "GET";
            m->bad_param = !take_param(m, name, strlen(name));
        } else if (strcmp(slash, "/infer") == 0) {
            m->route = R_INFER;
            m->method = "POST";
            m->bad_param = !take_param(m, name, (size_t)(slash - name));
        }
    }
}

static const char *openai_type(unsigned status)
{
    switch (status) {
    case 400:
    case 413:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 404:
        return "not_found_error";
    case 405:
        return "invalid_request_error";
    case 409:
        return "conflict_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *openai_code(unsigned status)
{
    switch (status) {
    case 401:
        return "invalid_api_key";
    case 404:
        return "model_not_found";
    case 413:
        return "request_too_large";
    case 502:
        return "publisher_error";
    case 503:
        return "publisher_unavailable";
    case 504:
        return "timeout";
    default:
        return NULL;
    }
}

static enum MHD_Result queue(struct req *r, unsigned status, const char *body, size_t len,
                             const char *ctype, int retry_after, const char *allow)
{
    if (r->lc) {
        caller_reply(r, status, ctype, body, len, retry_after, allow);
        return MHD_YES;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result http_reply_json(struct req *r, unsigned status, const char *json, size_t len)
{
    return queue(r, status, json, len, "application/json", 0, NULL);
}

/* 200 {"ok":true} answers every result post and health check: one response
 * object, made once and queued on any number of connections. */
static const char OK_BODY[] = "{\"ok\":true}";

int http_responses_init(struct server *srv)
{
    srv->resp_ok = MHD_create_response_from_buffer(sizeof OK_BODY - 1, (void *)OK_BODY,
                                                   MHD_RESPMEM_PERSISTENT);
    if (!srv->resp_ok)
        return -1;
    MHD_add_response_header(srv->resp_ok, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return 0;
}

void http_responses_free(struct server *srv)
{
    if (srv->resp_ok)
        MHD_destroy_response(srv->resp_ok);
    srv->resp_ok = NULL;
}

enum MHD_Result http_reply_ok(struct req *r)
{
    if (r->lc)
        return queue(r, 200, OK_BODY, sizeof OK_BODY - 1, "application/json", 0, NULL);
    return MHD_queue_response(r->conn, 200, r->srv->resp_ok);
}

static enum MHD_Result reply_error_full(struct req *r, unsigned status, int retry_after,
                                        const char *allow, const char *msg)
{
    json_t *o;
    if (r->openai) {
        const char *code = openai_code(status);
        o = json_pack("{s:{s:s,s:s,s:o}}", "error", "message", msg, "type", openai_type(status),
                      "code", code ? json_string(code) : json_null());
    } else {
        o = json_pack("{s:s}", "error", msg);
    }
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    enum MHD_Result rc;
    if (text)
        rc = queue(r, status, text, strlen(text), "application/json", retry_after, allow);
    else
        rc = queue(r, status, "{\"error\":\"internal error\"}", 26, "application/json", retry_after,
                   allow);
    free(text);
    return rc;
}

enum MHD_Result http_reply_error(struct req *r, unsigned status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply_error_full(r, status, 0, NULL, msg);
}

enum MHD_Result http_reply_unavailable(struct req *r, int retry_after, const char *msg)
{
    return reply_error_full(r, 503, retry_after > 0 ? retry_after : 1, NULL, msg);
}

void http_suspend(struct req *r)
{
    struct conn_ctx *cc = r->cc;
    r->suspended = true;
    r->was_suspended = true;
    if (r->lc)
        return; /* caller.c watches its own sockets */
    if (cc) {
        cc->waiting = r;
        if (!cc->watched)
            housekeeper_watch(r->srv, cc);
    }
    MHD_suspend_connection(r->conn);
}

/* Resumes decided while server.mu is held are carried out by
 * server_unlock(), after the mutex is released: MHD_resume_connection()
 * takes libmicrohttpd's own lock and wakes the connection's worker, and
 * doing that inside server.mu made every other worker queue behind the
 * wake-up. A connection stays suspended, and so valid, until its resume
 * runs; the `suspended` flag, cleared under server.mu, keeps it to one. */
#define DEFERRED_RESUMES_MAX 64
static _Thread_local struct MHD_Connection *deferred_resumes[DEFERRED_RESUMES_MAX];
static _Thread_local unsigned int n_deferred_resumes;

void server_lock(struct server *srv)
{
    pthread_mutex_lock(&srv->mu);
}

void server_unlock(struct server *srv)
{
    caller_run_deliveries();
    unsigned int n = n_deferred_resumes;
    struct MHD_Connection *conns[DEFERRED_RESUMES_MAX];
    memcpy(conns, deferred_resumes, n * sizeof conns[0]);
    n_deferred_resumes = 0;
    struct stream *flushes[STREAM_DEFERRED_MAX];
    unsigned int nf = stream_take_deferred(flushes);
    pthread_mutex_unlock(&srv->mu);
    for (unsigned int i = 0; i < n; i++)
        MHD_resume_connection(conns[i]);
    stream_flush_deferred(srv, flushes, nf);
    caller_flush_deferred();
}

void http_resume(struct req *r)
{
    if (!r->suspended)
        return;
    r->suspended = false;
    if (r->lc) {
        caller_resume(r);
        return;
    }
    if (n_deferred_resumes < DEFERRED_RESUMES_MAX)
        deferred_resumes[n_deferred_resumes++] = r->conn;
    else
        MHD_resume_connection(r->conn); /* a burst (shutdown): resume at once */
}

ssize_t http_sse_pull(struct req *r, struct buf *queued, bool ended, char *out, size_t max)
{
    if (r->peer_gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (queued->len > 0) {
        size_t k = queued->len < max ? queued->len : max;
        memcpy(out, queued->data, k);
        buf_consume(queued, k);
        return (ssize_t)k;
    }
    if (ended || atomic_load(&r->srv->stopping))
        return MHD_CONTENT_READER_END_OF_STREAM;
    http_suspend(r);
    return 0;
}

struct MHD_Response *http_sse_response(MHD_ContentReaderCallback reader, struct req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK_SIZE, reader, r, NULL);
    if (!resp)
        return NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return resp;
}

static enum MHD_Result run_route(struct req *r)
{
    switch ((enum route)r->route) {
    case R_HEALTHZ:
        return http_reply_ok(r);
    case R_LIST:
        return provider_list(r);
    case R_GET:
        return provider_get(r, r->param);
    case R_REGISTER:
        return provider_register(r);
    case R_STREAM:
        return stream_open(r);
    case R_HEARTBEAT:
        return provider_heartbeat(r);
    case R_RESULT:
        return relay_result(r, r->param);
    case R_INFER:
        return relay_infer(r, r->param);
    case R_OPENAI_CHAT:
        return relay_openai_chat(r);
    case R_OPENAI_MODELS:
        return provider_models(r);
    case R_NONE:
        break;
    }
    return http_reply_error(r, 404, "no such route");
}

unsigned http_check_head(struct server *srv, const char *url, const char *method,
                         const char *authorization, long long content_length, struct route_match *m,
                         char owner[DB_OWNER_MAX], char *msg, size_t msglen)
{
    bool api = strncmp(url, "/api/", 5) == 0 || strncmp(url, "/v1/", 4) == 0;
    if (api) {
        int rc = auth_check(srv->auth, authorization, owner);
        if (rc == DB_ERROR) {
            snprintf(msg, msglen, "cannot check the token: database error");
            return 500;
        }
        if (rc != DB_OK) {
            snprintf(msg, msglen, "%s",
                     authorization ? "token not recognised"
                                   : "missing Authorization: Bearer <token>");
            return 401;
        }
    }
    http_match_route(url, m);
    if (m->route == R_NONE) {
        snprintf(msg, msglen, "no such route: %s", url);
        return 404;
    }
    if (strcmp(method, m->method) != 0) {
        snprintf(msg, msglen, "method not allowed");
        return 405;
    }
    if (m->bad_param) {
        snprintf(msg, msglen, "no such resource: %s", url);
        return 404;
    }
    if (content_length > srv->cfg.max_body) {
        snprintf(msg, msglen, "request body larger than %lld bytes", (long long)srv->cfg.max_body);
        return 413;
    }
    return 0;
}

enum MHD_Result http_reply_refused(struct req *r, unsigned status, const char *allow,
                                   const char *msg)
{
    return reply_error_full(r, status, 0, allow, msg);
}

/* The checks that need no body. Returns MHD_YES with nothing queued when
 * the request may proceed. */
static enum MHD_Result precheck(struct req *r, const char *url, const char *method,
                                struct route_match *m, bool *replied)
{
    r->openai = strncmp(url, "/v1/", 4) == 0;
    const char *h =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    char msg[512];
    unsigned status = http_check_head(r->srv, url, method, h, cl ? strtoll(cl, NULL, 10) : -1, m,
                                      r->owner, msg, sizeof msg);
    *replied = status != 0;
    if (!status)
        return MHD_YES;
    return http_reply_refused(r, status, status == 405 ? m->method : NULL, msg);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct server *srv = cls;
    struct req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = srv;
        r->conn = conn;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->cc = ci ? ci->socket_context : NULL;
        buf_init(&r->body, (size_t)srv->cfg.max_body);
        buf_init(&r->sse, CALLER_BACKLOG_MAX);
        *con_cls = r;
        struct route_match m;
        bool replied;
        enum MHD_Result rc = precheck(r, url, method, &m, &replied);
        r->route = m.route;
        snprintf(r->param, sizeof r->param, "%s", m.param);
        if (replied)
            r->started = true;
        return rc;
    }
    if (*upload_data_size) {
        if (!r->too_large && buf_append(&r->body, upload_data, *upload_data_size) < 0)
            r->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->started)
        return relay_resume(r);
    r->started = true;
    if (r->too_large)
        return http_reply_error(r, 413, "request body larger than %lld bytes",
                                (long long)srv->cfg.max_body);
    return run_route(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    struct server *srv = cls;
    struct req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    /* Nothing but this connection's own thread ever saw a request that was
     * never suspended, parked nor made to wait: no lock needed to free it. */
    if (r->was_suspended || r->stream || r->wait != WAIT_NONE) {
        server_lock(srv);
        if (r->cc && r->cc->waiting == r)
            r->cc->waiting = NULL;
        if (r->stream)
            stream_closed(r);
        if (r->wait == WAIT_TASK)
            relay_request_done(r);
        else if (r->wait == WAIT_WAKE)
            wake_forget(r);
        server_unlock(srv);
    }
    buf_release(&r->body);
    buf_release(&r->sse);
    free(r);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_ctx *cc = calloc(1, sizeof *cc);
        if (!cc)
            return;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        cc->fd = ci ? ci->connect_fd : -1;
        server_lock(srv);
        cc->id = ++srv->next_conn_id;
        HASH_ADD(hh, srv->conns, id, sizeof cc->id, cc);
        server_unlock(srv);
        *socket_context = cc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn_ctx *cc = *socket_context;
        if (!cc)
            return;
        server_lock(srv);
        if (cc->watched)
            housekeeper_unwatch(srv, cc);
        HASH_DEL(srv->conns, cc);
        server_unlock(srv);
        free(cc);
        *socket_context = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

/* Per-connection memory pool: request headers and the read/write buffers
 * live here. libmicrohttpd's default (32 KiB) would dominate the cost of an
 * idle control stream; 8 KiB keeps it near 10 KiB in all, and caps request
 * headers at about 7 KB (larger ones get 431). Bodies stream through it. */
#define HTTP_CONNECTION_MEMORY (8 * 1024)

struct MHD_Daemon *http_start(struct server *srv, unsigned int threads, unsigned int conn_limit)
{
    /* No listening socket: acceptor.c accepts and hands connections over. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                         MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        srv, MHD_OPTION_CONNECTION_LIMIT, conn_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)120, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
        MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0, MHD_OPTION_END);
}
