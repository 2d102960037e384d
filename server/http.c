/*
 * http.c - libmicrohttpd glue: per-request context, the checks before a
 * body is read, body collection with a cap, replies, and the endpoints
 * through which the broker suspends and resumes requests.
 *
 * A route handler runs once the whole body has arrived. It replies at once,
 * or starts a broker call whose endpoint parks (suspends) the request; when
 * the broker wakes it, libmicrohttpd calls on_request again and
 * relay_resume() replies. Streamed result posts are the exception: their
 * body is handed to the relay piece by piece as it arrives.
 */
#include "clock.h"
#include "housekeeper.h"
#include "http.h"
#include "log.h"
#include "routes.h"

#include <jansson.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Retry-After (seconds) on GET /readyz once shutdown has begun. */
#define READYZ_RETRY_AFTER 5

/* ---- routes ---- */

const struct metrics_route http_routes[R_COUNT] = {
    [R_NONE] = {"unmatched", false},
    [R_HEALTHZ] = {MCP_ROUTE_HEALTHZ, false},
    [R_READYZ] = {MCP_ROUTE_READYZ, false},
    [R_LIST] = {MCP_ROUTE_LLMS, false},
    [R_GET] = {MCP_ROUTE_LLMS "/:name", false},
    [R_MEMBERS] = {MCP_ROUTE_LLMS "/:name/members", false},
    [R_REGISTER] = {MCP_ROUTE_REGISTER, false},
    [R_STREAM] = {MCP_ROUTE_STREAM, false},
    [R_HEARTBEAT] = {MCP_ROUTE_HEARTBEAT, false},
    [R_RESULT] = {MCP_ROUTE_TASK_PREFIX ":id/result", false},
    [R_RESULTS] = {MCP_ROUTE_RESULTS, false},
    [R_INFER] = {MCP_ROUTE_LLMS "/:name/infer", true},
    [R_OPENAI_CHAT] = {MCP_ROUTE_OPENAI_CHAT, true},
    [R_OPENAI_MODELS] = {MCP_ROUTE_OPENAI_MODELS, false},
    [R_OPENAI_MODEL] = {MCP_ROUTE_OPENAI_MODELS "/:id", false},
    [R_USAGE] = {MCP_ROUTE_USAGE, false},
    [R_OPENAI_COMPLETIONS] = {MCP_ROUTE_OPENAI_COMPLETIONS, true},
    [R_OPENAI_EMBEDDINGS] = {MCP_ROUTE_OPENAI_EMBEDDINGS, true},
    [R_OPENAI_RESPONSES] = {MCP_ROUTE_OPENAI_RESPONSES, true},
    [R_ANTHROPIC_MESSAGES] = {MCP_ROUTE_ANTHROPIC_MESSAGES, true},
    [R_PREFLIGHT] = {"preflight", false},
    [R_METRICS] = {MCP_ROUTE_METRICS, false},
};

