/*
 * relay.c - inference and results: infer and /v1/chat/completions become a
 * broker call (an infer task down the publisher's stream, the caller
 * parked); the publisher's result posts — a final answer, chunks, an error,
 * or one streamed post of events — are handed to the broker, which wakes
 * the caller.
 *
 * Hot path: the caller's body is validated and scanned without a JSON tree
 * (jsonscan) and spliced byte for byte into the task frame; an Llm's
 * routing row comes from an in-memory cache; nothing here touches the
 * database unless that cache is stale.
 */
#include "clock.h"
#include "jsonscan.h"
#include "log.h"
#include "routes.h"
#include "usage.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RETRY_AFTER_OFFLINE 5
#define ROUTE_CACHE_MAX 65536

/* ---- the routing cache ---- */

struct route_entry {
    char name[MCP_NAME_BUF];
    struct llm_route route;
    uint64_t gen;
    UT_hash_handle hh;
};

struct routes {
    pthread_mutex_t mu;
    struct route_entry *map;
    unsigned count;
};

struct routes *routes_new(void)
{
    struct routes *rt = calloc(1, sizeof *rt);
    if (rt)
        pthread_mutex_init(&rt->mu, NULL);
    return rt;
}

static void routes_clear(struct routes *rt)
{
    struct route_entry *e, *tmp;
    HASH_ITER(hh, rt->map, e, tmp)
    {
        HASH_DEL(rt->map, e);
        free(e);
    }
    rt->count = 0;
}

