/*
 * broker.c - sessions, streams' queues, tasks, callers, wakes, pools,
 * tombstones.
 *
 * One mutex guards all of it. Endpoints to wake are collected on a list
 * while it is held and woken by unlock(), after it is released.
 */
#include "broker.h"
#include "buf.h"
#include "ids.h"
#include "protocol.h"
#include "sse.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#define TOMBSTONE_MS 60000
#define TOMBSTONES_MAX 65536
#define SESSION_IDLE_MS (10 * 60 * 1000) /* a record with no stream nor task */
#define SESSION_REAP_EVERY_MS 60000
#define RETRY_OFFLINE 5
/* Streams that fall due together (thousands opened within a second after
 * a restart) are pinged in batches, so no tick wakes them all at once. */
#define PINGS_PER_TICK 256
#define PING_BATCH_GAP_MS 2 /* Retry-After when the publisher is away */

struct session {
    char id[BROKER_ID_LEN];
    char owner[BROKER_OWNER_MAX];
    unsigned features;
    struct broker_stream *stream; /* the current one, or NULL */
    struct task *tasks;           /* in flight on this session */
    int inflight;
    int pool_refs; /* pool members naming it: kept while they do */
    int64_t last_seen;
    UT_hash_handle hh;
};

struct broker_stream {
    struct broker_ep *ep;
    struct session *session; /* while it is the session's current stream */
    char sid[BROKER_ID_LEN];
    char token_hash[BROKER_HASH_LEN];
    struct buf out;
    bool ending;     /* end the body once out is drained */
    bool broken;     /* abort the body */
    bool deactivate; /* its close makes the session's rows inactive */
    uint64_t serial; /* tells this stream from the session's others */
    int64_t next_ping;
    struct broker_stream *prev, *next; /* open streams, by next_ping */
    struct broker_stream *next_cut;    /* on broker.cuts */
};

enum task_kind { TASK_INFER, TASK_WAKE };

struct task {
    char id[BROKER_ID_LEN];
    enum task_kind kind;
    struct session *session;
    char llm[BROKER_NAME_MAX];
    bool streaming;
    struct broker_call *call; /* TASK_INFER, while the caller waits */
    struct wake *wake;        /* TASK_WAKE */
    int64_t deadline;
    int64_t idle_deadline; /* 0 until the first piece of a stream */
    struct task *snext, *sprev;
    UT_hash_handle hh;
};

enum call_state {
    CALL_HELD,    /* waiting for a wake */
    CALL_WAITING, /* its task runs; no head yet */
    CALL_HEAD,    /* the head is ready to be taken */
    CALL_FAILED,  /* err is ready to be taken as the reply */
    CALL_SENT,    /* the head was taken */
};

struct broker_call {
    struct broker_ep *ep;
    enum call_state state;
    struct task *task;
    struct wake *wake;
    struct broker_call *hprev, *hnext; /* held on a wake (utlist) */
    bool streaming;
    bool anthropic;
    /* The request, kept while held for a wake and, for a pool call, until
     * its answer begins (it may go to another member). */
    char llm[BROKER_NAME_MAX];
    char *path;
    char *body;
    size_t body_len;
    unsigned needs;                /* BROKER_FEAT_* */
    struct pool *pool;             /* a pool call */
    char failed_on[BROKER_ID_LEN]; /* the session its first task failed on; "" */
    /* The head, once known. */
    int status;
    bool sse;
    char ctype[128];
    struct buf hbody;
    struct buf headers;
    struct broker_error err;
    int fail_status;           /* how it failed, once it did (0: it did not) */
    struct broker_usage usage; /* what the backend reported */
    /* The event stream after an sse head. */
    struct buf events;
    bool ended;
};

struct wake {
    char llm[BROKER_NAME_MAX]; /* the Llm woken (a pool's: the member) */
    struct pool *pool;         /* a pool's wake; else it is in wake_by_llm */
    struct task *task;
    struct broker_call *held; /* in arrival order (utlist) */
    int nheld;
    int64_t started;
    enum broker_wake_outcome outcome; /* why it fails, once known */
    UT_hash_handle hh;
};

/* A pool member: a row with its pool's name, and its publisher's session. */
struct member {
    char llm[BROKER_NAME_MAX];
    struct session *s; /* holds a pool_ref */
    bool hibernating;
    uint64_t requests, failovers;
};

/* A pool as the database had it at gen. Kept for the broker's life, one
 * per pool name ever routed to, so its cursor and counts survive changes
 * of membership. */
struct pool {
    char name[BROKER_NAME_MAX];
    uint64_t gen;
    struct member *m; /* sorted by llm */
    size_t n;
    size_t cursor;     /* the next search for a member starts here */
    struct wake *wake; /* its one wake, or NULL */
    UT_hash_handle hh;
};

struct tombstone {
    char id[BROKER_ID_LEN];
    char sid[BROKER_ID_LEN];
    int64_t expires;
    UT_hash_handle hh; /* the table keeps insertion order: oldest first */
};

struct broker {
    struct broker_config cfg;
    pthread_mutex_t mu;
    struct broker_ep *wakes;    /* to wake at unlock */
    struct broker_stream *cuts; /* streams over their backlog, to cut at unlock */
    struct session *sessions;
    struct task *tasks;
    struct wake *wake_by_llm;
    struct pool *pools;
    struct tombstone *tombs;
    unsigned ntombs;
    struct broker_stream *streams; /* open, by next_ping (utlist) */
    unsigned nstreams, ncalls;
    unsigned overflows; /* streams cut off for their backlog, ever */
    uint64_t stream_serial;
    int64_t next_reap;
    int64_t now; /* the latest time a caller passed in, for calls that take none */
    bool stopping;
};

/* ---- locking and waking ---- */

static void lock(struct broker *b)
{
    pthread_mutex_lock(&b->mu);
}

/* Notes the time a caller passed in (lock held). */
static void seen(struct broker *b, int64_t now)
{
    if (now > b->now)
        b->now = now;
}

static void session_cut(struct broker *b, struct session *s, int status, const char *why);

static void unlock(struct broker *b)
{
    while (b->cuts) {
        struct broker_stream *st = b->cuts;
        b->cuts = st->next_cut;
        st->next_cut = NULL;
        if (st->session)
            session_cut(b, st->session, 502,
                        "the publisher stopped reading its control stream (backlog over the cap)");
    }
    struct broker_ep *ep = b->wakes;
    b->wakes = NULL;
    pthread_mutex_unlock(&b->mu);
    while (ep) {
        struct broker_ep *next = ep->next_wake;
        ep->next_wake = NULL;
        ep->wake(ep);
        ep = next;
    }
}

static void unpark(struct broker *b, struct broker_ep *ep)
{
    if (!ep || !ep->parked)
        return;
    ep->parked = false;
    ep->next_wake = b->wakes;
    b->wakes = ep;
}

static bool park(struct broker_ep *ep)
{
    if (!ep->park(ep))
        return false;
    ep->parked = true;
    return true;
}