/* Copies the path segment [s, s+n) into m->param when it fits. */
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
    static const struct {
        const char *path;
        enum route route;
        const char *method;
    } fixed[] = {
        {MCP_ROUTE_HEALTHZ, R_HEALTHZ, "GET"},
        {MCP_ROUTE_READYZ, R_READYZ, "GET"},
        {MCP_ROUTE_METRICS, R_METRICS, "GET"},
        {MCP_ROUTE_LLMS, R_LIST, "GET"},
        {MCP_ROUTE_REGISTER, R_REGISTER, "POST"},
        {MCP_ROUTE_STREAM, R_STREAM, "GET"},
        {MCP_ROUTE_HEARTBEAT, R_HEARTBEAT, "POST"},
        {MCP_ROUTE_RESULTS, R_RESULTS, "POST"},
        {MCP_ROUTE_OPENAI_CHAT, R_OPENAI_CHAT, "POST"},
        {MCP_ROUTE_OPENAI_MODELS, R_OPENAI_MODELS, "GET"},
        {MCP_ROUTE_OPENAI_COMPLETIONS, R_OPENAI_COMPLETIONS, "POST"},
        {MCP_ROUTE_OPENAI_EMBEDDINGS, R_OPENAI_EMBEDDINGS, "POST"},
        {MCP_ROUTE_OPENAI_RESPONSES, R_OPENAI_RESPONSES, "POST"},
        {MCP_ROUTE_ANTHROPIC_MESSAGES, R_ANTHROPIC_MESSAGES, "POST"},
        {MCP_ROUTE_USAGE, R_USAGE, "GET"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (strcmp(url, fixed[i].path) == 0) {
            m->route = fixed[i].route;
            m->method = fixed[i].method;
            return;
        }
    }
    static const char llms[] = MCP_ROUTE_LLMS "/";
    static const char task[] = MCP_ROUTE_TASK_PREFIX;
    static const char model[] = MCP_ROUTE_OPENAI_MODELS "/";
    if (strncmp(url, model, sizeof model - 1) == 0) {
        m->route = R_OPENAI_MODEL;
        m->method = "GET";
        m->bad_param = !take_param(m, url + sizeof model - 1, strlen(url + sizeof model - 1));
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
        } else if (strcmp(slash, "/members") == 0) {
            m->route = R_MEMBERS;
            m->method = "GET";
            m->bad_param = !take_param(m, name, (size_t)(slash - name));
        }
    }
}

/* ---- replies ---- */

static const char *openai_type(unsigned status)
{
    switch (status) {
    case 401:
        return "authentication_error";
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

/* Anthropic's error types (its Messages API). */
static const char *anthropic_type(unsigned status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* A header value that is safe to send back. */
static bool value_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* The Origin a /v1 response may be shared with, or NULL. */
static const char *cors_origin(struct req *r)
{
    const char *list = r->srv->cfg.cors_origins;
    if (!list[0])
        return NULL;
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin || !*origin)
        return NULL;
    size_t olen = strlen(origin);
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n > 0 && p[0] == ' ')
            p++, n--;
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 1 && p[0] == '*')
            return "*";
        if (n == olen && strncasecmp(p, origin, n) == 0)
            return origin;
        if (!comma)
            break;
        p = comma + 1;
    }
    return NULL;
}

void http_add_cors(struct req *r, struct MHD_Response *resp)
{
    if (!r->openai && !r->anthropic)
        return;
    const char *origin = cors_origin(r);
    if (!origin)
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                            "Retry-After, x-request-id, x-ratelimit-limit-requests, "
                            "x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
                            "x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
                            "x-ratelimit-reset-tokens");
    if (strcmp(origin, "*") != 0)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
}