void routes_free(struct routes *rt)
{
    if (!rt)
        return;
    routes_clear(rt);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

int routes_lookup(struct routes *rt, struct db *db, const char *name, struct llm_route *out,
                  uint64_t *gen_out)
{
    /* The generation is read before the row, so a write in between makes
     * the entry stale rather than wrong. */
    uint64_t gen = db_route_generation(db);
    if (gen_out)
        *gen_out = gen;
    pthread_mutex_lock(&rt->mu);
    struct route_entry *e;
    HASH_FIND_STR(rt->map, name, e);
    if (e && e->gen == gen) {
        *out = e->route;
        pthread_mutex_unlock(&rt->mu);
        return DB_OK;
    }
    pthread_mutex_unlock(&rt->mu);
    int rc = db_llm_route(db, name, out);
    if (rc != DB_OK)
        return rc;
    pthread_mutex_lock(&rt->mu);
    HASH_FIND_STR(rt->map, name, e);
    if (!e) {
        if (rt->count >= ROUTE_CACHE_MAX)
            routes_clear(rt);
        e = calloc(1, sizeof *e);
        if (e) {
            snprintf(e->name, sizeof e->name, "%s", name);
            HASH_ADD_STR(rt->map, name, e);
            rt->count++;
        }
    }
    if (e) {
        e->route = *out;
        e->gen = gen;
    }
    pthread_mutex_unlock(&rt->mu);
    return DB_OK;
}

/* Hands the broker pool's members as the database has them now, tagged
 * with gen, read before them. 0, or -1 (database error, out of memory). */
static int pool_load(struct server *srv, const char *pool, uint64_t gen)
{
    struct pool_member *rows = NULL;
    size_t n = 0;
    if (db_pool_members(srv->db, pool, &rows, &n) != DB_OK)
        return -1;
    struct broker_member *m = calloc(n ? n : 1, sizeof *m);
    size_t k = 0;
    for (size_t i = 0; m && i < n; i++) {
        const struct llm_route *rt = &rows[i].route;
        if (!rt->is_virtual || !rt->session[0] || strcmp(rt->status, MCP_STATUS_INACTIVE) == 0)
            continue;
        m[k++] = (struct broker_member){
            .llm = rows[i].name,
            .session = rt->session,
            .hibernating = strcmp(rt->status, MCP_STATUS_HIBERNATING) == 0,
        };
    }
    int rc = m ? broker_pool_set(srv->broker, pool, gen, m, k) : -1;
    free(m);
    free(rows);
    return rc;
}

/* ---- starting an inference ---- */

/* Validates an OpenAI chat request body; *streaming gets its "stream". */
static int check_chat_body(const struct buf *body, struct jsonscan *js, bool *streaming, char *err,
                           size_t errlen)
{
    if (body->len == 0 || jsonscan_parse(js, body->data, body->len) < 0) {
        snprintf(err, errlen, "body is not a valid JSON object");
        return -1;
    }
    const struct json_field *messages = jsonscan_find(js, "messages");
    if (!messages || messages->kind != JSON_K_ARRAY || !jsonscan_array_nonempty(messages)) {
        snprintf(err, errlen, "messages must be a non-empty array");
        return -1;
    }
    const struct json_field *stream = jsonscan_find(js, "stream");
    if (stream && stream->kind != JSON_K_TRUE && stream->kind != JSON_K_FALSE &&
        stream->kind != JSON_K_NULL) {
        snprintf(err, errlen, "stream must be a boolean");
        return -1;
    }
    *streaming = stream && stream->kind == JSON_K_TRUE;
    return 0;
}

/* The session's stream was cut off for not reading: its rows go inactive
 * now, not when libmicrohttpd gets round to closing the connection. */
static void publisher_stalled(struct server *srv, const char *session)
{
    log_warn("session %.8s…: stream backlog over its cap, the publisher does not read; "
             "disconnecting it",
             session);
    pthread_mutex_lock(&srv->life_mu);
    if (!broker_session_live(srv->broker, session) &&
        db_session_deactivate(srv->db, session, clock_wall_ms(), NULL) != DB_OK)
        log_error("session %.8s…: cannot mark its rows inactive: %s", session, db_errmsg(srv->db));
    pthread_mutex_unlock(&srv->life_mu);
}

/* Starts a call that names a pool (rq->pool, at route generation
 * rq->pool_gen): any member able to take it may serve it, as the broker
 * picks. */
static enum MHD_Result start_pool_call(struct req *r, const struct broker_call_req *rq)
{
    struct server *srv = r->srv;
    struct broker_error err;
    r->call = broker_call_start(srv->broker, rq, &r->ep, clock_mono_ms(), &err);
    if (!r->call && err.status == 0) {
        /* The broker's record of the pool is older than the route: load
         * it (at the route's generation) and start again. */
        if (pool_load(srv, rq->pool, rq->pool_gen) < 0)
            return http_reply_error(r, 500, "cannot read pool '%s'", rq->pool);
        r->call = broker_call_start(srv->broker, rq, &r->ep, clock_mono_ms(), &err);
        if (!r->call && err.status == 0)
            return http_reply_error(r, 500, "pool '%s' changed while routing", rq->pool);
    }
    if (!r->call)
        return http_reply_failure(r, (unsigned)err.status, err.retry_after, err.code, err.msg);
    log_debug("infer '%s' sent to pool '%s'", rq->llm, rq->pool);
    return MHD_YES; /* parked: relay_resume() answers */
}

static enum MHD_Result start_inference(struct req *r, const char *name, bool streaming,
                                       const char *path, unsigned needs)
{
    struct server *srv = r->srv;
    struct llm_route route;
    uint64_t gen;
    int rc = routes_lookup(srv->routes, srv->db, name, &route, &gen);
    if (rc == DB_NOT_FOUND)
        return http_reply_error(r, 404, "no Llm named '%s'", name);
    if (rc != DB_OK)
        return http_reply_error(r, 500, "database error");
    snprintf(r->llm, sizeof r->llm, "%s", name);
    struct broker_call_req rq = {
        .llm = name,
        .needs = needs,
        .streaming = streaming,
        .anthropic = r->anthropic,
        .path = path,
        .body = r->body.data,
        .body_len = r->body.len,
    };
    if (route.pool[0]) {
        rq.pool = route.pool;
        rq.pool_gen = gen;
        return start_pool_call(r, &rq);
    }
    if (!route.is_virtual)
        return http_reply_error(
            r, 501, "Llm '%s' is not virtual; this server relays only virtual Llms", name);
    if (strcmp(route.status, MCP_STATUS_INACTIVE) == 0)
        return http_reply_failure(r, 503, RETRY_AFTER_OFFLINE, NULL,
                                  "Llm is inactive: its publisher is offline");
    rq.session = route.session;
    rq.hibernating = strcmp(route.status, MCP_STATUS_HIBERNATING) == 0;
    struct broker_error err;
    r->call = broker_call_start(srv->broker, &rq, &r->ep, clock_mono_ms(), &err);
    if (!r->call) {
        if (err.code && strcmp(err.code, "publisher_stalled") == 0)
            publisher_stalled(srv, route.session);
        return http_reply_failure(r, (unsigned)err.status, err.retry_after, err.code, err.msg);
    }
    log_debug("infer '%s' sent to session %.8s…%s", name, route.session,
              rq.hibernating ? " (after a wake)" : "");
    return MHD_YES; /* parked: relay_resume() answers */
}

enum MHD_Result relay_infer(struct req *r, const char *name)
{
    struct jsonscan js;
    char err[128];
    bool streaming;
    if (check_chat_body(&r->body, &js, &streaming, err, sizeof err) < 0)
        return http_reply_error(r, 400, "%s", err);
    return start_inference(r, name, streaming, NULL, 0);
}

/* Starts the inference a /v1 body's "model" names. */
static enum MHD_Result start_for_model(struct req *r, const struct jsonscan *js, bool streaming,
                                       const char *path, unsigned needs)
{
    const struct json_field *model = jsonscan_find(js, "model");
    if (!model || model->kind != JSON_K_STRING)
        return http_reply_error(r, 400, "model must be a string naming an Llm");
    json_t *v = json_loadb(model->val, model->val_len, JSON_DECODE_ANY, NULL);
    const char *name = json_string_value(v);
    enum MHD_Result rc;
    if (!name || !mcp_name_valid(name))
        rc = http_reply_error(r, 404, "no Llm named '%s'", name ? name : "");
    else
        rc = start_inference(r, name, streaming, path, needs);
    json_decref(v);
    return rc;
}

enum MHD_Result relay_openai_chat(struct req *r)
{
    struct jsonscan js;
    char err[128];
    bool streaming;
    if (check_chat_body(&r->body, &js, &streaming, err, sizeof err) < 0)
        return http_reply_error(r, 400, "%s", err);
    return start_for_model(r, &js, streaming, NULL, 0);
}

/* The /v1 routes relayed as tasks with a path: what each needs of its
 * body, besides a string "model". */
static const struct {
    enum route route;
    const char *path;
    const char *required; /* a member that must be present, or NULL */
    bool streams;         /* "stream": true asks for a stream */
    bool named_events; /* its stream has named events: only a streamed result post carries them */
} relayed[] = {
    {R_OPENAI_COMPLETIONS, "/completions", "prompt", true, false},
    {R_OPENAI_EMBEDDINGS, "/embeddings", "input", false, false},
    {R_OPENAI_RESPONSES, "/responses", NULL, true, true},
    {R_ANTHROPIC_MESSAGES, "/messages", "messages", true, true},
};

enum MHD_Result relay_openai_route(struct req *r)
{
    size_t i = 0;
    while (i < sizeof relayed / sizeof relayed[0] && relayed[i].route != r->route)
        i++;
    if (i == sizeof relayed / sizeof relayed[0])
        return http_reply_error(r, 404, "no such route");
    struct jsonscan js;
    if (r->body.len == 0 || jsonscan_parse(&js, r->body.data, r->body.len) < 0)
        return http_reply_error(r, 400, "body is not a valid JSON object");
    if (relayed[i].required && !jsonscan_find(&js, relayed[i].required))
        return http_reply_error(r, 400, "%s is required", relayed[i].required);
    const struct json_field *stream = jsonscan_find(&js, "stream");
    if (stream && stream->kind != JSON_K_TRUE && stream->kind != JSON_K_FALSE &&
        stream->kind != JSON_K_NULL)
        return http_reply_error(r, 400, "stream must be a boolean");
    bool streaming = relayed[i].streams && stream && stream->kind == JSON_K_TRUE;
    unsigned needs = BROKER_FEAT_PATHS;
    if (streaming && relayed[i].named_events)
        needs |= BROKER_FEAT_STREAMED;
    return start_for_model(r, &js, streaming, relayed[i].path, needs);
}

/* ---- the caller's answer ---- */

static ssize_t caller_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct req *r = cls;
    ssize_t n = broker_call_read(r->srv->broker, r->call, out, max);
    if (n == BROKER_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == BROKER_GONE)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

enum MHD_Result relay_resume(struct req *r)
{
    struct broker_head h;
    struct broker_error err;
    int rc = broker_call_head(r->srv->broker, r->call, &h, &err);
    if (rc == 0)
        return MHD_YES;
    if (rc == BROKER_GONE)
        return MHD_NO;
    if (rc < 0)
        return http_reply_failure(r, (unsigned)err.status, err.retry_after, err.code, err.msg);
    struct MHD_Response *resp;
    if (h.sse) {
        resp = http_sse_response(caller_read, r);
    } else {
        resp = MHD_create_response_from_buffer(h.len, h.body ? h.body : (void *)"",
                                               h.body ? MHD_RESPMEM_MUST_FREE
                                                      : MHD_RESPMEM_PERSISTENT);
        if (!resp)
            free(h.body);
        else
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    h.ctype ? h.ctype : "application/json");
    }
    if (resp) {
        http_add_headers(resp, h.headers, h.headers_len);
        http_add_cors(r, resp);
    }
    free(h.headers);
    if (!resp)
        return MHD_NO;
    enum MHD_Result ret = http_queue(r, (unsigned)h.status, resp, h.len);
    MHD_destroy_response(resp);
    return ret;
}