/* Takes up to max bytes of q for a response's body (lock held): the
 * bytes, or the end once ended and drained, or parks ep. */
static ssize_t queue_read(struct buf *q, bool ended, struct broker_ep *ep, char *out, size_t max)
{
    if (q->len > 0) {
        size_t k = q->len < max ? q->len : max;
        memcpy(out, q->data, k);
        buf_consume(q, k);
        return (ssize_t)k;
    }
    if (ended)
        return BROKER_END;
    return park(ep) ? BROKER_PARKED : BROKER_GONE;
}

/* ---- streams ---- */

/* Queues bytes on a stream. A stream too far behind is cut off: its
 * session loses it and its tasks fail at once, and its response is
 * aborted as soon as libmicrohttpd runs its reader (or times it out). */
static int stream_queue(struct broker *b, struct broker_stream *st, const char *p, size_t n)
{
    if (st->broken || st->ending)
        return -1;
    if (st->out.len + n > b->cfg.stream_backlog || buf_append(&st->out, p, n) < 0) {
        /* Cut at unlock(): this may run in the middle of a task's own
         * bookkeeping, which failing the session's tasks would pull away. */
        st->broken = true;
        b->overflows++;
        st->next_cut = b->cuts;
        b->cuts = st;
        unpark(b, st->ep);
        return -1;
    }
    unpark(b, st->ep);
    return 0;
}

static int dispatch(struct broker *b, struct session *s, const char *frame, size_t len)
{
    if (!s || !s->stream)
        return -1;
    return stream_queue(b, s->stream, frame, len);
}

static struct session *session_find(struct broker *b, const char *sid)
{
    struct session *s;
    HASH_FIND_STR(b->sessions, sid, s);
    return s;
}

/* The record of session sid, made when there is none yet. NULL when out
 * of memory. */
static struct session *session_make(struct broker *b, const char *sid, int64_t now)
{
    struct session *s = session_find(b, sid);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        snprintf(s->id, sizeof s->id, "%s", sid);
        s->last_seen = now;
        HASH_ADD_STR(b->sessions, id, s);
    }
    return s;
}

static struct session *session_get(struct broker *b, const char *sid, const char *owner,
                                   int64_t now)
{
    struct session *s = session_make(b, sid, now);
    if (!s)
        return NULL;
    snprintf(s->owner, sizeof s->owner, "%s", owner);
    s->last_seen = now;
    return s;
}

/* ---- tasks and calls ---- */

static void tombstone_drop_oldest(struct broker *b)
{
    struct tombstone *ts = b->tombs;
    HASH_DEL(b->tombs, ts);
    free(ts);
    b->ntombs--;
}

static void tombstone_add(struct broker *b, const struct task *t, int64_t now)
{
    struct tombstone *ts;
    HASH_FIND_STR(b->tombs, t->id, ts);
    if (ts)
        return;
    ts = calloc(1, sizeof *ts);
    if (!ts)
        return; /* a late post then gets 404 instead of 410 */
    memcpy(ts->id, t->id, sizeof ts->id);
    memcpy(ts->sid, t->session ? t->session->id : "", sizeof ts->sid);
    ts->expires = now + TOMBSTONE_MS;
    HASH_ADD_STR(b->tombs, id, ts);
    b->ntombs++;
    if (b->ntombs > TOMBSTONES_MAX)
        tombstone_drop_oldest(b);
}

/* Takes a task out of its session and the table, leaves a tombstone. */
static void task_end(struct broker *b, struct task *t, int64_t now)
{
    struct session *s = t->session;
    if (s) {
        if (t->sprev)
            t->sprev->snext = t->snext;
        else
            s->tasks = t->snext;
        if (t->snext)
            t->snext->sprev = t->sprev;
        s->inflight--;
        s->last_seen = now;
    }
    if (t->call)
        t->call->task = NULL;
    HASH_DEL(b->tasks, t);
    tombstone_add(b, t, now);
    free(t);
}

static struct task *task_new(struct broker *b, struct session *s, enum task_kind kind,
                             const char *llm, int64_t now, int64_t timeout)
{
    struct task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    id_sequence_hex(t->id);
    t->kind = kind;
    t->session = s;
    snprintf(t->llm, sizeof t->llm, "%s", llm);
    t->deadline = now + timeout;
    HASH_ADD_STR(b->tasks, id, t);
    t->snext = s->tasks;
    if (s->tasks)
        s->tasks->sprev = t;
    s->tasks = t;
    s->inflight++;
    return t;
}