/* A CORS preflight: answered without a token. */
static enum MHD_Result reply_preflight(struct req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    const char *origin = cors_origin(r);
    if (origin) {
        const char *req_headers =
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                req_headers && value_ok(req_headers)
                                    ? req_headers
                                    : "authorization, content-type, x-api-key, "
                                      "anthropic-version");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
        if (strcmp(origin, "*") != 0)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
    enum MHD_Result rc = http_queue(r, 204, resp, 0);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result http_queue(struct req *r, unsigned status, struct MHD_Response *resp,
                           size_t body_len)
{
    r->status = status;
    if (!r->reader) {
        r->bytes = body_len;
        r->first_byte_us = clock_mono_us();
    }
    return MHD_queue_response(r->conn, status, resp);
}

static enum MHD_Result queue(struct req *r, unsigned status, const char *body, size_t len,
                             int retry_after, const char *allow, bool close)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    http_add_cors(r, resp);
    enum MHD_Result rc = http_queue(r, status, resp, len);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result http_reply_json(struct req *r, unsigned status, const char *json, size_t len)
{
    return queue(r, status, json, len, 0, NULL, false);
}

enum MHD_Result http_reply_ok(struct req *r)
{
    static const char ok[] = "{\"ok\":true}";
    return queue(r, 200, ok, sizeof ok - 1, 0, NULL, false);
}

/* GET /readyz: mcpd answers only once its database is open and it
 * serves, so ready until shutdown begins; then 503, so that a load balancer
 * sends new callers elsewhere. */
static enum MHD_Result reply_readyz(struct req *r)
{
    if (atomic_load(&r->srv->stopping)) {
        static const char no[] = "{\"ready\":false,\"error\":\"shutting down\"}";
        return queue(r, 503, no, sizeof no - 1, READYZ_RETRY_AFTER, NULL, false);
    }
    static const char yes[] = "{\"ready\":true}";
    return queue(r, 200, yes, sizeof yes - 1, 0, NULL, false);
}

/* GET /metrics: the counters, and the gauges read now. */
static enum MHD_Result reply_metrics(struct req *r)
{
    struct server *srv = r->srv;
    struct metrics_gauges g = {0};
    broker_stats(srv->broker, &g.broker);
    g.llms_ok = db_llm_count_by_status(srv->db, g.llms) == DB_OK;
    if (!g.llms_ok)
        log_error("metrics: cannot count the Llm rows: %s", db_errmsg(srv->db));
    g.connections_open = atomic_load(&srv->open_conns);
    g.connections_max = srv->max_conns;
    g.access_log_errors = accesslog_errors(srv->access);
    struct buf out;
    buf_init(&out, METRICS_TEXT_MAX);
    enum MHD_Result rc;
    if (metrics_render(srv->metrics, &g, &out) < 0 || metrics_render_pools(srv->broker, &out) < 0) {
        rc = http_reply_error(r, 500, "cannot render the metrics: out of memory");
    } else {
        size_t len = out.len;
        char *text = buf_steal(&out);
        struct MHD_Response *resp =
            text ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!resp) {
            free(text);
            rc = MHD_NO;
        } else {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8");
            rc = http_queue(r, 200, resp, out.len);
            MHD_destroy_response(resp);
        }
    }
    buf_release(&out);
    return rc;
}

static enum MHD_Result reply_error_full(struct req *r, unsigned status, int retry_after,
                                        const char *code, const char *allow, bool close,
                                        const char *msg)
{
    json_t *o;
    if (r->anthropic) {
        o = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", anthropic_type(status),
                      "message", msg);
    } else if (r->openai) {
        if (!code)
            code = openai_code(status);
        o = json_pack("{s:{s:s,s:s,s:s?}}", "error", "message", msg, "type", openai_type(status),
                      "code", code);
    } else {
        o = json_pack("{s:s}", "error", msg);
    }
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    static const char fallback[] = "{\"error\":\"internal error\"}";
    enum MHD_Result rc =
        queue(r, status, text ? text : fallback, text ? strlen(text) : sizeof fallback - 1,
              retry_after, allow, close);
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
    return reply_error_full(r, status, status == 503 ? 1 : 0, NULL, NULL, false, msg);
}

enum MHD_Result http_reply_failure(struct req *r, unsigned status, int retry_after,
                                   const char *code, const char *msg)
{
    if (status == 503 && retry_after <= 0)
        retry_after = 1;
    return reply_error_full(r, status, retry_after, code, NULL, false, msg);
}

void http_add_headers(struct MHD_Response *resp, const char *pairs, size_t len)
{
    const char *p = pairs, *end = pairs + len;
    while (p < end) {
        const char *name = p;
        const char *value = name + strlen(name) + 1;
        if (value >= end)
            break;
        MHD_add_response_header(resp, name, value);
        p = value + strlen(value) + 1;
    }
}

/* A streamed body's reader: the route's, with the bytes counted. */
static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct req *r = cls;
    ssize_t n = r->reader(r, pos, out, max);
    if (n > 0) {
        if (!r->first_byte_us)
            r->first_byte_us = clock_mono_us();
        r->bytes += (uint64_t)n;
    }
    return n;
}