void relay_done(struct req *r)
{
    struct broker_call_summary s;
    broker_call_finish(r->srv->broker, r->call, &s);
    r->call = NULL;
    int64_t prompt = s.usage.has_prompt ? s.usage.prompt : 0;
    int64_t completion = s.usage.has_completion ? s.usage.completion : 0;
    usage_note(r->srv->usage, r->owner, s.llm, s.status, prompt, completion);
    metrics_add_tokens(r->srv->metrics, s.llm, r->owner, (uint64_t)prompt, (uint64_t)completion);
}

/* ---- result posts ---- */

static bool is_integer(const struct json_field *f, long *out)
{
    if (f->kind != JSON_K_NUMBER || f->val_len > 12)
        return false;
    char tmp[16];
    memcpy(tmp, f->val, f->val_len);
    tmp[f->val_len] = '\0';
    char *end;
    long v = strtol(tmp, &end, 10);
    if (*end)
        return false;
    *out = v;
    return true;
}

/* Headers of the backend that reach the caller. */
static bool passed_header(const char *name)
{
    return strcasecmp(name, "retry-after") == 0 || strncasecmp(name, "x-ratelimit-", 12) == 0 ||
           strcasecmp(name, "x-request-id") == 0;
}

/* A header value that is safe to put on the wire. */
static bool header_value_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* What a result post carries, parsed. Strings point into the request body
 * or into the owned fields below. */