static void send_cancel(struct broker *b, struct task *t)
{
    char frame[128];
    int n = snprintf(frame, sizeof frame, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", t->id);
    dispatch(b, t->session, frame, (size_t)n);
}

static void set_error(struct broker_error *e, int status, int retry_after, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_error(struct broker_error *e, int status, int retry_after, const char *code,
                      const char *fmt, ...)
{
    e->status = status;
    e->retry_after = retry_after;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

static const char *error_type(int status)
{
    if (status == 429)
        return "rate_limit_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

/* Anthropic's error type for an HTTP status. */
static const char *anthropic_type(int status)
{
    if (status == 429)
        return "rate_limit_error";
    if (status == 503)
        return "overloaded_error";
    return status >= 500 ? "api_error" : "invalid_request_error";
}

/* Appends an error event and ends the caller's stream: OpenAI's shape, or
 * Anthropic's for its Messages API. */
static void events_error(struct broker *b, struct broker_call *c, const struct broker_error *e)
{
    json_t *o = c->anthropic ? json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                                         anthropic_type(e->status), "message", e->msg)
                             : json_pack("{s:{s:s,s:s,s:s?}}", "error", "message", e->msg, "type",
                                         error_type(e->status), "code", e->code);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    static const char fallback[] =
        "{\"error\":{\"message\":\"relay failed\",\"type\":\"server_error\",\"code\":null}}";
    /* The backlog cap must not swallow the last word. */
    c->events.max += 512 + sizeof fallback + (text ? strlen(text) : 0);
    sse_encode_event(&c->events, "error", NULL, text ? text : fallback,
                     text ? strlen(text) : sizeof fallback - 1);
    free(text);
    c->ended = true;
    unpark(b, c->ep);
}

/* Fails a call: an error reply when nothing was sent yet, else an error
 * event that ends its stream. */
static void call_fail(struct broker *b, struct broker_call *c, const struct broker_error *e)
{
    if (c->state == CALL_SENT || (c->state == CALL_HEAD && c->sse)) {
        if (!c->ended) {
            c->fail_status = e->status;
            events_error(b, c, e);
        }
        return;
    }
    if (c->state == CALL_HEAD)
        return; /* a complete answer is already waiting */
    c->fail_status = e->status;
    c->err = *e;
    c->state = CALL_FAILED;
    unpark(b, c->ep);
}

/* Fails a task: its caller (or its wake's callers) get e. */
static void wake_fail(struct broker *b, struct wake *w, const struct broker_error *e);

static void task_fail(struct broker *b, struct task *t, const struct broker_error *e, bool cancel,
                      int64_t now)
{
    if (cancel)
        send_cancel(b, t);
    if (t->kind == TASK_WAKE) {
        struct wake *w = t->wake;
        t->wake = NULL;
        task_end(b, t, now);
        if (w) {
            w->task = NULL;
            wake_fail(b, w, e);
        }
        return;
    }
    if (t->call)
        call_fail(b, t->call, e);
    task_end(b, t, now);
}

static void task_fail_over(struct broker *b, struct task *t, const struct broker_error *e,
                           int64_t now);

/* The session's stream is gone: its tasks fail, and pool calls among them
 * go to another member. */
static void session_fail_tasks(struct broker *b, struct session *s, int status, const char *why,
                               int64_t now)
{
    struct broker_error e;
    set_error(&e, status, status == 503 ? RETRY_OFFLINE : 0, "publisher_error", "%s", why);
    while (s->tasks)
        task_fail_over(b, s->tasks, &e, now);
}

/* The request's body is no longer needed: no task will be sent for it. */
static void call_drop_body(struct broker_call *c)
{
    free(c->body);
    c->body = NULL;
    c->body_len = 0;
}

/* Copies body into the frame with CR and LF as spaces: outside strings they
 * are insignificant whitespace, and valid JSON has none inside. */
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

/* The error for a call that needs features its publisher (who: "the
 * publisher of 'x'", "no member of pool 'x'") lacks. */
static void feature_error(struct broker_error *e, const char *who, unsigned missing)
{
    if (missing & BROKER_FEAT_PATHS)
        set_error(e, 400, 0, "unsupported_route",
                  "%s serves only chat completions: its mcplocal does not declare the \"paths\" "
                  "feature (upgrade mcplocal)",
                  who);
    else
        set_error(e, 400, 0, "unsupported_route",
                  "%s can stream only chat completions: its mcplocal does not declare the "
                  "\"streamed-results\" feature this route's named events need (upgrade mcplocal)",
                  who);
}

/* Sends c's infer task for Llm llm to session s. 0, or -1 with e filled. */
static int start_task(struct broker *b, struct broker_call *c, struct session *s, const char *llm,
                      int64_t now, struct broker_error *e)
{
    if (!s || !s->stream) {
        set_error(e, 503, RETRY_OFFLINE, "publisher_unavailable",
                  "publisher of '%s' is not connected", llm);
        return -1;
    }
    if (c->needs & ~s->features) {
        char who[BROKER_NAME_MAX + 32];
        snprintf(who, sizeof who, "the publisher of '%s'", llm);
        feature_error(e, who, c->needs & ~s->features);
        return -1;
    }
    if (s->inflight >= b->cfg.max_inflight) {
        set_error(e, 503, 1, "publisher_busy",
                  "publisher of '%s' has %d tasks in flight already (the cap)", llm, s->inflight);
        return -1;
    }
    struct task *t = task_new(b, s, TASK_INFER, llm, now, b->cfg.infer_timeout_ms);
    if (!t) {
        set_error(e, 500, 0, NULL, "out of memory");
        return -1;
    }
    t->streaming = c->streaming;
    struct buf frame;
    buf_init(&frame, b->cfg.max_frame);
    const char *parts[] = {"event: task\nid: ",
                           t->id,
                           "\ndata: {\"kind\":\"infer\",\"taskId\":\"",
                           t->id,
                           "\",\"llmName\":\"",
                           llm,
                           c->streaming ? "\",\"streaming\":true" : "\",\"streaming\":false",
                           c->path ? ",\"path\":\"" : "",
                           c->path ? c->path : "",
                           c->path ? "\"" : "",
                           ",\"body\":"};
    size_t need = c->body_len + 3;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        need += strlen(parts[i]);
    int rc = buf_reserve(&frame, need);
    for (size_t i = 0; rc == 0 && i < sizeof parts / sizeof parts[0]; i++)
        rc = buf_append_str(&frame, parts[i]);
    if (rc == 0)
        rc = append_one_line(&frame, c->body, c->body_len);
    if (rc == 0)
        rc = buf_append(&frame, "}\n\n", 3);
    if (rc == 0)
        rc = dispatch(b, s, frame.data, frame.len);
    buf_release(&frame);
    if (rc < 0) {
        bool stalled = s->stream && s->stream->broken;
        task_end(b, t, now);
        set_error(e, 503, RETRY_OFFLINE, stalled ? "publisher_stalled" : "publisher_unavailable",
                  stalled ? "publisher of '%s' stopped reading its control stream (stream "
                            "backlog over the cap); it was disconnected"
                          : "publisher of '%s' is not reachable",
                  llm);
        return -1;
    }
    t->call = c;
    c->task = t;
    c->state = CALL_WAITING;
    if (!c->pool)
        call_drop_body(c); /* the frame has it now */
    return 0;
}

/* ---- wakes ---- */

static void wake_free(struct broker *b, struct wake *w)
{
    if (!w->pool)
        HASH_DEL(b->wake_by_llm, w);
    else if (w->pool->wake == w)
        w->pool->wake = NULL;
    free(w);
}

/* Tells the observer that w ended. */
static void wake_ended(struct broker *b, struct wake *w, enum broker_wake_outcome outcome,
                       int64_t now)
{
    if (b->cfg.on_wake_end)
        b->cfg.on_wake_end(b->cfg.observer, outcome, now - w->started);
}

static void wake_fail(struct broker *b, struct wake *w, const struct broker_error *e)
{
    wake_ended(b, w,
               b->stopping && w->outcome == BROKER_WAKE_GONE ? BROKER_WAKE_SHUTDOWN : w->outcome,
               b->now);
    struct broker_error held = *e;
    if (held.status != 503) {
        held.status = 503;
        held.retry_after = RETRY_OFFLINE;
    }
    if (!held.retry_after)
        held.retry_after = RETRY_OFFLINE;
    while (w->held) {
        struct broker_call *c = w->held;
        DL_DELETE2(w->held, c, hprev, hnext);
        c->wake = NULL;
        call_fail(b, c, &held);
    }
    wake_free(b, w);
}

/* Fails a wake whose task may still run (shutdown). */
static void wake_abort(struct broker *b, struct wake *w, const struct broker_error *e)
{
    if (w->task) {
        w->task->wake = NULL;
        w->task = NULL;
    }
    wake_fail(b, w, e);
}

static int pool_start(struct broker *b, struct broker_call *c, int64_t now, struct broker_error *e);
static struct member *member_find(struct pool *p, const char *llm);

static void wake_succeeded(struct broker *b, struct wake *w, struct session *s, int64_t now)
{
    wake_ended(b, w, BROKER_WAKE_OK, now);
    struct pool *p = w->pool;
    if (p) {
        /* The held calls pick again, now with the woken member active;
         * one that still finds none may start the pool's next wake. */
        struct member *m = member_find(p, w->llm);
        if (m)
            m->hibernating = false;
        if (p->wake == w)
            p->wake = NULL;
    }
    while (w->held) {
        struct broker_call *c = w->held;
        DL_DELETE2(w->held, c, hprev, hnext);
        w->nheld--;
        c->wake = NULL;
        struct broker_error e;
        int rc = p ? pool_start(b, c, now, &e) : start_task(b, c, s, c->llm, now, &e);
        if (rc < 0)
            call_fail(b, c, &e);
    }
    wake_free(b, w);
}

/* Sends a wake task for llm to session s. Returns the new wake, not yet
 * filed anywhere, or NULL with e filled. */
static struct wake *wake_start(struct broker *b, struct session *s, const char *llm, int64_t now,
                               struct broker_error *e)
{
    if (!s || !s->stream) {
        set_error(e, 503, RETRY_OFFLINE, "publisher_unavailable",
                  "publisher of '%s' is not connected", llm);
        return NULL;
    }
    struct wake *w = calloc(1, sizeof *w);
    struct task *t = w ? task_new(b, s, TASK_WAKE, llm, now, b->cfg.wake_timeout_ms) : NULL;
    if (!t) {
        free(w);
        set_error(e, 500, 0, NULL, "out of memory");
        return NULL;
    }
    char frame[256];
    int n = snprintf(frame, sizeof frame,
                     "event: task\nid: %s\ndata: {\"kind\":\"wake\",\"taskId\":\"%s\","
                     "\"llmName\":\"%s\"}\n\n",
                     t->id, t->id, llm);
    if (dispatch(b, s, frame, (size_t)n) < 0) {
        task_end(b, t, now);
        free(w);
        set_error(e, 503, RETRY_OFFLINE, "publisher_unavailable",
                  "publisher of '%s' is not reachable", llm);
        return NULL;
    }
    snprintf(w->llm, sizeof w->llm, "%s", llm);
    w->started = now;
    w->task = t;
    t->wake = w;
    return w;
}

/* Holds c until wake w ends. 0, or -1 with e filled (the cap). */
static int wake_hold(struct broker *b, struct wake *w, struct broker_call *c,
                     struct broker_error *e)
{
    if (w->nheld >= b->cfg.max_held) {
        set_error(e, 503, RETRY_OFFLINE, "publisher_unavailable",
                  "'%s' is waking up and holds too many callers already (%d, the cap)", c->llm,
                  w->nheld);
        return -1;
    }
    c->state = CALL_HELD;
    c->wake = w;
    DL_APPEND2(w->held, c, hprev, hnext);
    w->nheld++;
    return 0;
}

static int hold_for_wake(struct broker *b, struct broker_call *c, struct session *s, int64_t now,
                         struct broker_error *e)
{
    struct wake *w;
    HASH_FIND_STR(b->wake_by_llm, c->llm, w);
    if (!w) {
        w = wake_start(b, s, c->llm, now, e);
        if (!w)
            return -1;
        HASH_ADD_STR(b->wake_by_llm, llm, w);
    }
    return wake_hold(b, w, c, e);
}

static void wake_unhold(struct wake *w, struct broker_call *c)
{
    DL_DELETE2(w->held, c, hprev, hnext);
    w->nheld--;
    c->wake = NULL;
}

/* ---- pools ---- */

static struct pool *pool_find(struct broker *b, const char *name)
{
    struct pool *p;
    HASH_FIND_STR(b->pools, name, p);
    return p;
}

static struct member *member_find(struct pool *p, const char *llm)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->m[i].llm, llm) == 0)
            return &p->m[i];
    return NULL;
}