struct MHD_Response *http_sse_response(MHD_ContentReaderCallback reader, struct req *r)
{
    /* Chunked bodies are assembled in the connection's memory pool; a
     * larger block would only be allocated and never used. */
    r->reader = reader;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, sse_read, r, NULL);
    if (!resp)
        return NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return resp;
}

const char *http_session_header(struct req *r)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MCP_HEADER_SESSION);
    return v && *v ? v : NULL;
}

/* ---- broker endpoints ---- */

static bool ep_park(struct broker_ep *ep)
{
    struct req *r = (struct req *)((char *)ep - offsetof(struct req, ep));
    if (atomic_load(&r->srv->stopping) || (r->cc && atomic_load(&r->cc->peer_gone)))
        return false;
    MHD_suspend_connection(r->conn);
    return true;
}

static void ep_wake(struct broker_ep *ep)
{
    struct req *r = (struct req *)((char *)ep - offsetof(struct req, ep));
    MHD_resume_connection(r->conn);
}

/* Makes r a broker endpoint: park suspends it, wake resumes it. */
static void endpoint_init(struct req *r)
{
    r->ep.park = ep_park;
    r->ep.wake = ep_wake;
}

void http_upload_started(struct req *r)
{
    /* The close may have been reported while r was still an ordinary
     * request, when it meant nothing to it. */
    if (r->cc && r->cc->fd >= 0 && atomic_load(&r->cc->peer_gone))
        housekeeper_rearm(r->srv->hk, r->cc->fd, r->cc->id);
}

bool http_peer_gone(struct server *srv, uint64_t conn_id, bool final)
{
    bool again = false;
    pthread_mutex_lock(&srv->watch_mu);
    struct conn *cc;
    HASH_FIND(hh, srv->conns, &conn_id, sizeof conn_id, cc);
    if (cc) {
        atomic_store(&cc->peer_gone, true);
        struct req *r = cc->req;
        if (r && (atomic_load(&r->events) || atomic_load(&r->results))) {
            /* Bytes that came with the close may still be on their way
             * through libmicrohttpd: give them a moment first. */
            if (!final)
                again = true;
            else if (atomic_load(&r->results))
                relay_results_peer_gone(r);
            else
                relay_events_peer_gone(r);
        } else if (r) {
            broker_kick(srv->broker, &r->ep); /* nothing unless it is parked */
        }
    }
    pthread_mutex_unlock(&srv->watch_mu);
    return again;
}

/* ---- the checks before the body ---- */

/* RFC 9110 token characters (header names). */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

struct framing {
    int content_length;
    int transfer_encoding;
    bool te_chunked;
    bool has_host;
    const char *bad; /* why the request is refused */
};

#if MHD_VERSION <= 0x00097599
/* libmicrohttpd 0.9.75 parses the header block in place: a header's name,
 * the colon (now NUL), optional blanks and the value follow each other in
 * its read buffer, and the line's CR LF are both overwritten with NUL. Two
 * things it accepts break that layout, and only that shows them, since it
 * reports neither: an obs-fold line (0.9.75 glues the continuation onto the
 * name, in memory of its own, and drops the header's framing meaning) and
 * a NUL inside a value (the value is cut short there). Bare-LF line ends
 * fail the check too, which refuses them: a request whose lines end in LF
 * alone is not one an intermediary frames the same way. Later versions
 * refuse all three themselves. */
static bool laid_out_as_received(const char *key, size_t key_size, const char *value,
                                 size_t value_size)
{
    const char *colon = key + key_size;
    if (value <= colon || value - colon > 4096 || *colon != '\0')
        return false;
    for (const char *p = colon + 1; p < value; p++)
        if (*p != ' ' && *p != '\t')
            return false;
    const char *end = value + value_size;
    return end[0] == '\0' && end[1] == '\0';
}
#endif

static enum MHD_Result check_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    struct framing *f = cls;
#if MHD_VERSION <= 0x00097599
    if (!laid_out_as_received(key, key_size, value, value_size)) {
        f->bad = "a folded header line, a NUL in a header, or a line not ended by CR LF";
        return MHD_NO;
    }