struct result_post {
    struct broker_piece piece;
    json_t *decoded; /* a decoded string body, chunk data or error */
    struct buf headers;
    char ctype[128];
};

static void result_release(struct result_post *p)
{
    json_decref(p->decoded);
    buf_release(&p->headers);
}

/* Takes the pass-through headers and the Content-Type of a string body. */
static int parse_headers(const struct json_field *f, struct result_post *p, char *err,
                         size_t errlen)
{
    json_t *h = json_loadb(f->val, f->val_len, 0, NULL);
    if (!json_is_object(h)) {
        json_decref(h);
        snprintf(err, errlen, "headers must be an object of strings");
        return -1;
    }
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach(h, name, v)
    {
        const char *val = json_string_value(v);
        if (!val) {
            snprintf(err, errlen, "headers must be an object of strings");
            rc = -1;
            break;
        }
        if (!header_value_ok(val))
            continue;
        if (strcasecmp(name, "content-type") == 0) {
            snprintf(p->ctype, sizeof p->ctype, "%s", val);
        } else if (passed_header(name)) {
            buf_append(&p->headers, name, strlen(name) + 1);
            buf_append(&p->headers, val, strlen(val) + 1);
        }
    }
    json_decref(h);
    return rc;
}

/* Decodes a JSON string value; the bytes stay valid while p lives. */
static int decode_string(const struct json_field *f, struct result_post *p, const char **s,
                         size_t *len)
{
    json_decref(p->decoded);
    p->decoded = json_loadb(f->val, f->val_len, JSON_DECODE_ANY, NULL);
    if (!json_is_string(p->decoded))
        return -1;
    *s = json_string_value(p->decoded);
    *len = json_string_length(p->decoded);
    return 0;
}

