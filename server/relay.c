/*
 * relay.c - inference relay: infer and /v1/chat/completions push an `infer`
 * task down the publisher's control stream and park the caller; the
 * publisher's result posts (final, chunk by chunk, or error) are handed to
 * the caller as they arrive.
 *
 * Hot path: the caller's body is validated and scanned without building a
 * JSON tree (jsonscan) and spliced byte for byte into the task frame; the
 * only database access is the read of the Llm's routing row. Everything else
 * is in memory under server.mu, and the caller is woken with
 * MHD_resume_connection — no helper threads.
 */
#include "clock.h"
#include "ids.h"
#include "jsonscan.h"
#include "log.h"
#include "protocol.h"
#include "server.h"
#include "sse.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOMBSTONE_MS 60000
#define TOMBSTONES_MAX 65536
#define RETRY_AFTER_OFFLINE 5
#define ROUTE_CACHE_MAX 65536

/* ---- tasks ---- */

static void tombstone_add(struct server *srv, const struct task *t, int64_t now)
{
    struct tombstone *ts = calloc(1, sizeof *ts);
    if (!ts)
        return;
    memcpy(ts->id, t->id, sizeof ts->id);
    memcpy(ts->session_id, t->session_id, sizeof ts->session_id);
    ts->expires = now + TOMBSTONE_MS;
    HASH_ADD_STR(srv->tombstones, id, ts);
    if (++srv->ntombstones > TOMBSTONES_MAX) {
        struct tombstone *oldest = srv->tombstones;
        HASH_DEL(srv->tombstones, oldest);
        free(oldest);
        srv->ntombstones--;
    }
}

static struct session *find_session(struct server *srv, const char *id)
{
    struct session *s;
    HASH_FIND_STR(srv->sessions, id, s);
    return s;
}

static void task_unlink(struct server *srv, struct task *t)
{
    struct session *s = find_session(srv, t->session_id);
    if (!s || !(t->prev_in_session || s->tasks == t))
        return;
    if (t->prev_in_session)
        t->prev_in_session->next_in_session = t->next_in_session;
    else
        s->tasks = t->next_in_session;
    if (t->next_in_session)
        t->next_in_session->prev_in_session = t->prev_in_session;
    t->next_in_session = t->prev_in_session = NULL;
    s->inflight--;
}

/* Frees a task that is finished and that no caller waits on any more. */
static void task_maybe_free(struct server *srv, struct task *t)
{
    if (t->state == TASK_PENDING || t->caller || t->wake)
        return;
    tombstone_add(srv, t, clock_mono_ms());
    HASH_DEL(srv->tasks, t);
    buf_release(&t->body);
    free(t);
}

static struct task *task_new(struct server *srv, struct session *s, enum task_kind kind,
                             const char *llm_name, int64_t timeout_ms)
{
    struct task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    id_sequence_hex(t->id);
    int64_t now = clock_mono_ms();
    t->kind = kind;
    t->state = TASK_PENDING;
    memcpy(t->session_id, s->id, sizeof t->session_id);
    snprintf(t->llm_name, sizeof t->llm_name, "%s", llm_name);
    t->started_at = now;
    t->deadline = now + timeout_ms;
    buf_init(&t->body, (size_t)srv->cfg.max_body * 4);
    HASH_ADD_STR(srv->tasks, id, t);
    t->next_in_session = s->tasks;
    if (s->tasks)
        s->tasks->prev_in_session = t;
    s->tasks = t;
    s->inflight++;
    housekeeper_poke(srv, t->deadline);
    return t;
}