#endif
    if (key_size == 0) {
        f->bad = "empty header name";
        return MHD_NO;
    }
    for (size_t i = 0; i < key_size; i++) {
        if (!is_tchar((unsigned char)key[i])) {
            f->bad = "malformed header name (whitespace before the colon, or a folded line)";
            return MHD_NO;
        }
    }
    for (size_t i = 0; i < value_size; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            f->bad = "control character in a header value";
            return MHD_NO;
        }
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        f->content_length++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->transfer_encoding++;
        f->te_chunked = strcasecmp(value, "chunked") == 0;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        f->has_host = true;
    }
    return MHD_YES;
}

/* NULL when the request's framing is unambiguous, else why it is not. */
static const char *check_framing(struct MHD_Connection *conn, const char *version)
{
    struct framing f = {0};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, check_header, &f);
    if (f.bad)
        return f.bad;
    if (f.content_length > 1)
        return "more than one Content-Length header";
    if (f.transfer_encoding > 1)
        return "more than one Transfer-Encoding header";
    if (f.transfer_encoding && f.content_length)
        return "both Content-Length and Transfer-Encoding";
    if (f.transfer_encoding && !f.te_chunked)
        return "unsupported Transfer-Encoding (only chunked is accepted)";
    if (!f.has_host && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        return "missing Host header (required in version 1.1 of HTTP)";
    return NULL;
}

#define X_API_KEY_MAX 591

/* Auth, route (m: the path matched), method and declared size. 0 when
 * the request may proceed, else the status to refuse it with and msg. */
static unsigned check_head(struct req *r, const char *url, const char *method,
                           const struct route_match *m, char *msg, size_t msglen)
{
    struct server *srv = r->srv;
    bool api = strncmp(url, "/api/", 5) == 0 || strncmp(url, "/v1/", 4) == 0;
    if (api) {
        const char *h =
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        /* Anthropic's clients send their key as x-api-key (one longer
         * than X_API_KEY_MAX counts as missing). */
        const char *key = r->anthropic && !h
                              ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "x-api-key")
                              : NULL;
        if (key && strlen(key) > X_API_KEY_MAX)
            key = NULL;
        int rc = key ? auth_check_token(srv->auth, key, r->owner, r->token_hash)
                     : auth_check(srv->auth, h, r->owner, r->token_hash);
        if (key)
            h = key;
        if (rc == DB_ERROR) {
            snprintf(msg, msglen, "cannot check the token: database error");
            return 500;
        }
        if (rc != DB_OK) {
            snprintf(msg, msglen, "%s",
                     h ? "token not recognised"
                       : (r->anthropic ? "missing x-api-key or Authorization: Bearer <token>"
                                       : "missing Authorization: Bearer <token>"));
            return 401;
        }
    }
    if (m->route == R_NONE) {
        if (r->openai || r->anthropic)
            snprintf(msg, msglen, "Unknown request URL: %s %s", method, url);
        else
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
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoll(cl, NULL, 10) > srv->cfg.max_body) {
        snprintf(msg, msglen, "request body larger than %lld bytes", (long long)srv->cfg.max_body);
        return 413;
    }
    return 0;
}

static bool is_event_stream(struct req *r)
{
    const char *ct =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    return ct && strncasecmp(ct, "text/event-stream", 17) == 0;
}