/* What a search for a member saw, to say why it found none. */
struct pick {
    struct member *sleeper; /* a hibernating member able to take the call */
    unsigned have;          /* the features of the connected members */
    bool connected;         /* a member's publisher has a usable stream */
    bool able;              /* ... and the features the call needs */
    bool active;            /* ... and is active, at its cap or not */
};

/* The member of p to send c's task to: connected, active, able, under the
 * in-flight cap, with the fewest tasks in flight; among equals the first
 * from the pool's cursor, which then moves past it, so that a burst goes
 * round the members evenly. A search stops at the first idle member. */
static struct member *pool_pick(struct broker *b, struct pool *p, const struct broker_call *c,
                                struct pick *pk)
{
    memset(pk, 0, sizeof *pk);
    struct member *best = NULL;
    size_t n = p->n, i = p->cursor < n ? p->cursor : 0, best_i = 0;
    int best_load = b->cfg.max_inflight;
    for (size_t k = 0; k < n; k++, i = i + 1 < n ? i + 1 : 0) {
        struct member *m = &p->m[i];
        const struct session *s = m->s;
        if (!s->stream || s->stream->ending || s->stream->broken)
            continue;
        if (c->failed_on[0] && strcmp(s->id, c->failed_on) == 0)
            continue;
        pk->connected = true;
        pk->have |= s->features;
        if (c->needs & ~s->features)
            continue;
        pk->able = true;
        if (m->hibernating) {
            if (!pk->sleeper)
                pk->sleeper = m;
            continue;
        }
        pk->active = true;
        if (s->inflight >= best_load)
            continue;
        best = m;
        best_i = i;
        best_load = s->inflight;
        if (best_load == 0)
            break;
    }
    if (best)
        p->cursor = best_i + 1 < n ? best_i + 1 : 0;
    return best;
}

/* Sends pool call c to a member, or holds it for the pool's wake when no
 * member is active. 0, or -1 with e filled. */
static int pool_start(struct broker *b, struct broker_call *c, int64_t now, struct broker_error *e)
{
    struct pool *p = c->pool;
    struct pick pk;
    for (;;) {
        struct member *m = pool_pick(b, p, c, &pk);
        if (!m)
            break;
        if (start_task(b, c, m->s, m->llm, now, e) == 0) {
            m->requests++;
            return 0;
        }
        /* A stream that could not take the frame is cut off now, and the
         * next search skips it; any other failure is the call's own. */
        if (!m->s->stream || !m->s->stream->broken)
            return -1;
    }
    if (!pk.connected) {
        set_error(e, 503, RETRY_OFFLINE, "publisher_unavailable",
                  "no member of pool '%s' is connected", p->name);
    } else if (!pk.able) {
        unsigned missing = c->needs & ~pk.have;
        set_error(e, 400, 0, "unsupported_route",
                  "no publisher in pool '%s' declares the \"%s\" feature this call needs "
                  "(upgrade mcplocal)",
                  p->name,
                  (missing ? missing : c->needs) & BROKER_FEAT_PATHS ? "paths"
                                                                     : "streamed-results");
    } else if (pk.active) {
        set_error(e, 503, 1, "publisher_busy",
                  "every active member of pool '%s' has %d tasks in flight already (the cap)",
                  p->name, b->cfg.max_inflight);
    } else {
        struct wake *w = p->wake;
        if (!w) {
            w = wake_start(b, pk.sleeper->s, pk.sleeper->llm, now, e);
            if (!w)
                return -1;
            w->pool = p;
            p->wake = w;
        }
        return wake_hold(b, w, c, e);
    }
    return -1;
}