/* Parses a result object (text, len): a result post's body or, with
 * task_id, one record of a result stream, whose "taskId" goes there. */
static int parse_result(const char *text, size_t len, struct result_post *p,
                        char task_id[BROKER_ID_LEN], char *err, size_t errlen)
{
    struct jsonscan js;
    if (len == 0 || jsonscan_parse(&js, text, len) < 0) {
        snprintf(err, errlen, "body is not a valid JSON object");
        return -1;
    }
    if (task_id) {
        /* Task ids are hex digits: the raw string needs no decoding. */
        const struct json_field *id = jsonscan_find(&js, "taskId");
        if (!id || id->kind != JSON_K_STRING || id->val_len < 3 ||
            id->val_len - 2 >= BROKER_ID_LEN || memchr(id->val, '\\', id->val_len)) {
            snprintf(err, errlen, "taskId must be a task id");
            return -1;
        }
        memcpy(task_id, id->val + 1, id->val_len - 2);
        task_id[id->val_len - 2] = '\0';
    }
    const struct json_field *status = jsonscan_find(&js, "status");
    const struct json_field *rbody = jsonscan_find(&js, "body");
    const struct json_field *headers = jsonscan_find(&js, "headers");
    const struct json_field *chunk = jsonscan_find(&js, "chunk");
    const struct json_field *error = jsonscan_find(&js, "error");
    int kinds = (status || rbody) + (chunk != NULL) + (error != NULL);
    if (kinds != 1) {
        snprintf(err, errlen, "body must hold exactly one of {status, body}, {chunk} or {error}");
        return -1;
    }
    struct broker_piece *pc = &p->piece;
    if (status || rbody) {
        long st;
        pc->kind = PIECE_FINAL;
        if (!status || !is_integer(status, &st)) {
            snprintf(err, errlen, "status must be an integer HTTP status");
            return -1;
        }
        pc->status = st < 0 || st > 999 ? 0 : (int)st;
        if (headers && parse_headers(headers, p, err, errlen) < 0)
            return -1;
        pc->headers = p->headers.data;
        pc->headers_len = p->headers.len;
        if (rbody && rbody->kind == JSON_K_STRING) {
            if (decode_string(rbody, p, &pc->data, &pc->len) < 0) {
                snprintf(err, errlen, "body is not a valid string");
                return -1;
            }
            pc->ctype = p->ctype[0] ? p->ctype : "text/plain; charset=utf-8";
        } else {
            pc->data = rbody ? rbody->val : "null";
            pc->len = rbody ? rbody->val_len : 4;
            pc->ctype = "application/json";
        }
        return 0;
    }
    if (chunk) {
        pc->kind = PIECE_CHUNK;
        struct jsonscan cs;
        if (chunk->kind != JSON_K_OBJECT || jsonscan_parse(&cs, chunk->val, chunk->val_len) < 0) {
            snprintf(err, errlen, "chunk must be an object");
            return -1;
        }
        const struct json_field *data = jsonscan_find(&cs, "data");
        const struct json_field *done = jsonscan_find(&cs, "done");
        if (data && data->kind != JSON_K_OBJECT && data->kind != JSON_K_STRING &&
            data->kind != JSON_K_NULL) {
            snprintf(err, errlen, "chunk.data must be an object or a string");
            return -1;
        }
        if (done && done->kind != JSON_K_TRUE && done->kind != JSON_K_FALSE) {
            snprintf(err, errlen, "chunk.done must be a boolean");
            return -1;
        }
        if (data && data->kind == JSON_K_NULL)
            data = NULL;
        pc->done = done && done->kind == JSON_K_TRUE;
        if (!data && !pc->done) {
            snprintf(err, errlen, "chunk needs data, done: true, or both");
            return -1;
        }
        if (data && data->kind == JSON_K_STRING) {
            if (decode_string(data, p, &pc->data, &pc->len) < 0) {
                snprintf(err, errlen, "chunk.data is not a valid string");
                return -1;
            }
        } else if (data) {
            /* Objects are spliced as sent: one line, for one data field. */
            for (size_t i = 0; i < data->val_len; i++) {
                if (data->val[i] == '\n' || data->val[i] == '\r') {
                    snprintf(err, errlen, "chunk.data must be JSON on one line");
                    return -1;
                }
            }
            pc->data = data->val;
            pc->len = data->val_len;
        }
        return 0;
    }
    pc->kind = PIECE_ERROR;
    if (error->kind != JSON_K_STRING || decode_string(error, p, &pc->data, &pc->len) < 0) {
        snprintf(err, errlen, "error must be a string");
        return -1;
    }
    return 0;
}