/* The first call for a request: everything that needs no body. */
static enum MHD_Result begin(struct req *r, const char *url, const char *method,
                             const char *version)
{
    struct route_match m;
    http_match_route(url, &m);
    r->route = m.route; /* refused or not, for the metrics */
    if (r->srv->access) {
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
    }
    r->openai = strncmp(url, "/v1/", 4) == 0;
    r->anthropic = strcmp(url, MCP_ROUTE_ANTHROPIC_MESSAGES) == 0;
    if (r->anthropic)
        r->openai = false;
    const char *bad = check_framing(r->conn, version);
    if (bad) {
        r->started = true;
        log_debug("refusing a request for %s: %s", url, bad);
        return reply_error_full(r, 400, 0, NULL, NULL, true, bad);
    }
    if (strcmp(method, "OPTIONS") == 0 && (r->openai || r->anthropic)) {
        /* Answered with the request's last call, as other routes are:
         * answered now, libmicrohttpd would close the connection after. */
        r->route = R_PREFLIGHT;
        return MHD_YES;
    }
    char msg[512];
    unsigned status = check_head(r, url, method, &m, msg, sizeof msg);
    if (status) {
        r->started = true;
        /* After a refusal a body may still be on its way: close rather
         * than guess where it ends. */
        const char *code = status == 404 && m.route == R_NONE ? "unknown_url" : NULL;
        return reply_error_full(r, status, 0, code, status == 405 ? m.method : NULL, true, msg);
    }
    snprintf(r->param, sizeof r->param, "%s", m.param);
    if (r->route == R_RESULT && is_event_stream(r)) {
        bool replied = false;
        enum MHD_Result rc = relay_events_begin(r, r->param, &replied);
        if (replied)
            r->started = true;
        return rc;
    }
    if (r->route == R_RESULTS) {
        bool replied = false;
        enum MHD_Result rc = relay_results_begin(r, &replied);
        if (replied)
            r->started = true;
        return rc;
    }
    return MHD_YES;
}

static enum MHD_Result run_route(struct req *r)
{
    switch (r->route) {
    case R_HEALTHZ:
        return http_reply_ok(r);
    case R_READYZ:
        return reply_readyz(r);
    case R_LIST:
        return provider_list(r);
    case R_GET:
        return provider_get(r, r->param);
    case R_MEMBERS:
        return provider_members(r, r->param);
    case R_REGISTER:
        return provider_register(r);
    case R_STREAM:
        return stream_open(r);
    case R_HEARTBEAT:
        return provider_heartbeat(r);
    case R_RESULT:
        return relay_result(r, r->param);
    case R_RESULTS: /* refused in begin() or taken as a stream */
        break;
    case R_INFER:
        return relay_infer(r, r->param);
    case R_OPENAI_CHAT:
        return relay_openai_chat(r);
    case R_OPENAI_MODELS:
        return provider_models(r);
    case R_OPENAI_MODEL:
        return provider_model(r, r->param);
    case R_OPENAI_COMPLETIONS:
    case R_OPENAI_EMBEDDINGS:
    case R_OPENAI_RESPONSES:
    case R_ANTHROPIC_MESSAGES:
        return relay_openai_route(r);
    case R_USAGE:
        return usage_route(r);
    case R_PREFLIGHT:
        return reply_preflight(r);
    case R_METRICS:
        return reply_metrics(r);
    case R_NONE:
    case R_COUNT:
        break;
    }
    return http_reply_error(r, 404, "no such route");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct server *srv = cls;
    struct req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = srv;
        r->conn = conn;
        r->start_us = clock_mono_us();
        atomic_init(&r->events, false);
        atomic_init(&r->events_over, false);
        atomic_init(&r->results, false);
        endpoint_init(r);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->cc = ci ? ci->socket_context : NULL;
        buf_init(&r->body, (size_t)srv->cfg.max_body);
        *con_cls = r;
        if (r->cc) {
            pthread_mutex_lock(&srv->watch_mu);
            r->cc->req = r;
            pthread_mutex_unlock(&srv->watch_mu);
        }
        return begin(r, url, method, version);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->started)
            return MHD_YES; /* a refused request's body, discarded */
        if (atomic_load(&r->events))
            return relay_events_piece(r, upload_data, n);
        if (atomic_load(&r->results))
            return relay_results_piece(r, upload_data, n);
        if (buf_append(&r->body, upload_data, n) < 0) {
            /* libmicrohttpd can answer only before the body or after all of
             * it: a chunked body past the cap is cut off here rather than
             * read to its end for a 413. */
            log_info("closing a connection whose chunked body passed %lld bytes",
                     (long long)srv->cfg.max_body);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (r->call)
        return relay_resume(r);
    if (r->started)
        return MHD_YES;
    r->started = true;
    if (atomic_load(&r->events))
        return relay_events_end(r);
    if (atomic_load(&r->results))
        return relay_results_end(r);
    return run_route(r);
}