/* Task t failed on its publisher's side with e. A pool call whose answer
 * has not begun goes to another member, once; else t fails as task_fail()
 * fails it. */
static void task_fail_over(struct broker *b, struct task *t, const struct broker_error *e,
                           int64_t now)
{
    struct broker_call *c = t->kind == TASK_INFER ? t->call : NULL;
    if (!c || !c->pool || c->state != CALL_WAITING || c->failed_on[0] || !t->session ||
        b->stopping) {
        task_fail(b, t, e, false, now);
        return;
    }
    char llm[BROKER_NAME_MAX];
    memcpy(llm, t->llm, sizeof llm);
    memcpy(c->failed_on, t->session->id, sizeof c->failed_on);
    t->call = NULL;
    c->task = NULL;
    task_end(b, t, now);
    struct broker_error again;
    if (pool_start(b, c, now, &again) < 0) {
        call_fail(b, c, e);
        return;
    }
    struct member *m = member_find(c->pool, llm);
    if (m)
        m->failovers++;
}

/* The session of sid for a pool member, pinned: found, or made as a
 * record that a stream may bind later. NULL when out of memory. */
static struct session *session_ref(struct broker *b, const char *sid)
{
    struct session *s = session_make(b, sid, b->now);
    if (s)
        s->pool_refs++;
    return s;
}

static void members_release(struct member *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        m[i].s->pool_refs--;
    free(m);
}

/* ---- the public API ---- */