/* The events in p[0..n) that an empty line ends; a piece without one (the
 * tail of a post) is one event. */
static unsigned events_count(const char *p, size_t n)
{
    unsigned k = 0;
    const char *end = p + n, *prev = NULL; /* the line end an empty line would follow */
    for (const char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++) {
        const char *c = prev ? prev + 1 : q;
        while (c < q && *c == '\r')
            c++;
        if (prev && c == q) {
            k++;
            prev = NULL;
        } else {
            prev = q;
        }
    }
    return n > 0 && k == 0 ? 1 : k;
}

/* Hands a piece to the broker, makes a wake's success durable and counts
 * the events it brings a streaming caller. */
static int deliver(struct req *r, const char *sid, const char *task_id,
                   const struct broker_piece *p, char *msg, size_t msglen)
{
    struct server *srv = r->srv;
    struct broker_piece counted = *p;
    usage_scan_piece(&counted); /* the backend's token counts, when the piece has them */
    struct broker_outcome out;
    int status = broker_deliver(srv->broker, sid, r->owner, task_id, &counted, clock_mono_ms(),
                                &out, msg, msglen);
    if (out.woke[0]) {
        if (db_llm_set_status(srv->db, out.woke, MCP_STATUS_ACTIVE, clock_wall_ms()) != DB_OK)
            log_error("'%s' woke but its row could not be marked active: %s", out.woke,
                      db_errmsg(srv->db));
        else
            log_info("'%s' is awake", out.woke);
    }
    if (status == 200 && p->len > 0 && (p->kind == PIECE_CHUNK || p->kind == PIECE_EVENTS))
        metrics_stream_events(srv->metrics,
                              p->kind == PIECE_CHUNK ? 1 : events_count(p->data, p->len));
    return status;
}

/* Parses a result object and hands it to its task: task_id's, or with
 * task_id NULL the one its "taskId" names. The delivery's status (200,
 * 400, 404, 410), or -1 when the text is not a result; msg says why. */
static int take_result(struct req *r, const char *sid, const char *text, size_t len,
                       const char *task_id, char *msg, size_t msglen)
{
    struct result_post p = {0};
    buf_init(&p.headers, 8192);
    char named[BROKER_ID_LEN];
    int status = -1;
    if (parse_result(text, len, &p, task_id ? NULL : named, msg, msglen) == 0)
        status = deliver(r, sid, task_id ? task_id : named, &p.piece, msg, msglen);
    result_release(&p);
    return status;
}