/* How a request ended, for the access log; NULL when it completed. */
static const char *termination(enum MHD_RequestTerminationCode toe, bool peer_gone)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return NULL;
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR:
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
        return "client_gone";
    default:
        /* A write failed, or mcpd aborted the response: after the peer
         * left (the watch saw it), or for a reason of its own. */
        return peer_gone ? "client_gone" : "error";
    }
}

/* The request is over: its access log line and its metrics. */
static void record(struct server *srv, struct req *r, enum MHD_RequestTerminationCode toe)
{
    int64_t now = clock_mono_us();
    const char *llm = r->llm[0] ? r->llm : NULL;
    const char *end = termination(toe, r->cc && atomic_load(&r->cc->peer_gone));
    /* No response: 499 when the peer left first (nginx's convention, and
     * usage accounting's), else 0. */
    unsigned status = r->status ? r->status : end && strcmp(end, "client_gone") == 0 ? 499 : 0;
    struct metrics_request mr = {
        .route = (unsigned)r->route,
        .llm = llm,
        .status = status,
        .duration_us = now - r->start_us,
        .first_byte_us = r->first_byte_us ? r->first_byte_us - r->start_us : -1,
    };
    metrics_request(srv->metrics, &mr);
    if (!srv->access)
        return;
    struct accesslog_entry e = {
        .time_ms = clock_wall_ms(),
        .remote = r->cc ? r->cc->remote : NULL,
        .owner = r->owner,
        .method = r->method,
        .path = r->path,
        .llm = llm,
        .status = status,
        .bytes = r->bytes,
        .duration_us = mr.duration_us,
        .ttfb_us = r->reader && r->first_byte_us ? mr.first_byte_us : -1,
        .end = end,
    };
    accesslog_write(srv->access, &e);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct server *srv = cls;
    struct req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->cc) {
        pthread_mutex_lock(&srv->watch_mu);
        r->cc->req = NULL;
        pthread_mutex_unlock(&srv->watch_mu);
    }
    if (r->call)
        relay_done(r); /* its usage, as soon as the answer is out */
    /* Logged and counted before what the end of a stream sets off (its
     * rows going inactive) can be seen. */
    record(srv, r, toe);
    if (r->stream)
        stream_closed(r);
    if (atomic_load(&r->events))
        relay_events_done(r);
    if (atomic_load(&r->results))
        relay_results_done(r);
    buf_release(&r->body);
    buf_release(&r->partial);
    free(r);
}

/* The peer's "addr:port" ("[addr]:port" for IPv6), or "-". */
static void format_peer(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char host[INET6_ADDRSTRLEN] = "-";
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(in4->sin_port));
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, len, "-");
    }
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn *cc = calloc(1, sizeof *cc);
        if (!cc)
            return;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        cc->fd = ci ? ci->connect_fd : -1;
        atomic_init(&cc->peer_gone, false);
        if (srv->access)
            format_peer(conn, cc->remote, sizeof cc->remote);
        pthread_mutex_lock(&srv->watch_mu);
        cc->id = ++srv->next_conn_id;
        HASH_ADD(hh, srv->conns, id, sizeof cc->id, cc);
        pthread_mutex_unlock(&srv->watch_mu);
        if (cc->fd >= 0)
            housekeeper_watch(srv->hk, cc->fd, cc->id);
        *socket_context = cc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&srv->open_conns, 1);
        struct conn *cc = *socket_context;
        if (!cc)
            return;
        if (cc->fd >= 0)
            housekeeper_unwatch(srv->hk, cc->fd);
        pthread_mutex_lock(&srv->watch_mu);
        HASH_DEL(srv->conns, cc);
        pthread_mutex_unlock(&srv->watch_mu);
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