static void send_cancel(struct server *srv, struct task *t)
{
    char frame[128];
    int n = snprintf(frame, sizeof frame, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", t->id);
    dispatch(srv, find_session(srv, t->session_id), frame, (size_t)n);
}

/* Appends an SSE frame for a streaming caller and wakes it. */
static void caller_sse(struct req *r, const char *event, const char *data, size_t len, bool end)
{
    if (r->sse_ended)
        return;
    if (sse_encode_event(&r->sse, event, NULL, data, len) < 0) {
        buf_reset(&r->sse);
        static const char overflow[] = "{\"error\":\"caller fell too far behind the stream\"}";
        sse_encode_event(&r->sse, MCP_EVENT_ERROR, NULL, overflow, sizeof overflow - 1);
        end = true;
    }
    if (end)
        r->sse_ended = true;
    http_resume(r);
}

/* Ends a task. For failures, status is what the caller gets (502, 503, 504)
 * and why is the message. */
static void task_finish(struct server *srv, struct task *t, enum task_state state, int status,
                        const char *why)
{
    if (t->state != TASK_PENDING)
        return;
    t->state = state;
    if (state != TASK_DONE) {
        t->status = status;
        snprintf(t->error, sizeof t->error, "%s", why);
    }
    task_unlink(srv, t);
    if (t->kind == TASK_WAKE) {
        wake_task_finished(srv, t);
    } else if (t->caller) {
        struct req *r = t->caller;
        if (state != TASK_DONE && r->streaming && (r->sse_started || r->sse.len > 0)) {
            json_t *e = json_pack("{s:s,s:i}", "error", why, "status", status);
            char *text = json_dumps(e, JSON_COMPACT);
            caller_sse(r, MCP_EVENT_ERROR, text, strlen(text), true);
            free(text);
            json_decref(e);
        }
        http_resume(r);
    }
    task_maybe_free(srv, t);
}

/* ---- starting an inference ---- */

/* Writes body into out with CR and LF turned into spaces: outside strings
 * they are insignificant whitespace, and valid JSON has none inside. */
static int append_one_line(struct buf *out, const char *body, size_t len)
{
    size_t start = out->len;
    if (buf_append(out, body, len) < 0)
        return -1;
    for (size_t i = start; i < out->len; i++)
        if (out->data[i] == '\n' || out->data[i] == '\r')
            out->data[i] = ' ';
    return 0;
}

int relay_start_task(struct req *r, struct session *s)
{
    struct server *srv = r->srv;
    if (!s->stream) {
        r->fail_status = 503;
        r->retry_after = RETRY_AFTER_OFFLINE;
        snprintf(r->fail_msg, sizeof r->fail_msg, "publisher of '%s' is not connected",
                 r->llm_name);
        return -1;
    }
    if (s->inflight >= srv->cfg.max_inflight) {
        r->fail_status = 503;
        r->retry_after = 1;
        snprintf(r->fail_msg, sizeof r->fail_msg,
                 "publisher of '%s' has %d tasks in flight already (the cap)", r->llm_name,
                 s->inflight);
        return -1;
    }
    struct task *t = task_new(srv, s, TASK_INFER, r->llm_name, srv->cfg.infer_timeout_ms);
    if (!t) {
        r->fail_status = 500;
        snprintf(r->fail_msg, sizeof r->fail_msg, "out of memory");
        return -1;
    }
    t->streaming = r->streaming;
    /* Assembled with appends, not printf: this runs for every request. */
    struct buf frame;
    buf_init(&frame, (size_t)srv->cfg.max_body + 512);
    int rc = 0;
    const char *parts[] = {"event: task\nid: ",
                           t->id,
                           "\ndata: {\"kind\":\"infer\",\"taskId\":\"",
                           t->id,
                           "\",\"llmName\":\"",
                           r->llm_name,
                           r->streaming ? "\",\"streaming\":true,\"body\":"
                                        : "\",\"streaming\":false,\"body\":"};
    size_t need = r->body.len + 3;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        need += strlen(parts[i]);
    rc = buf_reserve(&frame, need);
    for (size_t i = 0; rc == 0 && i < sizeof parts / sizeof parts[0]; i++)
        rc = buf_append_str(&frame, parts[i]);
    if (rc == 0)
        rc = append_one_line(&frame, r->body.data, r->body.len);
    if (rc == 0)
        rc = buf_append(&frame, "}\n\n", 3);
    if (rc == 0)
        rc = dispatch(srv, s, frame.data, frame.len);
    buf_release(&frame);
    if (rc < 0) {
        t->state = TASK_FAILED;
        task_unlink(srv, t);
        task_maybe_free(srv, t);
        r->fail_status = 503;
        r->retry_after = RETRY_AFTER_OFFLINE;
        snprintf(r->fail_msg, sizeof r->fail_msg, "publisher of '%s' is not reachable",
                 r->llm_name);
        return -1;
    }
    t->caller = r;
    r->task = t;
    r->wait = WAIT_TASK;
    log_debug("task %.8s… infer '%s' sent to session %.8s…", t->id, r->llm_name, s->id);
    return 0;
}

struct task *relay_send_wake(struct server *srv, struct session *s, struct wake *w)
{
    struct task *t = task_new(srv, s, TASK_WAKE, w->llm_name, srv->cfg.wake_timeout_ms);
    if (!t)
        return NULL;
    char frame[256];
    int n = snprintf(frame, sizeof frame,
                     "event: task\nid: %s\ndata: {\"kind\":\"wake\",\"taskId\":\"%s\","
                     "\"llmName\":\"%s\"}\n\n",
                     t->id, t->id, w->llm_name);
    if (dispatch(srv, s, frame, (size_t)n) < 0) {
        t->state = TASK_FAILED;
        task_unlink(srv, t);
        task_maybe_free(srv, t);
        return NULL;
    }
    t->wake = w;
    return t;
}

void relay_fail_caller(struct req *r, int status, int retry_after, const char *msg)
{
    if (r->streaming && (r->sse_started || r->sse.len > 0)) {
        json_t *e =
            json_pack("{s:s,s:i,s:i}", "error", msg, "status", status, "retryAfter", retry_after);
        char *text = json_dumps(e, JSON_COMPACT);
        caller_sse(r, MCP_EVENT_ERROR, text, strlen(text), true);
        free(text);
        json_decref(e);
        return;
    }
    r->fail_status = status;
    r->retry_after = retry_after;
    snprintf(r->fail_msg, sizeof r->fail_msg, "%s", msg);
    http_resume(r);
}

static enum MHD_Result reply_failure(struct req *r)
{
    if (r->fail_status == 503)
        return http_reply_unavailable(r, r->retry_after, r->fail_msg);
    return http_reply_error(r, (unsigned)r->fail_status, "%s", r->fail_msg);
}

/* Validates an OpenAI chat request body; on success sets r->streaming. */
static int check_chat_body(struct req *r, struct jsonscan *js, char *err, size_t errlen)
{
    if (r->body.len == 0 || jsonscan_parse(js, r->body.data, r->body.len) < 0) {
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
    r->streaming = stream && stream->kind == JSON_K_TRUE;
    return 0;
}

/* The routing cache (server.mu held): entries are valid while the database's
 * route generation has not moved since they were read. */
static bool route_get(struct server *srv, const char *name, uint64_t gen, struct llm_route *out)
{
    struct route_entry *e;
    HASH_FIND_STR(srv->routes, name, e);
    if (!e || e->gen != gen)
        return false;
    *out = e->route;
    return true;
}

static void route_put(struct server *srv, const char *name, uint64_t gen,
                      const struct llm_route *route)
{
    struct route_entry *e;
    HASH_FIND_STR(srv->routes, name, e);
    if (!e) {
        if (HASH_COUNT(srv->routes) >= ROUTE_CACHE_MAX)
            route_cache_clear(srv);
        e = calloc(1, sizeof *e);
        if (!e)
            return;
        snprintf(e->name, sizeof e->name, "%s", name);
        HASH_ADD_STR(srv->routes, name, e);
    }
    e->route = *route;
    e->gen = gen;
}

void route_cache_clear(struct server *srv)
{
    struct route_entry *e, *tmp;
    HASH_ITER(hh, srv->routes, e, tmp)
    {
        HASH_DEL(srv->routes, e);
        free(e);
    }
}

static enum MHD_Result start_inference(struct req *r, const char *name)
{
    struct server *srv = r->srv;
    snprintf(r->llm_name, sizeof r->llm_name, "%s", name);
    /* Read the generation before the row, so a write in between makes the
     * cached entry stale rather than wrong. */
    uint64_t gen = db_route_generation(srv->db);
    struct llm_route route;
    /* One hold of server.mu from the routing lookup to the dispatch, unless
     * the row has to be read from the database. */
    server_lock(srv);
    if (!route_get(srv, name, gen, &route)) {
        server_unlock(srv);
        int rc = db_llm_route(srv->db, name, &route);
        if (rc == DB_NOT_FOUND)
            return http_reply_error(r, 404, "no Llm named '%s'", name);
        if (rc != DB_OK)
            return http_reply_error(r, 500, "database error");
        server_lock(srv);
        route_put(srv, name, gen, &route);
    }
    bool inactive = strcmp(route.status, MCP_STATUS_INACTIVE) == 0;
    bool hibernating = strcmp(route.status, MCP_STATUS_HIBERNATING) == 0;
    const char *session_id = route.session;
    if (!route.is_virtual) {
        server_unlock(srv);
        return http_reply_error(r, 501,
                                "Llm '%s' is not virtual; this server relays only "
                                "virtual Llms",
                                name);
    }
    if (inactive) {
        server_unlock(srv);
        return http_reply_unavailable(r, RETRY_AFTER_OFFLINE,
                                      "Llm is inactive: its publisher "
                                      "is offline");
    }

    enum MHD_Result ret;
    struct session *s = find_session(srv, session_id);
    if (atomic_load(&srv->stopping)) {
        server_unlock(srv);
        return http_reply_unavailable(r, RETRY_AFTER_OFFLINE, "server shutting down");
    }
    if (!s || !s->stream) {
        server_unlock(srv);
        return http_reply_unavailable(r, RETRY_AFTER_OFFLINE,
                                      "publisher is not connected (no control stream)");
    }
    if (hibernating) {
        ret = wake_hold(r, session_id);
        server_unlock(srv);
        return ret;
    }
    if (relay_start_task(r, s) < 0) {
        server_unlock(srv);
        return reply_failure(r);
    }
    http_suspend(r);
    server_unlock(srv);
    return MHD_YES;
}

enum MHD_Result relay_infer(struct req *r, const char *name)
{
    struct jsonscan js;
    char err[128];
    if (check_chat_body(r, &js, err, sizeof err) < 0)
        return http_reply_error(r, 400, "%s", err);
    return start_inference(r, name);
}

enum MHD_Result relay_openai_chat(struct req *r)
{
    struct jsonscan js;
    char err[128];
    if (check_chat_body(r, &js, err, sizeof err) < 0)
        return http_reply_error(r, 400, "%s", err);
    const struct json_field *model = jsonscan_find(&js, "model");
    if (!model || model->kind != JSON_K_STRING)
        return http_reply_error(r, 400, "model must be a string naming an Llm");
    json_t *v = json_loadb(model->val, model->val_len, JSON_DECODE_ANY, NULL);
    const char *name = json_string_value(v);
    enum MHD_Result rc;
    if (!name || !mcp_name_valid(name))
        rc = http_reply_error(r, 404, "no Llm named '%s'", name ? name : "");
    else
        rc = start_inference(r, name);
    json_decref(v);
    return rc;
}

/* ---- the caller's side once parked ---- */

static ssize_t caller_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct req *r = cls;
    server_lock(r->srv);
    ssize_t n = http_sse_pull(r, &r->sse, r->sse_ended, out, max);
    server_unlock(r->srv);
    return n;
}

/* Queues the SSE response for a streaming caller (server.mu held). */
static enum MHD_Result start_sse(struct req *r)
{
    struct MHD_Response *resp = http_sse_response(caller_read, r);
    if (!resp)
        return MHD_NO;
    r->sse_started = true;
    enum MHD_Result rc = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result relay_resume(struct req *r)
{
    struct server *srv = r->srv;
    server_lock(srv);
    enum MHD_Result rc = MHD_YES;
    if (r->peer_gone) {
        rc = MHD_NO;
    } else if (r->fail_status) {
        server_unlock(srv);
        return reply_failure(r);
    } else if (r->wait == WAIT_WAKE) {
        if (r->streaming && r->sse.len > 0)
            rc = start_sse(r);
        else if (atomic_load(&srv->stopping))
            rc = http_reply_unavailable(r, RETRY_AFTER_OFFLINE, "server shutting down");
        else
            http_suspend(r);
    } else if (r->wait == WAIT_TASK && r->task) {
        struct task *t = r->task;
        if (r->streaming && (r->sse.len > 0 || r->sse_ended)) {
            rc = start_sse(r);
        } else if (t->state == TASK_PENDING) {
            if (atomic_load(&srv->stopping))
                rc = http_reply_unavailable(r, RETRY_AFTER_OFFLINE, "server shutting down");
            else
                http_suspend(r);
        } else if (t->state == TASK_DONE) {
            /* The body is handed over, not copied: the task is done with it. */
            size_t len = t->body.len;
            char *body = buf_steal(&t->body);
            struct MHD_Response *resp =
                body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE) : NULL;
            if (!resp)
                free(body);
            if (resp) {
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
                rc = MHD_queue_response(r->conn, (unsigned)t->status, resp);
                MHD_destroy_response(resp);
            } else {
                rc = MHD_NO;
            }
        } else {
            server_unlock(srv);
            if (t->status == 503)
                return http_reply_unavailable(r, RETRY_AFTER_OFFLINE, t->error);
            return http_reply_error(r, (unsigned)t->status, "%s", t->error);
        }
    } else {
        server_unlock(srv);
        return http_reply_error(r, 500, "request lost its task");
    }
    server_unlock(srv);
    return rc;
}

/* relay_resume() for a caller connection's request (server.mu held): there
 * is no callback to come back to, so what is due is written out here, and
 * the request is finished once its answer is complete. */
void relay_deliver(struct req *r)
{
    struct server *srv = r->srv;
    bool stopping = atomic_load(&srv->stopping);
    struct task *t = r->wait == WAIT_TASK ? r->task : NULL;
    if (r->peer_gone) {
        /* the connection is closing; nothing to write */
    } else if (r->fail_status) {
        reply_failure(r);
    } else if (r->streaming && (r->sse.len > 0 || (r->sse_ended && r->sse_started))) {
        caller_sse_send(r);
        if (!r->sse_ended) {
            r->suspended = true;
            return;
        }
    } else if (r->wait == WAIT_WAKE || (t && t->state == TASK_PENDING)) {
        if (!stopping) {
            r->suspended = true;
            return;
        }
        if (r->sse_started) {
            static const char bye[] = "{\"error\":\"server shutting down\",\"status\":503}";
            sse_encode_event(&r->sse, MCP_EVENT_ERROR, NULL, bye, sizeof bye - 1);
            r->sse_ended = true;
            caller_sse_send(r);
        } else {
            http_reply_unavailable(r, RETRY_AFTER_OFFLINE, "server shutting down");
        }
    } else if (t && t->state == TASK_DONE) {
        caller_reply(r, (unsigned)t->status, "application/json", t->body.data ? t->body.data : "",
                     t->body.len, 0, NULL);
    } else if (t) {
        if (t->status == 503)
            http_reply_unavailable(r, RETRY_AFTER_OFFLINE, t->error);
        else
            http_reply_error(r, (unsigned)t->status, "%s", t->error);
    } else {
        http_reply_error(r, 500, "request lost its task");
    }
    caller_finish(r);
}

void relay_request_done(struct req *r)
{
    struct server *srv = r->srv;
    struct task *t = r->task;
    buf_release(&r->sse);
    if (!t)
        return;
    r->task = NULL;
    t->caller = NULL;
    if (t->state == TASK_PENDING) {
        log_info("task %.8s… for '%s': caller went away, cancelling", t->id, t->llm_name);
        send_cancel(srv, t);
        task_finish(srv, t, TASK_CANCELLED, 499, "caller went away");
    } else {
        task_maybe_free(srv, t);
    }
}

void relay_session_lost(struct server *srv, struct session *s, const char *why)
{
    while (s->tasks)
        task_finish(srv, s->tasks, TASK_FAILED, 502, why);
}

void relay_shutdown(struct server *srv)
{
    struct task *t, *tmp;
    HASH_ITER(hh, srv->tasks, t, tmp)
    {
        if (t->state == TASK_PENDING)
            task_finish(srv, t, TASK_FAILED, 503, "server shutting down");
    }
}

int64_t relay_tick(struct server *srv, int64_t now)
{
    int64_t next = INT64_MAX;
    struct task *t, *tmp;
    HASH_ITER(hh, srv->tasks, t, tmp)
    {
        if (t->state != TASK_PENDING)
            continue;
        bool idle = t->idle_deadline && t->idle_deadline <= now;
        if (t->deadline <= now || idle) {
            const char *why =
                idle ? "publisher sent nothing within the idle timeout"
                     : (t->kind == TASK_WAKE ? "wake timed out" : "inference timed out");
            log_warn("task %.8s… for '%s': %s", t->id, t->llm_name, why);
            send_cancel(srv, t);
            task_finish(srv, t, TASK_TIMEDOUT, 504, why);
            continue;
        }
        if (t->deadline < next)
            next = t->deadline;
        if (t->idle_deadline && t->idle_deadline < next)
            next = t->idle_deadline;
    }
    while (srv->tombstones && srv->tombstones->expires <= now) {
        struct tombstone *ts = srv->tombstones;
        HASH_DEL(srv->tombstones, ts);
        free(ts);
        srv->ntombstones--;
    }
    if (srv->tombstones && srv->tombstones->expires < next)
        next = srv->tombstones->expires;
    return next;
}

/* ---- result posts from the publisher ---- */

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

/* Decodes a JSON string value into out (truncating). */
static void decode_string(const struct json_field *f, char *out, size_t cap)
{
    json_t *v = json_loadb(f->val, f->val_len, JSON_DECODE_ANY, NULL);
    snprintf(out, cap, "%s", json_string_value(v) ? json_string_value(v) : "");
    json_decref(v);
}

struct result_post {
    enum { RESULT_FINAL, RESULT_CHUNK, RESULT_ERROR } kind;
    long status;
    const char *body; /* raw JSON */
    size_t body_len;
    struct json_field chunk_data; /* points into the request body */
    bool has_data;
    bool done;
    char error[256];
};

static int parse_result(struct req *r, struct result_post *p, char *err, size_t errlen)
{
    struct jsonscan js;
    if (r->body.len == 0 || jsonscan_parse(&js, r->body.data, r->body.len) < 0) {
        snprintf(err, errlen, "body is not a valid JSON object");
        return -1;
    }
    const struct json_field *status = jsonscan_find(&js, "status");
    const struct json_field *body = jsonscan_find(&js, "body");
    const struct json_field *chunk = jsonscan_find(&js, "chunk");
    const struct json_field *error = jsonscan_find(&js, "error");
    int kinds = (status || body) + (chunk != NULL) + (error != NULL);
    if (kinds != 1) {
        snprintf(err, errlen, "body must hold exactly one of {status, body}, {chunk} or {error}");
        return -1;
    }
    memset(p, 0, sizeof *p);
    if (status || body) {
        p->kind = RESULT_FINAL;
        if (!status || !is_integer(status, &p->status) || p->status < 100 || p->status > 599) {
            snprintf(err, errlen, "status must be an HTTP status code (100-599)");
            return -1;
        }
        p->body = body ? body->val : "null";
        p->body_len = body ? body->val_len : 4;
    } else if (chunk) {
        p->kind = RESULT_CHUNK;
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
        if (!data && !(done && done->kind == JSON_K_TRUE)) {
            snprintf(err, errlen, "chunk needs data, done: true, or both");
            return -1;
        }
        if (data) {
            p->chunk_data = *data;
            p->has_data = true;
        }
        p->done = done && done->kind == JSON_K_TRUE;
    } else {
        p->kind = RESULT_ERROR;
        if (error->kind != JSON_K_STRING) {
            snprintf(err, errlen, "error must be a string");
            return -1;
        }
        decode_string(error, p->error, sizeof p->error);
    }
    return 0;
}

/* Streams one chunk to the caller (server.mu held). */
static void deliver_chunk(struct server *srv, struct task *t, const struct result_post *p)
{
    struct req *r = t->caller;
    if (r && p->has_data) {
        const struct json_field *d = &p->chunk_data;
        if (d->kind == JSON_K_STRING) {
            json_t *v = json_loadb(d->val, d->val_len, JSON_DECODE_ANY, NULL);
            const char *s = json_string_value(v);
            caller_sse(r, NULL, s ? s : "", s ? json_string_length(v) : 0, false);
            json_decref(v);
        } else {
            /* Objects are spliced as sent; line breaks are whitespace. */
            struct buf line;
            buf_init(&line, d->val_len + 1);
            append_one_line(&line, d->val, d->val_len);
            caller_sse(r, NULL, line.data, line.len, false);
            buf_release(&line);
        }
    }
    if (p->done) {
        if (r)
            caller_sse(r, NULL, "[DONE]", 6, true);
        task_finish(srv, t, TASK_DONE, 200, "");
    } else {
        t->idle_deadline = clock_mono_ms() + srv->cfg.idle_timeout_ms;
        housekeeper_poke(srv, t->idle_deadline);
    }
}

static void deliver_final(struct server *srv, struct task *t, const struct result_post *p)
{
    t->status = (int)p->status;
    if (t->kind == TASK_WAKE) {
        if (p->status >= 200 && p->status < 300)
            task_finish(srv, t, TASK_DONE, 200, "");
        else {
            char why[96];
            snprintf(why, sizeof why, "wake failed: publisher answered status %ld", p->status);
            task_finish(srv, t, TASK_FAILED, 503, why);
        }
        return;
    }
    struct req *r = t->caller;
    if (r && r->streaming && (r->sse_started || r->sse.len > 0)) {
        /* The stream already started: a late final result ends it. */
        if (p->status >= 400) {
            task_finish(srv, t, TASK_FAILED, (int)p->status, "backend error");
            return;
        }
        caller_sse(r, NULL, p->body, p->body_len, false);
        caller_sse(r, NULL, "[DONE]", 6, true);
    } else if (buf_append(&t->body, p->body, p->body_len) < 0) {
        task_finish(srv, t, TASK_FAILED, 502, "publisher's result is too large");
        return;
    }
    task_finish(srv, t, TASK_DONE, (int)p->status, "");
}

enum MHD_Result relay_result(struct req *r, const char *task_id)
{
    struct server *srv = r->srv;
    const char *sid =
        r->lc ? caller_session(r)
              : MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MCP_HEADER_SESSION);
    if (!sid || !*sid)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    struct result_post p;
    char err[160];
    if (parse_result(r, &p, err, sizeof err) < 0)
        return http_reply_error(r, 400, "%s", err);

    server_lock(srv);
    struct task *t;
    HASH_FIND_STR(srv->tasks, task_id, t);
    struct session *s = find_session(srv, sid);
    bool owner_ok = !s || strcmp(s->owner, r->owner) == 0;
    if (!t) {
        struct tombstone *ts;
        HASH_FIND_STR(srv->tombstones, task_id, ts);
        bool gone = ts && strcmp(ts->session_id, sid) == 0 && owner_ok && s;
        server_unlock(srv);
        if (gone)
            return http_reply_error(r, 410, "task already finished, cancelled or timed out");
        return http_reply_error(r, 404, "no such task");
    }
    if (strcmp(t->session_id, sid) != 0 || !s || !owner_ok) {
        server_unlock(srv);
        return http_reply_error(r, 404, "no such task");
    }
    if (t->state != TASK_PENDING) {
        server_unlock(srv);
        return http_reply_error(r, 410, "task already finished, cancelled or timed out");
    }
    if (p.kind == RESULT_CHUNK && (t->kind != TASK_INFER || !t->streaming)) {
        server_unlock(srv);
        return http_reply_error(r, 400, "task is not streaming: post {status, body}");
    }
    switch (p.kind) {
    case RESULT_FINAL:
        deliver_final(srv, t, &p);
        break;
    case RESULT_CHUNK:
        deliver_chunk(srv, t, &p);
        break;
    case RESULT_ERROR: {
        char why[300];
        snprintf(why, sizeof why, "publisher error: %s", p.error);
        task_finish(srv, t, TASK_FAILED, t->kind == TASK_WAKE ? 503 : 502, why);
        break;
    }
    }
    server_unlock(srv);
    return http_reply_ok(r);
}