enum MHD_Result relay_result(struct req *r, const char *task_id)
{
    const char *sid = http_session_header(r);
    if (!sid)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    char msg[256];
    int status = take_result(r, sid, r->body.data, r->body.len, task_id, msg, sizeof msg);
    if (status == 200)
        return http_reply_ok(r);
    return http_reply_error(r, status < 0 ? 400 : (unsigned)status, "%s", msg);
}

/* ---- streamed result posts ---- */

/* The end of the last complete event in p[0..n): 0 when there is none. An
 * event ends with an empty line (LF LF, or CR LF CR LF). */
static size_t events_end(const char *p, size_t n)
{
    for (size_t i = n; i >= 2; i--) {
        if (p[i - 1] == '\n' && p[i - 2] == '\n')
            return i;
        if (i >= 4 && p[i - 1] == '\n' && p[i - 2] == '\r' && p[i - 3] == '\n' && p[i - 4] == '\r')
            return i;
    }
    return 0;
}

enum MHD_Result relay_events_begin(struct req *r, const char *task_id, bool *replied)
{
    struct server *srv = r->srv;
    const char *sid = http_session_header(r);
    *replied = true;
    if (!sid)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    /* An empty piece: checks the task can take a stream, starts nothing. */
    struct broker_piece p = {.kind = PIECE_EVENTS, .data = "", .len = 0};
    char msg[256];
    int status = deliver(r, sid, task_id, &p, msg, sizeof msg);
    if (status != 200)
        return http_reply_error(r, (unsigned)status, "%s", msg);
    *replied = false;
    snprintf(r->session, sizeof r->session, "%s", sid);
    buf_init(&r->partial, (size_t)srv->cfg.max_body);
    atomic_store(&r->events, true);
    http_upload_started(r);
    /* Quiet spells between events are the broker's idle timeout to judge. */
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int)(srv->cfg.idle_timeout_ms / 1000 + 5));
    return MHD_YES;
}

static int events_deliver(struct req *r, enum broker_piece_kind kind, const char *data, size_t len)
{
    struct broker_piece p = {.kind = kind, .data = data, .len = len};
    char msg[256];
    int status = deliver(r, r->session, r->param, &p, msg, sizeof msg);
    if (status != 200)
        log_debug("streamed result for task %.8s…: %d %s", r->param, status, msg);
    return status;
}

/* Marks the streamed post over; true for the one caller that did. */
static bool events_finish(struct req *r)
{
    return !atomic_exchange(&r->events_over, true);
}

enum MHD_Result relay_events_piece(struct req *r, const char *data, size_t len)
{
    if (atomic_load(&r->events_over))
        return MHD_NO;
    if (buf_append(&r->partial, data, len) < 0) {
        if (events_finish(r))
            events_deliver(r, PIECE_EVENTS_CUT, NULL, 0);
        return MHD_NO;
    }
    size_t end = events_end(r->partial.data, r->partial.len);
    if (end == 0)
        return MHD_YES;
    int status = events_deliver(r, PIECE_EVENTS, r->partial.data, end);
    buf_consume(&r->partial, end);
    if (status != 200) {
        /* The caller is gone or the task is over: stop the upload. */
        atomic_store(&r->events_over, true);
        return MHD_NO;
    }
    return MHD_YES;
}

enum MHD_Result relay_events_end(struct req *r)
{
    int status = 410;
    if (events_finish(r)) {
        status = 200;
        if (r->partial.len > 0) {
            status = events_deliver(r, PIECE_EVENTS, r->partial.data, r->partial.len);
            buf_reset(&r->partial);
        }
        if (status == 200)
            status = events_deliver(r, PIECE_EVENTS_END, NULL, 0);
    }
    if (status != 200)
        return http_reply_error(r, (unsigned)status, "the task is over");
    return http_reply_ok(r);
}