/* Per-connection memory pool: request headers and the read and write
 * buffers live here. libmicrohttpd's default (32 KiB) would dominate the
 * cost of an idle control stream; 8 KiB caps request headers at about
 * 7 KB (larger ones get 431). Bodies stream through it. */
#define HTTP_CONNECTION_MEMORY (8 * 1024)

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

/* The listening socket is mcpd's own so that a connection past the cap is
 * refused at once: libmicrohttpd, at its limit, stops accepting and leaves
 * new connections waiting in the kernel's backlog. Each accepted socket is
 * handed to libmicrohttpd whole (MHD_add_connection). */
static void *accept_main(void *arg)
{
    struct server *srv = arg;
    bool warned = false;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (atomic_load(&srv->stopping) || errno == EINVAL || errno == EBADF)
                break;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (!warned)
                    log_warn("cannot accept connections: %s; retrying", strerror(errno));
                warned = true;
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        warned = false;
        /* The cap is counted here, exactly: libmicrohttpd checks its own
         * limit per worker only once a worker picks the connection up. */
        if (atomic_fetch_add(&srv->open_conns, 1) >= srv->max_conns) {
            atomic_fetch_sub(&srv->open_conns, 1);
            close(fd);
            log_debug("connection refused: %u open, the cap", srv->max_conns);
            continue;
        }
        if (MHD_add_connection(srv->mhd, fd, (struct sockaddr *)&ss, len) != MHD_YES) {
            atomic_fetch_sub(&srv->open_conns, 1); /* libmicrohttpd closed it */
            log_debug("connection refused: %s", strerror(errno));
        }
    }
    return NULL;
}

static int listen_on(struct server *srv, const struct sockaddr_storage *ss)
{
    socklen_t len =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 1024) < 0) {
        log_error("cannot listen on %s:%d: %s", srv->cfg.listen_addr, srv->cfg.listen_port,
                  strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    srv->listen_fd = fd;
    return 0;
}

struct MHD_Daemon *http_start(struct server *srv, unsigned int conn_limit, unsigned int fd_limit)
{
    const struct server_config *cfg = &srv->cfg;
    struct sockaddr_storage ss;
    if (make_addr(cfg, &ss) < 0) {
        log_error("cannot listen on '%s': not an IP address", cfg->listen_addr);
        return NULL;
    }
    if (listen_on(srv, &ss) < 0)
        return NULL;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                         MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (srv->tls_cert)
        flags |= MHD_USE_TLS;
    unsigned int threads = cfg->threads > 1 ? (unsigned int)cfg->threads : 0;
    srv->max_conns = conn_limit;
    atomic_init(&srv->open_conns, 0);
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, srv},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, srv},
        /* libmicrohttpd's own limit is what the descriptors allow: the
         * cap is mcpd's (accept_main), and never met here first. */
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)fd_limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)(cfg->connection_timeout_ms / 1000), NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)HTTP_CONNECTION_MEMORY, NULL},
        {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)(threads > 1 ? threads : 0), NULL},
        {srv->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, srv->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key},
        {MHD_OPTION_END, 0, NULL},
    };
    srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_ARRAY, opts,
                                MHD_OPTION_END);
    if (!srv->mhd) {
        log_error("cannot start the HTTP server (bad TLS certificate or key?)");
        close(srv->listen_fd);
        srv->listen_fd = -1;
        return NULL;
    }
    if (pthread_create(&srv->accept_thread, NULL, accept_main, srv) != 0) {
        log_error("cannot start the accepting thread");
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
        close(srv->listen_fd);
        srv->listen_fd = -1;
        return NULL;
    }
    return srv->mhd;
}

void http_stop(struct server *srv)
{
    if (srv->listen_fd >= 0) {
        shutdown(srv->listen_fd, SHUT_RDWR); /* wakes accept() */
        pthread_join(srv->accept_thread, NULL);
        close(srv->listen_fd);
        srv->listen_fd = -1;
    }
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
}