struct broker *broker_new(const struct broker_config *cfg)
{
    struct broker *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->cfg = *cfg;
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

static void call_free(struct broker_call *c)
{
    buf_release(&c->hbody);
    buf_release(&c->headers);
    buf_release(&c->events);
    free(c->path);
    free(c->body);
    free(c);
}

void broker_free(struct broker *b)
{
    if (!b)
        return;
    struct task *t, *tt;
    HASH_ITER(hh, b->tasks, t, tt)
    {
        HASH_DEL(b->tasks, t);
        free(t);
    }
    struct wake *w, *wt;
    HASH_ITER(hh, b->wake_by_llm, w, wt)
    {
        HASH_DEL(b->wake_by_llm, w);
        free(w);
    }
    struct pool *p, *pt;
    HASH_ITER(hh, b->pools, p, pt)
    {
        HASH_DEL(b->pools, p);
        free(p->wake);
        free(p->m);
        free(p);
    }
    struct session *s, *st;
    HASH_ITER(hh, b->sessions, s, st)
    {
        HASH_DEL(b->sessions, s);
        free(s);
    }
    struct tombstone *ts, *ts_tmp;
    HASH_ITER(hh, b->tombs, ts, ts_tmp)
    {
        HASH_DEL(b->tombs, ts);
        free(ts);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int broker_session_registered(struct broker *b, const char *sid, const char *owner,
                              unsigned features, int64_t now)
{
    lock(b);
    seen(b, now);
    struct session *s = session_get(b, sid, owner, now);
    if (s)
        s->features = features;
    unlock(b);
    return s ? 0 : -1;
}

struct broker_stream *broker_stream_open(struct broker *b, const char *sid, const char *owner,
                                         const char *token_hash, struct broker_ep *ep, int64_t now)
{
    struct broker_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->ep = ep;
    snprintf(st->sid, sizeof st->sid, "%s", sid);
    snprintf(st->token_hash, sizeof st->token_hash, "%s", token_hash ? token_hash : "");
    buf_init(&st->out, b->cfg.stream_backlog);
    st->deactivate = true;
    lock(b);
    seen(b, now);
    struct session *s = b->stopping ? NULL : session_get(b, sid, owner, now);
    if (!s) {
        unlock(b);
        buf_release(&st->out);
        free(st);
        return NULL;
    }
    struct broker_stream *old = s->stream;
    if (old) {
        old->session = NULL;
        old->deactivate = false;
        old->ending = true;
        unpark(b, old->ep);
        session_fail_tasks(b, s, 502, "the publisher opened a new control stream", now);
    }
    s->stream = st;
    st->session = s;
    st->serial = ++b->stream_serial;
    char hello[320];
    int n = snprintf(hello, sizeof hello,
                     "event: hello\ndata: {\"providerSessionId\":\"%s\","
                     "\"heartbeatIntervalSeconds\":%lld,\"pingIntervalSeconds\":%lld,"
                     "\"heartbeatIntervalMs\":%lld,\"pingIntervalMs\":%lld,"
                     "\"features\":[%s]}\n\n",
                     sid, (long long)(b->cfg.heartbeat_interval_ms / 1000),
                     (long long)(b->cfg.ping_interval_ms / 1000),
                     (long long)b->cfg.heartbeat_interval_ms, (long long)b->cfg.ping_interval_ms,
                     b->cfg.result_stream ? "\"" MCP_FEATURE_RESULT_STREAM "\"" : "");
    buf_append(&st->out, hello, (size_t)n);
    st->next_ping = now + b->cfg.ping_interval_ms;
    DL_APPEND(b->streams, st);
    b->nstreams++;
    unlock(b);
    return st;
}

ssize_t broker_stream_read(struct broker *b, struct broker_stream *st, char *out, size_t max)
{
    lock(b);
    ssize_t n = st->broken ? BROKER_OVERFLOW : queue_read(&st->out, st->ending, st->ep, out, max);
    unlock(b);
    return n;
}

bool broker_stream_closed(struct broker *b, struct broker_stream *st, char sid[BROKER_ID_LEN])
{
    lock(b);
    memcpy(sid, st->sid, BROKER_ID_LEN);
    struct session *s = session_find(b, st->sid);
    if (s && s->stream == st) {
        s->stream = NULL;
        session_fail_tasks(b, s, 502, "the publisher disconnected", b->now);
    }
    /* A stream cut off earlier still speaks for the rows, unless a newer
     * one has been bound since. */
    bool deactivate = st->deactivate && !(s && s->stream);
    DL_DELETE(b->streams, st);
    b->nstreams--;
    unlock(b);
    buf_release(&st->out);
    free(st);
    return deactivate;
}

bool broker_session_live(struct broker *b, const char *sid)
{
    lock(b);
    struct session *s = session_find(b, sid);
    bool live = s && s->stream;
    unlock(b);
    return live;
}

/* Ends the session's current stream and fails its tasks (lock held). */
static void session_cut(struct broker *b, struct session *s, int status, const char *why)
{
    struct broker_stream *st = s->stream;
    if (st) {
        st->session = NULL;
        if (!st->broken)
            st->ending = true;
        unpark(b, st->ep);
        s->stream = NULL;
    }
    session_fail_tasks(b, s, status, why, b->now);
}

void broker_session_expire(struct broker *b, const char *sid, const char *why)
{
    lock(b);
    struct session *s = session_find(b, sid);
    if (s)
        session_cut(b, s, 502, why);
    unlock(b);
}

int broker_results_open(struct broker *b, const char *sid, const char *owner, uint64_t *serial)
{
    lock(b);
    struct session *s = session_find(b, sid);
    int status = 200;
    if (!b->cfg.result_stream)
        status = 404;
    else if (!s || strcmp(s->owner, owner) != 0)
        status = 404;
    else if (!s->stream)
        status = 409;
    else
        *serial = s->stream->serial;
    unlock(b);
    return status;
}

void broker_results_cut(struct broker *b, const char *sid, uint64_t serial, const char *why)
{
    lock(b);
    struct session *s = session_find(b, sid);
    if (s && s->stream && s->stream->serial == serial)
        session_cut(b, s, 502, why);
    unlock(b);
}

int broker_revoke(struct broker *b, const char *token_hash)
{
    int n = 0;
    lock(b);
    for (struct broker_stream *st = b->streams; st; st = st->next) {
        if (st->ending || strcmp(st->token_hash, token_hash) != 0)
            continue;
        n++;
        if (st->session)
            session_cut(b, st->session, 502, "the publisher's token was revoked or has expired");
        st->ending = true;
        unpark(b, st->ep);
    }
    unlock(b);
    return n;
}

void broker_kick(struct broker *b, struct broker_ep *ep)
{
    lock(b);
    unpark(b, ep);
    unlock(b);
}

int broker_dispatch(struct broker *b, const char *sid, const char *frame, size_t len)
{
    lock(b);
    int rc = dispatch(b, session_find(b, sid), frame, len);
    unlock(b);
    return rc;
}

struct broker_call *broker_call_start(struct broker *b, const struct broker_call_req *rq,
                                      struct broker_ep *ep, int64_t now, struct broker_error *err)
{
    struct broker_call *c = calloc(1, sizeof *c);
    if (!c) {
        set_error(err, 500, 0, NULL, "out of memory");
        return NULL;
    }
    c->ep = ep;
    c->streaming = rq->streaming;
    c->anthropic = rq->anthropic;
    c->needs = rq->needs | (rq->path ? BROKER_FEAT_PATHS : 0);
    snprintf(c->llm, sizeof c->llm, "%s", rq->llm);
    c->path = rq->path ? strdup(rq->path) : NULL;
    c->body = malloc(rq->body_len ? rq->body_len : 1);
    buf_init(&c->hbody, b->cfg.max_result);
    buf_init(&c->headers, 8192);
    buf_init(&c->events, b->cfg.caller_backlog);
    if (!c->body || (rq->path && !c->path)) {
        call_free(c);
        set_error(err, 500, 0, NULL, "out of memory");
        return NULL;
    }
    memcpy(c->body, rq->body, rq->body_len);
    c->body_len = rq->body_len;

    lock(b);
    seen(b, now);
    int rc;
    struct session *s = rq->pool ? NULL : session_find(b, rq->session);
    struct pool *p = rq->pool ? pool_find(b, rq->pool) : NULL;
    if (b->stopping) {
        set_error(err, 503, RETRY_OFFLINE, "publisher_unavailable", "server shutting down");
        rc = -1;
    } else if (rq->pool && (!p || p->gen < rq->pool_gen)) {
        set_error(err, 0, 0, NULL, "pool '%s' is not known at this generation", rq->pool);
        rc = -1;
    } else if (rq->pool) {
        c->pool = p;
        rc = pool_start(b, c, now, err);
    } else if (!s || !s->stream) {
        set_error(err, 503, RETRY_OFFLINE, "publisher_unavailable",
                  "publisher of '%s' is not connected (no control stream)", rq->llm);
        rc = -1;
    } else if (rq->hibernating) {
        rc = hold_for_wake(b, c, s, now, err);
    } else {
        rc = start_task(b, c, s, c->llm, now, err);
    }
    if (rc == 0) {
        b->ncalls++;
        park(ep);
    }
    unlock(b);
    if (rc < 0) {
        call_free(c);
        return NULL;
    }
    return c;
}

int broker_call_head(struct broker *b, struct broker_call *c, struct broker_head *h,
                     struct broker_error *err)
{
    memset(h, 0, sizeof *h);
    lock(b);
    int rc;
    switch (c->state) {
    case CALL_FAILED:
        *err = c->err;
        c->state = CALL_SENT;
        c->ended = true;
        rc = -1;
        break;
    case CALL_HEAD:
        h->status = c->status;
        h->sse = c->sse;
        h->ctype = c->ctype[0] ? c->ctype : NULL;
        h->headers_len = c->headers.len;
        h->headers = buf_steal(&c->headers);
        if (!c->sse) {
            h->len = c->hbody.len;
            h->body = buf_steal(&c->hbody);
        }
        c->state = CALL_SENT;
        rc = 1;
        break;
    case CALL_SENT:
        set_error(err, 500, 0, NULL, "the answer was already sent");
        rc = -1;
        break;
    default:
        rc = park(c->ep) ? 0 : BROKER_GONE;
        break;
    }
    unlock(b);
    return rc;
}

ssize_t broker_call_read(struct broker *b, struct broker_call *c, char *out, size_t max)
{
    lock(b);
    ssize_t n = queue_read(&c->events, c->ended, c->ep, out, max);
    unlock(b);
    return n;
}

/* Lock held. */
static void summarize(const struct broker_call *c, struct broker_call_summary *out)
{
    snprintf(out->llm, sizeof out->llm, "%s", c->llm);
    out->usage = c->usage;
    bool answered = (c->state == CALL_HEAD || c->state == CALL_SENT) && (!c->sse || c->ended);
    out->status = c->fail_status ? c->fail_status : answered ? c->status : 499;
}

void broker_call_summary(struct broker *b, struct broker_call *c, struct broker_call_summary *out)
{
    lock(b);
    summarize(c, out);
    unlock(b);
}

void broker_call_done(struct broker *b, struct broker_call *c)
{
    broker_call_finish(b, c, NULL);
}

void broker_call_finish(struct broker *b, struct broker_call *c, struct broker_call_summary *out)
{
    if (!c)
        return;
    lock(b);
    if (out)
        summarize(c, out);
    if (c->wake)
        wake_unhold(c->wake, c);
    struct task *t = c->task;
    if (t) {
        t->call = NULL;
        c->task = NULL;
        send_cancel(b, t);
        task_end(b, t, b->now);
    }
    b->ncalls--;
    unlock(b);
    call_free(c);
}

/* ---- results ---- */

/* The call's stream starts (status 200, events follow). */
static void call_start_events(struct broker *b, struct broker_call *c)
{
    if (c->state == CALL_WAITING) {
        call_drop_body(c); /* no failover once the answer began */
        c->state = CALL_HEAD;
        c->status = 200;
        c->sse = true;
        unpark(b, c->ep);
    }
}

/* Appends event bytes for a streaming caller; a caller too far behind is
 * cut off and the task cancelled. */
static int call_events(struct broker *b, struct task *t, const char *p, size_t n, int64_t now)
{
    struct broker_call *c = t->call;
    if (!c || c->ended || n == 0)
        return 0; /* nothing yet: the caller's answer has not begun */
    call_start_events(b, c);
    if (buf_append(&c->events, p, n) < 0) {
        struct broker_error e;
        set_error(&e, 502, 0, "caller_too_slow", "the caller fell too far behind the stream");
        task_fail(b, t, &e, true, now);
        return -1;
    }
    unpark(b, c->ep);
    return 0;
}

/* The most bytes sse_encode_event() makes of len bytes of data: each may
 * end a line, and each line gains "data: " and a newline. */
static size_t event_room(size_t len)
{
    return 8 * len + 8;
}

static void call_events_end(struct broker *b, struct broker_call *c)
{
    if (!c || c->ended)
        return;
    call_start_events(b, c);
    c->ended = true;
    unpark(b, c->ep);
}

static int deliver_final(struct broker *b, struct task *t, const struct broker_piece *p,
                         int64_t now, struct broker_outcome *out, char *msg, size_t msglen)
{
    struct broker_error e;
    if (p->status < 200 || p->status > 599) {
        if (t->wake)
            t->wake->outcome = BROKER_WAKE_ERROR;
        snprintf(msg, msglen, "status must be a final HTTP status (200-599)");
        set_error(&e, 502, 0, "publisher_error", "the publisher posted an invalid status (%d)",
                  p->status);
        task_fail_over(b, t, &e, now);
        return 400;
    }
    if (t->kind == TASK_WAKE) {
        struct wake *w = t->wake;
        struct session *s = t->session;
        t->wake = NULL;
        task_end(b, t, now);
        if (!w)
            return 200;
        w->task = NULL;
        if (p->status >= 300) {
            w->outcome = BROKER_WAKE_ERROR;
            set_error(&e, 503, RETRY_OFFLINE, "wake_failed",
                      "wake failed: the publisher answered status %d", p->status);
            wake_fail(b, w, &e);
            return 200;
        }
        snprintf(out->woke, sizeof out->woke, "%s", w->llm);
        wake_succeeded(b, w, s, now);
        return 200;
    }
    struct broker_call *c = t->call;
    if (c && (c->state == CALL_SENT || (c->state == CALL_HEAD && c->sse))) {
        /* A stream already started: a final answer ends it. */
        if (p->status >= 400) {
            set_error(&e, p->status, 0, "backend_error", "the backend failed with status %d",
                      p->status);
            call_fail(b, c, &e);
            task_end(b, t, now);
            return 200;
        }
        struct buf ev;
        buf_init(&ev, event_room(p->len));
        int erc = sse_encode_event(&ev, NULL, NULL, p->data, p->len);
        if (erc == 0)
            erc = call_events(b, t, ev.data, ev.len, now);
        buf_release(&ev);
        if (erc == 0)
            erc = call_events(b, t, "data: [DONE]\n\n", 14, now);
        if (erc < 0)
            return 200; /* the task failed and is gone */
        call_events_end(b, c);
    } else if (c && c->state == CALL_WAITING) {
        bool no_body = p->status == 204 || p->status == 304;
        if ((!no_body && buf_append(&c->hbody, p->data, p->len) < 0) ||
            buf_append(&c->headers, p->headers ? p->headers : "", p->headers_len) < 0) {
            set_error(&e, 502, 0, "publisher_error", "the publisher's result is too large");
            task_fail(b, t, &e, false, now);
            return 200;
        }
        c->status = p->status;
        snprintf(c->ctype, sizeof c->ctype, "%s", p->ctype ? p->ctype : "application/json");
        call_drop_body(c);
        c->state = CALL_HEAD;
        unpark(b, c->ep);
    }
    task_end(b, t, now);
    return 200;
}

int broker_deliver(struct broker *b, const char *sid, const char *owner, const char *task_id,
                   const struct broker_piece *p, int64_t now, struct broker_outcome *out, char *msg,
                   size_t msglen)
{
    memset(out, 0, sizeof *out);
    msg[0] = '\0';
    lock(b);
    seen(b, now);
    int rc = 200;
    struct task *t;
    HASH_FIND_STR(b->tasks, task_id, t);
    struct session *s = session_find(b, sid);
    bool owner_ok = s && strcmp(s->owner, owner) == 0;
    if (!t || t->session != s || !owner_ok) {
        struct tombstone *ts = NULL;
        if (!t)
            HASH_FIND_STR(b->tombs, task_id, ts);
        if (ts && owner_ok && strcmp(ts->sid, sid) == 0) {
            rc = 410;
            snprintf(msg, msglen, "task already finished, cancelled or timed out");
        } else {
            rc = 404;
            snprintf(msg, msglen, "no such task");
        }
        goto out;
    }
    if (s)
        s->last_seen = now;
    bool stream_piece = p->kind == PIECE_CHUNK || p->kind == PIECE_EVENTS ||
                        p->kind == PIECE_EVENTS_END || p->kind == PIECE_EVENTS_CUT;
    if (stream_piece && (t->kind != TASK_INFER || !t->streaming)) {
        rc = 400;
        snprintf(msg, msglen, "task is not streaming: post {status, body}");
        goto out;
    }
    struct broker_call *c = t->kind == TASK_INFER ? t->call : NULL;
    if (c && p->usage.has_prompt) {
        c->usage.prompt = p->usage.prompt;
        c->usage.has_prompt = true;
    }
    if (c && p->usage.has_completion) {
        c->usage.completion = p->usage.completion;
        c->usage.has_completion = true;
    }
    struct broker_error e;
    switch (p->kind) {
    case PIECE_FINAL:
        rc = deliver_final(b, t, p, now, out, msg, msglen);
        break;
    case PIECE_CHUNK:
        if (p->len > 0) {
            struct buf ev;
            buf_init(&ev, event_room(p->len));
            int erc = sse_encode_event(&ev, NULL, NULL, p->data, p->len);
            if (erc == 0)
                erc = call_events(b, t, ev.data, ev.len, now);
            buf_release(&ev);
            if (erc < 0)
                break; /* the task failed */
        }
        if (p->done) {
            if (call_events(b, t, "data: [DONE]\n\n", 14, now) == 0) {
                call_events_end(b, t->call);
                task_end(b, t, now);
            }
        } else {
            t->idle_deadline = now + b->cfg.idle_timeout_ms;
        }
        break;
    case PIECE_EVENTS:
        if (call_events(b, t, p->data, p->len, now) == 0)
            t->idle_deadline = now + b->cfg.idle_timeout_ms;
        break;
    case PIECE_EVENTS_END:
        call_events_end(b, t->call);
        task_end(b, t, now);
        break;
    case PIECE_EVENTS_CUT:
        set_error(&e, 502, 0, "publisher_error", "the publisher's stream broke off");
        task_fail_over(b, t, &e, now);
        break;
    case PIECE_ERROR:
        if (t->wake)
            t->wake->outcome = BROKER_WAKE_ERROR;
        if (t->kind == TASK_WAKE)
            set_error(&e, 503, RETRY_OFFLINE, "wake_failed", "wake failed: %.*s",
                      (int)(p->len > 200 ? 200 : p->len), p->data);
        else
            set_error(&e, 502, 0, "publisher_error", "publisher error: %.*s",
                      (int)(p->len > 200 ? 200 : p->len), p->data);
        task_fail_over(b, t, &e, now);
        break;
    }
out:
    unlock(b);
    return rc;
}

/* ---- time ---- */

static void reap_sessions(struct broker *b, int64_t now)
{
    struct session *s, *tmp;
    HASH_ITER(hh, b->sessions, s, tmp)
    {
        if (s->stream || s->tasks || s->pool_refs || now - s->last_seen < SESSION_IDLE_MS)
            continue;
        HASH_DEL(b->sessions, s);
        free(s);
    }
}

int64_t broker_tick(struct broker *b, int64_t now)
{
    int64_t next = INT64_MAX;
    lock(b);
    seen(b, now);
    /* Pings: the list is in next_ping order, each moves to the tail. */
    static const char ping[] = ": ping\n\n";
    unsigned budget = PINGS_PER_TICK;
    while (b->streams && b->streams->next_ping <= now && budget > 0) {
        budget--;
        struct broker_stream *st = b->streams;
        DL_DELETE(b->streams, st);
        if (!st->ending && !st->broken)
            stream_queue(b, st, ping, sizeof ping - 1);
        st->next_ping = now + b->cfg.ping_interval_ms;
        DL_APPEND(b->streams, st);
    }
    if (b->streams && b->streams->next_ping < next)
        next = budget == 0 ? now + PING_BATCH_GAP_MS : b->streams->next_ping;
    struct task *t, *tmp;
    HASH_ITER(hh, b->tasks, t, tmp)
    {
        bool idle = t->idle_deadline && t->idle_deadline <= now;
        if (t->deadline <= now || idle) {
            struct broker_error e;
            if (t->wake)
                t->wake->outcome = BROKER_WAKE_TIMEOUT;
            if (t->kind == TASK_WAKE)
                set_error(&e, 503, RETRY_OFFLINE, "wake_failed", "wake timed out");
            else if (idle)
                set_error(&e, 504, 0, "timeout", "publisher sent nothing within the idle timeout");
            else
                set_error(&e, 504, 0, "timeout", "inference timed out");
            task_fail(b, t, &e, true, now);
            continue;
        }
        if (t->deadline < next)
            next = t->deadline;
        if (t->idle_deadline && t->idle_deadline < next)
            next = t->idle_deadline;
    }
    while (b->tombs && b->tombs->expires <= now)
        tombstone_drop_oldest(b);
    if (b->tombs && b->tombs->expires < next)
        next = b->tombs->expires;
    if (now >= b->next_reap) {
        reap_sessions(b, now);
        b->next_reap = now + SESSION_REAP_EVERY_MS;
    }
    if (b->next_reap < next)
        next = b->next_reap;
    unlock(b);
    return next;
}

void broker_shutdown(struct broker *b)
{
    lock(b);
    b->stopping = true;
    struct broker_error e;
    set_error(&e, 503, RETRY_OFFLINE, "publisher_unavailable", "server shutting down");
    struct wake *w, *wt;
    HASH_ITER(hh, b->wake_by_llm, w, wt)
    {
        wake_abort(b, w, &e);
    }
    struct pool *p, *pt;
    HASH_ITER(hh, b->pools, p, pt)
    {
        if (p->wake)
            wake_abort(b, p->wake, &e);
    }
    struct task *t, *tt;
    HASH_ITER(hh, b->tasks, t, tt)
    {
        task_fail(b, t, &e, false, b->now);
    }
    for (struct broker_stream *st = b->streams; st; st = st->next) {
        st->ending = true;
        unpark(b, st->ep);
    }
    unlock(b);
}

void broker_stats(struct broker *b, struct broker_stats *out)
{
    lock(b);
    out->sessions = HASH_COUNT(b->sessions);
    out->streams = b->nstreams;
    out->tasks = HASH_COUNT(b->tasks);
    out->calls = b->ncalls;
    out->wakes = HASH_COUNT(b->wake_by_llm);
    out->held = 0;
    for (struct wake *w = b->wake_by_llm; w; w = w->hh.next)
        out->held += (unsigned)w->nheld;
    for (struct pool *p = b->pools; p; p = p->hh.next) {
        out->wakes += p->wake != NULL;
        out->held += p->wake ? (unsigned)p->wake->nheld : 0;
    }
    out->tombstones = b->ntombs;
    out->overflows = b->overflows;
    out->live_sessions = 0;
    for (struct session *s = b->sessions; s; s = s->hh.next)
        out->live_sessions += s->stream != NULL;
    unlock(b);
}

/* ---- pools: membership and counts ---- */

int broker_pool_set(struct broker *b, const char *pool, uint64_t gen, const struct broker_member *m,
                    size_t n)
{
    struct member *nm = calloc(n ? n : 1, sizeof *nm);
    if (!nm)
        return -1;
    lock(b);
    struct pool *p = pool_find(b, pool);
    if (p && p->gen >= gen) {
        unlock(b);
        free(nm);
        return 0;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            goto oom;
        snprintf(p->name, sizeof p->name, "%s", pool);
        HASH_ADD_STR(b->pools, name, p);
    }
    /* Both lists are sorted by name: counts carry over in one pass. */
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        struct member *x = &nm[i];
        x->s = session_ref(b, m[i].session);
        if (!x->s) {
            members_release(nm, i);
            nm = NULL;
            goto oom;
        }
        snprintf(x->llm, sizeof x->llm, "%s", m[i].llm);
        x->hibernating = m[i].hibernating;
        while (j < p->n && strcmp(p->m[j].llm, x->llm) < 0)
            j++;
        if (j < p->n && strcmp(p->m[j].llm, x->llm) == 0) {
            x->requests = p->m[j].requests;
            x->failovers = p->m[j].failovers;
        }
    }
    members_release(p->m, p->n);
    p->m = nm;
    p->n = n;
    p->gen = gen;
    unlock(b);
    return 0;
oom:
    unlock(b);
    free(nm);
    return -1;
}

void broker_pool_stats(struct broker *b, void (*fn)(void *ud, const struct broker_member_stats *m),
                       void *ud)
{
    lock(b);
    struct pool *p, *pt;
    HASH_ITER(hh, b->pools, p, pt)
    {
        for (size_t i = 0; i < p->n; i++) {
            const struct member *x = &p->m[i];
            struct broker_member_stats st = {
                .pool = p->name,
                .llm = x->llm,
                .requests = x->requests,
                .failovers = x->failovers,
                .inflight = x->s->inflight,
                .connected = x->s->stream != NULL,
                .hibernating = x->hibernating,
            };
            fn(ud, &st);
        }
    }
    unlock(b);
}