void relay_events_done(struct req *r)
{
    if (events_finish(r))
        events_deliver(r, PIECE_EVENTS_CUT, NULL, 0);
}

void relay_events_peer_gone(struct req *r)
{
    if (events_finish(r))
        events_deliver(r, PIECE_EVENTS_CUT, NULL, 0);
}

/* ---- result streams ---- */

enum MHD_Result relay_results_begin(struct req *r, bool *replied)
{
    struct server *srv = r->srv;
    const char *sid = http_session_header(r);
    *replied = true;
    if (!sid)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    int status = broker_results_open(srv->broker, sid, r->owner, &r->results_serial);
    if (status == 404 && !srv->cfg.result_stream)
        return http_reply_error(r, 404, "result streams are off (--result-stream off)");
    if (status == 404)
        return http_reply_error(r, 404, "no provider session %s for this token", sid);
    if (status != 200)
        return http_reply_error(r, 409, "session %s has no control stream", sid);
    *replied = false;
    snprintf(r->session, sizeof r->session, "%s", sid);
    buf_init(&r->partial, (size_t)srv->cfg.max_body);
    jsonsplit_init(&r->split);
    atomic_store(&r->results, true);
    http_upload_started(r);
    /* The publisher keeps the stream alive with a blank line every ping
     * interval; three missed ones end it. */
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned int)(3 * srv->cfg.ping_interval_ms / 1000 + 5));
    log_debug("session %.8s…: result stream open", sid);
    return MHD_YES;
}

/* The stream broke off or carried something that is not a result: the
 * results in it may be lost, so the control stream it belongs to ends. */
static void results_cut(struct req *r, const char *why)
{
    if (atomic_exchange(&r->events_over, true))
        return;
    log_warn("session %.8s…: result stream %s; ending its control stream", r->session, why);
    broker_results_cut(r->srv->broker, r->session, r->results_serial,
                       "the publisher's result stream broke off");
}

/* Hands one record to its task. false when the stream must end. */
static bool results_record(struct req *r, const char *data, size_t len)
{
    char msg[256];
    int status = take_result(r, r->session, data, len, NULL, msg, sizeof msg);
    if (status < 0) {
        log_warn("session %.8s…: a result stream record is not a result: %s", r->session, msg);
        return false;
    }
    if (status != 200)
        log_debug("session %.8s…: a result stream record: %d %s", r->session, status, msg);
    return true;
}

enum MHD_Result relay_results_piece(struct req *r, const char *data, size_t len)
{
    if (atomic_load(&r->events_over))
        return MHD_NO;
    if (buf_append(&r->partial, data, len) < 0) {
        results_cut(r, "sent a record over the body cap");
        return MHD_NO;
    }
    for (;;) {
        size_t start, end;
        int rc = jsonsplit_next(&r->split, r->partial.data, r->partial.len, &start, &end);
        if (rc == JSONSPLIT_MORE)
            break;
        if (rc == JSONSPLIT_BAD || !results_record(r, r->partial.data + start, end - start)) {
            results_cut(r, "carried something that is not a result");
            return MHD_NO;
        }
        buf_consume(&r->partial, end);
        jsonsplit_init(&r->split);
    }
    /* Whitespace between records (the keep-alive lines) is not kept. */
    if (r->split.depth == 0) {
        buf_reset(&r->partial);
        jsonsplit_init(&r->split);
    }
    return MHD_YES;
}

enum MHD_Result relay_results_end(struct req *r)
{
    if (atomic_load(&r->events_over))
        return MHD_NO;
    if (r->partial.len > 0) {
        results_cut(r, "ended inside a record");
        return http_reply_error(r, 400, "the result stream ended inside a record");
    }
    atomic_store(&r->events_over, true);
    log_debug("session %.8s…: result stream ended", r->session);
    return http_reply_ok(r);
}

void relay_results_done(struct req *r)
{
    results_cut(r, "broke off");
}

void relay_results_peer_gone(struct req *r)
{
    results_cut(r, "was closed by the publisher");
}
