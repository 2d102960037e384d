#include "agent.h"

#include "backoff.h"
#include "buf.h"
#include "child.h"
#include "config.h"
#include "credentials.h"
#include "ids.h"
#include "log.h"
#include "protocol.h"
#include "provider_openai.h"
#include "results.h"
#include "sse.h"
#include "transport.h"
#include "wake.h"
#include "wire.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define STREAM_MAX_LINE (8 * 1024 * 1024)
#define STREAM_MAX_EVENT (8 * 1024 * 1024)
#define MCPD_MAX_BODY (1024 * 1024)
#define MCPD_TIMEOUT_MS 30000
#define MCPD_CONNECT_TIMEOUT_MS 10000
/* Per-task result queue: pause the backend above HIGH, resume at LOW. */
#define QUEUE_HIGH 64
#define QUEUE_LOW 16
/* Streamed result: bytes waiting for mcpd above which the backend is
 * paused, and below which it is resumed. */
#define STREAM_OUT_HIGH (256 * 1024)
#define STREAM_OUT_LOW (64 * 1024)
/* Bytes of a streamed result kept while mcpd might still refuse the form
 * (so they can be posted chunk by chunk instead). */
#define STREAM_REPLAY_MAX (1024 * 1024)
#define STALL_PINGS 3
/* Larger answers go out as posts of their own: they gain nothing from the
 * result stream, and mcpd's body cap (--max-body, 1 MiB by default) would
 * end the whole stream for one line over it. */
#define RESULT_LINE_MAX (64 * 1024)
/* How long the stall timer waits, once the limit has passed, for bytes
 * already received to be read (after the process was stopped, say). */
#define STALL_RECHECK_MS 50

enum state {
    ST_IDLE,
    ST_CHECKING,
    ST_REGISTERING,
    ST_STREAMING, /* stream requested, no hello yet */
    ST_UP,
    ST_BACKOFF,
    ST_STOPPING,
    ST_DONE,
};

/* How a streaming task's events reach mcpd. */
enum relay {
    RELAY_NONE,   /* no event yet */
    RELAY_STREAM, /* one streamed request: the events verbatim */
    RELAY_CHUNKS, /* one {"chunk"} post per event, in order */
};

struct post {
    char *body;
    bool final;
    struct post *next;
};

struct task {
    struct agent *a;
    struct task *prev, *next;
    uint64_t serial; /* tells a task from a later one at the same address */
    char id[TASK_ID_MAX + 1];
    char llm[MCP_NAME_MAX + 1];
    enum task_kind kind;
    bool streaming;
    struct config *cfg; /* the config the task started with (a reference) */
    const struct provider_cfg *p;
    struct openai_call *call;
    struct wake_run *wake;
    enum relay relay;
    bool paused; /* the backend is paused: mcpd takes results too slowly */
    bool failing;
    /* RELAY_CHUNKS and final results: posts one at a time, in order. */
    struct post *qhead, *qtail;
    size_t queued;
    struct http_req *post; /* the one result post in flight */
    bool post_final;
    bool final_queued;
    struct sse_parser *sse; /* RELAY_CHUNKS: the backend's events */
    uint64_t events;
    /* RELAY_STREAM: the streamed result post and its bytes. */
    struct http_req *spost;
    struct buf out;    /* whole events not yet handed to libcurl */
    struct buf hold;   /* the start of an event whose end has not arrived */
    struct buf replay; /* every byte handed over, while replay_ok */
    bool replay_ok;
    bool out_end;    /* the body ends once out (then tail) is drained */
    char *tail;      /* how the body ends: an error event, or a blank line */
    size_t tail_off; /* bytes of tail handed over */
    char *end_error; /* the backend failed (or we stopped) with this */
    int64_t started;
};

struct pub {
    struct agent *a;
    const struct provider_cfg *p;
    bool available;
    struct openai_call *check;
};

struct agent {
    struct loop *loop;
    struct agent_opts o;
    struct wake_opts wake_o;
    char *home;
    char *config_path;
    char *creds_path;
    char *session_path;
    struct config *cfg;
    struct credentials creds;
    bool have_creds;
    char session[SESSION_ID_MAX + 1];
    enum state state;
    bool updating; /* re-registering in place while the stream stays up */
    bool sent_session;
    bool token_rejected; /* mcpd answered 401; said once until it takes the token again */
    bool chunks_only;    /* this mcpd refused a streamed result: post chunks */
    struct results *rs;  /* the result stream, while it is open */
    bool rs_refused;     /* this mcpd refused a result stream: post each result */
    struct backoff bo;
    struct loop_timer retry_t, hb_t, healthy_t, stall_t, grace_t;
    struct http_req *reg;
    struct http_req *stream;
    struct http_req *hb;
    struct sse_parser sse;
    char stream_fail[256];
    int64_t hb_ms, ping_ms, last_rx;
    bool stall_recheck; /* the stall timer gives the loop one more round */
    struct pub *pubs;
    size_t n_pubs, checks_pending;
    struct config *pub_cfg;
    struct task *tasks;
    size_t n_tasks;
    uint64_t task_serial;
    struct spawner *spawner;
    int inotify_fd; /* watches the home directory for a new credentials file */
    struct loop_fd inotify_w;
};

void agent_opts_defaults(struct agent_opts *o)
{
    memset(o, 0, sizeof *o);
    o->backoff_min_ms = 5000;
    o->backoff_max_ms = 60000;
    o->healthy_ms = 30000;
    o->wake_poll_first_ms = 250;
    o->wake_poll_ms = 1000;
    o->check_timeout_ms = 2000;
    o->shutdown_grace_ms = 5000;
}

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *mcpd_url(const struct agent *a, const char *path)
{
    size_t n = strlen(a->creds.mcpd_url) + strlen(path) + 1;
    char *u = malloc(n);
    if (u)
        snprintf(u, n, "%s%s", a->creds.mcpd_url, path);
    return u;
}

/* Header lines for a request to mcpd; the strings live in h. */
struct mcpd_headers {
    char auth[1200];
    char session[SESSION_ID_MAX + 64];
    const char *list[6];
};

static const char *const *mcpd_headers(const struct agent *a, struct mcpd_headers *h,
                                       bool with_session, const char *accept, const char *ctype)
{
    size_t n = 0;
    snprintf(h->auth, sizeof h->auth, "Authorization: Bearer %s", a->creds.token);
    h->list[n++] = h->auth;
    h->list[n++] = ctype ? ctype : "Content-Type: application/json";
    h->list[n++] = accept ? accept : "Accept: application/json";
    if (with_session) {
        snprintf(h->session, sizeof h->session, "%s: %s", MCP_HEADER_SESSION, a->session);
        h->list[n++] = h->session;
    }
    h->list[n] = NULL;
    return h->list;
}

static int mcpd_request(struct agent *a, const char *method, const char *path, bool with_session,
                        const char *body, http_done_fn done, void *ud, struct http_req **out)
{
    struct mcpd_headers h;
    char *url = mcpd_url(a, path);
    if (!url)
        return -1;
    struct http_req_opts o = {
        .method = method,
        .url = url,
        .headers = mcpd_headers(a, &h, with_session, NULL, NULL),
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .max_body = MCPD_MAX_BODY,
        .timeout_ms = MCPD_TIMEOUT_MS,
        .connect_timeout_ms = MCPD_CONNECT_TIMEOUT_MS,
        .ca_file = a->creds.ca_file,
        .on_done = done,
        .ud = ud,
    };
    int rc = http_req_start(a->loop, &o, out);
    free(url);
    return rc;
}

/* A short description of why a request to mcpd did not succeed. TLS
 * failures name mcpd's URL and the CAs tried. */
static void describe_failure(const struct agent *a, struct http_req *r, char *out, size_t outlen)
{
    long status = http_req_status(r);
    if (status == 0 && http_req_tls_failed(r)) {
        const char *d = http_req_error_detail(r);
        if (a->creds.ca_file)
            snprintf(out, outlen,
                     "TLS with '%s' failed (trusting caFile '%s' and the system's CAs): %s",
                     a->creds.mcpd_url, a->creds.ca_file, d ? d : "unknown error");
        else
            snprintf(out, outlen, "TLS with '%s' failed (trusting the system's CAs): %s",
                     a->creds.mcpd_url, d ? d : "unknown error");
        return;
    }
    if (status == 0) {
        snprintf(out, outlen, "%s",
                 http_req_error_detail(r) ? http_req_error_detail(r) : "no response");
        return;
    }
    size_t len = 0;
    const char *body = http_req_body(r, &len);
    char msg[300];
    wire_backend_error(body, len, msg, sizeof msg);
    snprintf(out, outlen, "mcpd answered %ld%s%s", status, msg[0] ? ": " : "", msg);
}

/* True for a task still in the list (t may be a freed pointer). */
static bool task_alive(const struct agent *a, const struct task *t, uint64_t serial)
{
    for (const struct task *x = a->tasks; x; x = x->next)
        if (x == t && x->serial == serial)
            return true;
    return false;
}

/* ---- tasks ---------------------------------------------------------- */

static void check_stop_done(struct agent *a);
static void send_heartbeat(struct agent *a);
static void token_rejected(struct agent *a, const char *what);
static void connection_lost(struct agent *a, const char *why);
static struct task *task_new(struct agent *a, const char *id);
static void task_post(struct task *t, char *body, bool final);

static void drop_queue(struct task *t)
{
    while (t->qhead) {
        struct post *p = t->qhead;
        t->qhead = p->next;
        free(p->body);
        free(p);
    }
    t->qtail = NULL;
    t->queued = 0;
}

static void task_free(struct task *t)
{
    struct agent *a = t->a;
    if (t->prev)
        t->prev->next = t->next;
    else
        a->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    a->n_tasks--;
    openai_call_free(t->call);
    wake_free(t->wake);
    http_req_free(t->post);
    http_req_free(t->spost);
    drop_queue(t);
    buf_release(&t->out);
    buf_release(&t->hold);
    buf_release(&t->replay);
    free(t->tail);
    free(t->end_error);
    if (t->sse) {
        sse_parser_release(t->sse);
        free(t->sse);
    }
    config_unref(t->cfg);
    free(t);
}

/* Frees t and lets a stopping agent finish. */
static void task_end(struct task *t)
{
    struct agent *a = t->a;
    task_free(t);
    check_stop_done(a);
}

static struct task *task_find(struct agent *a, const char *id)
{
    for (struct task *t = a->tasks; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

static void result_path(const struct task *t, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s/result", MCP_ROUTE_TASK_PREFIX, t->id);
}

/* A result post mcpd did not take: says why, once. Returns true when the
 * task is over for mcpd (the caller is gone), false for a failure. */
static void post_refused(struct task *t, struct http_req *r, const char *what)
{
    struct agent *a = t->a;
    long status = http_req_status(r);
    if (status == 410 || status == 404) {
        log_info("task %s (%s): mcpd answered %ld to %s, the caller is gone; abandoning it", t->id,
                 t->llm, status, what);
    } else if (status == 401) {
        log_warn("task %s (%s): mcpd refused %s with 401; abandoning it", t->id, t->llm, what);
        token_rejected(a, "a result post");
    } else {
        char why[512];
        describe_failure(a, r, why, sizeof why);
        log_warn("task %s (%s): %s failed: %s; abandoning it", t->id, t->llm, what, why);
    }
}

static void send_next(struct task *t);
static void chunks_take(struct task *t, const char *data, size_t len);

static void on_post_done(struct http_req *r, void *ud)
{
    struct task *t = ud;
    long status = http_req_status(r);
    bool final = t->post_final;
    t->post = NULL;
    if (http_req_ok(r) && status >= 200 && status < 300) {
        http_req_free(r);
        if (final) {
            log_debug("task %s (%s): done in %lld ms", t->id, t->llm,
                      (long long)(loop_now(t->a->loop) - t->started));
            task_end(t);
            return;
        }
        if (t->paused && t->queued <= QUEUE_LOW) {
            t->paused = false;
            openai_call_resume(t->call);
        }
        send_next(t);
        return;
    }
    post_refused(t, r, "a result post");
    http_req_free(r);
    task_end(t);
}

static void send_next(struct task *t)
{
    struct agent *a = t->a;
    if (t->post || !t->qhead)
        return;
    struct post *p = t->qhead;
    t->qhead = p->next;
    if (!t->qhead)
        t->qtail = NULL;
    t->queued--;
    char path[sizeof MCP_ROUTE_TASK_PREFIX + TASK_ID_MAX + 16];
    result_path(t, path, sizeof path);
    t->post_final = p->final;
    int rc = mcpd_request(a, "POST", path, true, p->body, on_post_done, t, &t->post);
    free(p->body);
    free(p);
    if (rc < 0) {
        log_error("task %s (%s): cannot post a result: out of memory", t->id, t->llm);
        task_end(t);
    }
}

/* Queues a result body (takes ownership). final marks the last one. */
static void task_post(struct task *t, char *body, bool final)
{
    if (t->final_queued) {
        free(body);
        return;
    }
    if (!body) {
        log_error("task %s (%s): out of memory building a result", t->id, t->llm);
        task_end(t);
        return;
    }
    /* A final result with nothing before it in flight goes down the result
     * stream; the task is done once it is queued there. */
    struct agent *a = t->a;
    if (final && a->rs && a->state == ST_UP && !t->post && !t->qhead &&
        strlen(body) <= RESULT_LINE_MAX && results_push(a->rs, t->id, body) == 0) {
        log_debug("task %s (%s): done in %lld ms", t->id, t->llm,
                  (long long)(loop_now(a->loop) - t->started));
        task_end(t);
        return;
    }
    struct post *p = calloc(1, sizeof *p);
    if (!p) {
        free(body);
        log_error("task %s (%s): out of memory queueing a result", t->id, t->llm);
        task_end(t);
        return;
    }
    p->body = body;
    p->final = final;
    if (t->qtail)
        t->qtail->next = p;
    else
        t->qhead = p;
    t->qtail = p;
    t->queued++;
    if (final)
        t->final_queued = true;
    if (!final && t->queued >= QUEUE_HIGH && !t->paused && t->call) {
        t->paused = true;
        openai_call_pause(t->call);
    }
    send_next(t);
}

/* ---- streamed results ----------------------------------------------- */

/* Length of the leading part of b that ends with a complete event (a blank
 * line), 0 when there is none. */
static size_t complete_events(const char *b, size_t n)
{
    for (size_t i = n; i >= 2; i--) {
        char c = b[i - 1], p = b[i - 2];
        if ((c == '\n' && (p == '\n' || (p == '\r' && i >= 3 && b[i - 3] == '\n'))) ||
            (c == '\r' && p == '\r'))
            return i;
    }
    return 0;
}

static void stream_finish(struct task *t, const char *msg, const char *code);

static void stream_kick(struct task *t)
{
    if (t->spost)
        http_req_resume_send(t->spost);
}

/* Bytes of the backend's event stream for the streamed post: whole events
 * go out, a trailing partial event waits for its end. */
static void stream_take(struct task *t, const char *data, size_t len)
{
    int rc = 0;
    if (t->hold.len == 0) {
        size_t whole = complete_events(data, len);
        rc = buf_append(&t->out, data, whole);
        if (rc == 0 && whole < len)
            rc = buf_append(&t->hold, data + whole, len - whole);
    } else {
        rc = buf_append(&t->hold, data, len);
        size_t whole = complete_events(t->hold.data, t->hold.len);
        if (rc == 0 && whole > 0) {
            rc = buf_append(&t->out, t->hold.data, whole);
            buf_consume(&t->hold, whole);
        }
    }
    if (rc < 0) {
        /* The caps are far above the pause threshold: only a single event
         * over STREAM_MAX_EVENT gets here. */
        log_warn("task %s (%s): backend sent an event over the %d MiB cap", t->id, t->llm,
                 STREAM_MAX_EVENT / (1024 * 1024));
        openai_call_free(t->call);
        t->call = NULL;
        stream_finish(t, "backend sent an oversized stream event", "backend_error");
        return;
    }
    if (t->out.len >= STREAM_OUT_HIGH && !t->paused && t->call) {
        t->paused = true;
        openai_call_pause(t->call);
    }
    stream_kick(t);
}

/* Ends the streamed body after the events already taken: with an error
 * event when msg is set (a partial event is dropped), else with the last
 * partial event completed. The ending goes in tail, apart from the
 * backend's bytes, so a fallback to chunks can tell them apart. */
static void stream_finish(struct task *t, const char *msg, const char *code)
{
    if (t->out_end)
        return;
    t->out_end = true;
    if (msg) {
        t->end_error = strdup(msg);
        t->tail = wire_sse_error(msg, code);
    } else {
        if (t->hold.len > 0) {
            if (buf_append(&t->out, t->hold.data, t->hold.len) < 0)
                log_error("task %s (%s): out of memory ending the stream", t->id, t->llm);
            buf_reset(&t->hold);
            t->tail = strdup("\n\n");
        }
    }
    if ((msg && (!t->end_error || !t->tail)))
        log_error("task %s (%s): out of memory ending the stream", t->id, t->llm);
    stream_kick(t);
}

static ssize_t stream_read(struct http_req *r, char *buf, size_t max, void *ud)
{
    (void)r;
    struct task *t = ud;
    if (t->out.len == 0) {
        if (!t->out_end)
            return HTTP_READ_PAUSE;
        size_t left = t->tail ? strlen(t->tail) - t->tail_off : 0;
        size_t n = left < max ? left : max;
        memcpy(buf, t->tail ? t->tail + t->tail_off : "", n);
        t->tail_off += n;
        return (ssize_t)n;
    }
    size_t n = t->out.len < max ? t->out.len : max;
    memcpy(buf, t->out.data, n);
    if (t->replay_ok && buf_append(&t->replay, t->out.data, n) < 0) {
        t->replay_ok = false;
        buf_release(&t->replay);
        buf_init(&t->replay, 0);
    }
    buf_consume(&t->out, n);
    if (t->paused && t->out.len <= STREAM_OUT_LOW) {
        t->paused = false;
        openai_call_resume(t->call);
    }
    return (ssize_t)n;
}

/* RELAY_CHUNKS after the backend's answer ended in streamed mode: the last
 * post. */
static void backend_finish(struct task *t)
{
    if (t->end_error) {
        task_post(t, wire_result_error(t->end_error), true);
        return;
    }
    if (t->sse) {
        uint64_t id = t->serial;
        struct agent *a = t->a;
        sse_parser_feed(t->sse, "\n\n", 2);
        if (!task_alive(a, t, id))
            return;
    }
    task_post(t, wire_result_done(), true);
}

/* mcpd did not take the streamed form: post the stream chunk by chunk,
 * from its first event, as the first version did. */
static void fall_back_to_chunks(struct task *t)
{
    t->relay = RELAY_CHUNKS;
    struct buf replay = t->replay, out = t->out, hold = t->hold;
    buf_init(&t->replay, 0);
    buf_init(&t->out, 0);
    buf_init(&t->hold, STREAM_MAX_EVENT);
    if (t->paused) {
        t->paused = false;
        openai_call_resume(t->call);
    }
    struct agent *a = t->a;
    uint64_t id = t->serial;
    if (replay.len)
        chunks_take(t, replay.data, replay.len);
    if (out.len && task_alive(a, t, id))
        chunks_take(t, out.data, out.len);
    if (hold.len && task_alive(a, t, id))
        chunks_take(t, hold.data, hold.len);
    if (task_alive(a, t, id) && t->out_end && !t->final_queued)
        backend_finish(t);
    buf_release(&replay);
    buf_release(&out);
    buf_release(&hold);
}

static void on_stream_post_done(struct http_req *r, void *ud)
{
    struct task *t = ud;
    struct agent *a = t->a;
    long status = http_req_status(r);
    t->spost = NULL;
    if (http_req_ok(r) && status >= 200 && status < 300 && t->out_end) {
        http_req_free(r);
        log_debug("task %s (%s): streamed in %lld ms", t->id, t->llm,
                  (long long)(loop_now(a->loop) - t->started));
        task_end(t);
        return;
    }
    /* Refused before mcpd relayed anything: nothing sent at all, or an
     * mcpd without streamed results refusing the form (400 or 415) while
     * every byte sent is still at hand. */
    bool refused_form = http_req_ok(r) && (status == 400 || status == 415) && t->replay_ok;
    if (http_req_nothing_sent(r) || refused_form) {
        char why[512];
        describe_failure(a, r, why, sizeof why);
        if (status == 401 || status == 404 || status == 410) {
            post_refused(t, r, "the streamed result");
            http_req_free(r);
            task_end(t);
            return;
        }
        if (refused_form) {
            if (!a->chunks_only)
                log_info("mcpd does not take streamed results (%s); posting chunk by chunk", why);
            a->chunks_only = true;
        } else {
            log_info("task %s (%s): streamed result failed before any byte was sent (%s); "
                     "posting chunk by chunk",
                     t->id, t->llm, why);
        }
        http_req_free(r);
        fall_back_to_chunks(t);
        return;
    }
    post_refused(t, r, "the streamed result");
    http_req_free(r);
    task_end(t);
}

static int start_stream_post(struct task *t)
{
    struct agent *a = t->a;
    struct mcpd_headers h;
    char path[sizeof MCP_ROUTE_TASK_PREFIX + TASK_ID_MAX + 16];
    result_path(t, path, sizeof path);
    char *url = mcpd_url(a, path);
    if (!url)
        return -1;
    const char *const *hl = mcpd_headers(a, &h, true, NULL, "Content-Type: text/event-stream");
    struct http_req_opts o = {
        .method = "POST",
        .url = url,
        .headers = hl,
        .on_read = stream_read,
        .max_body = MCPD_MAX_BODY,
        .connect_timeout_ms = MCPD_CONNECT_TIMEOUT_MS,
        .ca_file = a->creds.ca_file,
        .on_done = on_stream_post_done,
        .ud = t,
    };
    int rc = http_req_start(a->loop, &o, &t->spost);
    free(url);
    return rc;
}

/* ---- per-chunk results ---------------------------------------------- */

static int on_chunk_event(void *ud, const struct sse_event *ev)
{
    struct task *t = ud;
    if (t->final_queued)
        return 1;
    if (strcmp(ev->event, "error") == 0) {
        char msg[300], err[400];
        wire_backend_error(ev->data, ev->data_len, msg, sizeof msg);
        snprintf(err, sizeof err, "backend stream error: %s", msg);
        log_warn("task %s (%s) failed: %s", t->id, t->llm, err);
        openai_call_free(t->call);
        t->call = NULL;
        task_post(t, wire_result_error(err), true);
        return 1;
    }
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        openai_call_free(t->call);
        t->call = NULL;
        task_post(t, wire_result_done(), true);
        return 1;
    }
    if (ev->data_len == 0)
        return 0;
    t->events++;
    task_post(t, wire_result_chunk(ev->data, ev->data_len), false);
    return 0;
}

/* Feeds event-stream bytes to the task's parser; may end the task. */
static void chunks_take(struct task *t, const char *data, size_t len)
{
    if (!t->sse) {
        t->sse = malloc(sizeof *t->sse);
        if (!t->sse) {
            log_error("task %s (%s): out of memory", t->id, t->llm);
            task_end(t);
            return;
        }
        sse_parser_init(t->sse, STREAM_MAX_EVENT, STREAM_MAX_EVENT, on_chunk_event, NULL, t);
    }
    if (t->final_queued)
        return;
    uint64_t id = t->serial;
    struct agent *a = t->a;
    int rc = sse_parser_feed(t->sse, data, len);
    /* The task may be gone (out of memory paths free it). */
    if (!task_alive(a, t, id))
        return;
    if ((rc == SSE_ERR_LINE_TOO_LONG || rc == SSE_ERR_EVENT_TOO_LARGE) && !t->final_queued) {
        openai_call_free(t->call);
        t->call = NULL;
        task_post(t, wire_result_error("backend sent an oversized stream event"), true);
    }
}

/* ---- the backend's answer ------------------------------------------- */

static void on_backend_start(void *ud, long status)
{
    (void)status;
    struct task *t = ud;
    struct agent *a = t->a;
    if (a->chunks_only || a->state == ST_STOPPING) {
        t->relay = RELAY_CHUNKS;
        return;
    }
    t->relay = RELAY_STREAM;
    t->replay_ok = true;
    if (start_stream_post(t) < 0) {
        log_error("task %s (%s): cannot start the streamed result: out of memory", t->id, t->llm);
        t->relay = RELAY_CHUNKS;
    }
}

static void on_backend_bytes(void *ud, const char *data, size_t len)
{
    struct task *t = ud;
    if (t->relay == RELAY_STREAM)
        stream_take(t, data, len);
    else
        chunks_take(t, data, len);
}

/* Ends a task that failed: an {"error"} post, or the error event that ends
 * its streamed result. */
static void task_fail(struct task *t, const char *msg, const char *code)
{
    if (t->relay == RELAY_STREAM && t->spost) {
        stream_finish(t, msg, code);
        return;
    }
    task_post(t, wire_result_error(msg), true);
}

static void on_infer_done(void *ud, const struct openai_result *r)
{
    struct task *t = ud;
    openai_call_free(t->call);
    t->call = NULL;
    switch (r->outcome) {
    case OPENAI_RESPONSE: {
        if (r->status < 200 || r->status >= 300)
            log_info("task %s (%s): backend answered %ld", t->id, t->llm, r->status);
        char *body = wire_result_response(r->status, r->header_names, r->header_values,
                                          r->n_headers, r->body, r->body_len);
        task_post(t, body, true);
        return;
    }
    case OPENAI_STREAMED:
        if (t->relay == RELAY_STREAM) {
            stream_finish(t, NULL, NULL);
            return;
        }
        /* A last event the backend did not end with a blank line is
         * flushed first. */
        backend_finish(t);
        return;
    case OPENAI_FAILED:
        log_warn("task %s (%s) failed: %s", t->id, t->llm, r->detail ? r->detail : r->error);
        task_fail(t, r->error, "backend_error");
        return;
    }
}

static void on_wake_poll(void *ud)
{
    struct task *t = ud;
    if (t->a->state == ST_UP)
        send_heartbeat(t->a);
}

static void on_wake_done(void *ud, bool ok, int64_t ms, const char *error, const char *detail)
{
    struct task *t = ud;
    wake_free(t->wake);
    t->wake = NULL;
    if (ok) {
        log_info("woke '%s' in %lld ms", t->llm, (long long)ms);
        task_post(t, wire_result_wake_ok(ms), true);
        return;
    }
    log_warn("wake '%s' failed after %lld ms: %s", t->llm, (long long)ms, detail ? detail : error);
    task_fail(t, error, NULL);
}

static struct task *task_new(struct agent *a, const char *id)
{
    struct task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->a = a;
    t->serial = ++a->task_serial;
    snprintf(t->id, sizeof t->id, "%s", id);
    t->started = loop_now(a->loop);
    buf_init(&t->out, STREAM_MAX_EVENT + STREAM_OUT_HIGH);
    buf_init(&t->hold, STREAM_MAX_EVENT);
    buf_init(&t->replay, STREAM_REPLAY_MAX);
    t->next = a->tasks;
    if (a->tasks)
        a->tasks->prev = t;
    a->tasks = t;
    a->n_tasks++;
    return t;
}

static void handle_task(struct agent *a, const char *data, size_t len)
{
    struct task_frame f;
    char err[256];
    int rc = wire_parse_task(data, len, &f, err, sizeof err);
    if (f.task_id[0] && task_find(a, f.task_id)) {
        log_warn("task %s: sent twice; ignoring the repeat", f.task_id);
        wire_task_release(&f);
        return;
    }
    if (rc < 0 && !f.task_id[0]) {
        log_warn("ignoring a task frame: %s", err);
        return;
    }
    struct task *t = task_new(a, f.task_id);
    if (!t) {
        log_error("task %s: out of memory", f.task_id);
        wire_task_release(&f);
        return;
    }
    snprintf(t->llm, sizeof t->llm, "%s", f.llm[0] ? f.llm : "?");
    t->kind = f.kind;
    t->streaming = f.streaming;
    if (rc < 0) {
        log_warn("task %s: %s", t->id, err);
        task_fail(t, err, NULL);
        goto out;
    }
    if (a->state == ST_STOPPING) {
        task_fail(t, "publisher shutting down", NULL);
        goto out;
    }
    t->cfg = config_ref(a->cfg);
    t->p = config_find(t->cfg, f.llm);
    if (!t->p || !t->p->publish) {
        log_warn("task %s: '%s' is not published here", t->id, f.llm);
        snprintf(err, sizeof err, "llm '%s' is not published by this publisher", f.llm);
        task_fail(t, err, NULL);
        goto out;
    }
    if (f.kind == TASK_WAKE) {
        if (t->p->wake.type == WAKE_NONE) {
            log_warn("task %s: wake for '%s', which has no wake recipe", t->id, f.llm);
            task_fail(t, "no wake recipe is configured for this llm", NULL);
            goto out;
        }
        log_info("waking '%s' (task %s)", f.llm, t->id);
        t->wake = wake_start(a->loop, a->spawner, t->p, &a->wake_o, on_wake_poll, on_wake_done, t);
        if (!t->wake)
            task_fail(t, "out of memory", NULL);
        goto out;
    }
    size_t req_len = 0;
    char *req = wire_task_upstream(&f, t->p->model, &req_len);
    if (!req) {
        task_fail(t, "out of memory", NULL);
        goto out;
    }
    log_debug("task %s: infer on '%s' at %s%s", t->id, f.llm, f.path,
              f.streaming ? " (streaming)" : "");
    static const struct openai_stream_fns fns = {
        .on_start = on_backend_start,
        .on_bytes = on_backend_bytes,
    };
    t->call =
        openai_infer(a->loop, t->p, f.path, req, req_len, f.streaming, &fns, on_infer_done, t);
    free(req);
    if (!t->call)
        task_fail(t, "cannot start the backend request", NULL);
out:
    wire_task_release(&f);
}

static void handle_cancel(struct agent *a, const char *data, size_t len)
{
    char id[TASK_ID_MAX + 1];
    if (wire_parse_cancel(data, len, id) < 0) {
        log_warn("ignoring a cancel frame without a valid taskId");
        return;
    }
    struct task *t = task_find(a, id);
    if (!t) {
        log_debug("cancel for unknown task %s", id);
        return;
    }
    log_info("task %s (%s): cancelled by mcpd", t->id, t->llm);
    task_end(t);
}

static void abort_tasks(struct agent *a, const char *why)
{
    if (a->n_tasks > 0)
        log_warn("abandoning %zu task%s: %s", a->n_tasks, a->n_tasks == 1 ? "" : "s", why);
    struct task *t = a->tasks;
    while (t) {
        struct task *next = t->next;
        task_free(t);
        t = next;
    }
}

/* True once mcpd may have relayed part of t's answer to its caller: a
 * streamed result with bytes out, or a chunk posted. */
static bool answer_begun(const struct task *t)
{
    if (t->relay == RELAY_STREAM)
        return t->spost && !http_req_nothing_sent(t->spost);
    return t->relay == RELAY_CHUNKS && t->events > 0;
}

/* Fails every task still waiting for its backend or wake with msg (tasks
 * whose answer is complete keep going out, and with spare_begun so do those
 * whose answer has begun). */
static void fail_tasks(struct agent *a, const char *msg, const char *code, bool spare_begun)
{
    for (struct task *t = a->tasks; t; t = t->next) {
        if (spare_begun && answer_begun(t))
            continue;
        openai_call_free(t->call);
        t->call = NULL;
        wake_free(t->wake);
        t->wake = NULL;
        if (t->final_queued || t->out_end)
            continue; /* its answer is complete: let it go out */
        if (t->relay != RELAY_STREAM)
            drop_queue(t);
        t->failing = true;
    }
    /* task_post() may free a task (out of memory): restart the walk. */
    for (;;) {
        struct task *t = a->tasks;
        while (t && !t->failing)
            t = t->next;
        if (!t)
            break;
        t->failing = false;
        task_fail(t, msg, code);
    }
}

/* ---- connection ----------------------------------------------------- */

static void begin_connect(struct agent *a, bool updating);

static void free_checks(struct agent *a)
{
    for (size_t i = 0; i < a->n_pubs; i++)
        openai_call_free(a->pubs[i].check);
    free(a->pubs);
    a->pubs = NULL;
    a->n_pubs = 0;
    a->checks_pending = 0;
    config_unref(a->pub_cfg);
    a->pub_cfg = NULL;
}

/* Closes everything connection-related; tasks are abandoned unless
 * keep_tasks (they then finish their last posts on their own). */
static void drop_connection_ex(struct agent *a, const char *why, bool keep_tasks)
{
    loop_timer_stop(a->loop, &a->retry_t);
    loop_timer_stop(a->loop, &a->hb_t);
    loop_timer_stop(a->loop, &a->healthy_t);
    loop_timer_stop(a->loop, &a->stall_t);
    free_checks(a);
    http_req_free(a->reg);
    a->reg = NULL;
    http_req_free(a->stream);
    a->stream = NULL;
    http_req_free(a->hb);
    a->hb = NULL;
    results_free(a->rs);
    a->rs = NULL;
    a->updating = false;
    if (!keep_tasks)
        abort_tasks(a, why);
}

static void drop_connection(struct agent *a, const char *why)
{
    drop_connection_ex(a, why, false);
}

static void schedule_retry(struct agent *a)
{
    int64_t delay = backoff_next(&a->bo);
    a->state = ST_BACKOFF;
    log_info("reconnect in %.1f s", (double)delay / 1000.0);
    loop_timer_start(a->loop, &a->retry_t, delay);
}

static void finish_stop(struct agent *a);

static void connection_lost(struct agent *a, const char *why)
{
    if (a->state == ST_STOPPING) {
        log_info("stream down while stopping: %s", why);
        finish_stop(a);
        return;
    }
    if (a->state == ST_UP)
        log_warn("stream down: %s", why);
    else if (a->state == ST_STREAMING)
        log_warn("cannot open the stream: %s", why);
    drop_connection(a, "the stream is down");
    schedule_retry(a);
}

/* mcpd answered 401 to what: said once, in plain words, until mcpd takes
 * a token again. While connected, the tasks in flight are failed (their
 * error posts go out where mcpd still takes them), the stream is closed
 * and the normal backoff applies; new credentials (SIGHUP, or the file
 * changing) are used on the next attempt. */
static void token_rejected(struct agent *a, const char *what)
{
    if (!a->token_rejected)
        log_error("token rejected by mcpd: run mcpctl login (%s answered 401; the token is "
                  "read from '%s')",
                  what, a->creds_path);
    else
        log_debug("%s answered 401", what);
    a->token_rejected = true;
    if (a->state != ST_UP && a->state != ST_STREAMING)
        return;
    fail_tasks(a, "the publisher's token was rejected by mcpd", "publisher_error", false);
    drop_connection_ex(a, "token rejected", true);
    schedule_retry(a);
}

static void on_retry(struct loop *l, void *ud)
{
    (void)l;
    begin_connect(ud, false);
}

static void on_healthy(struct loop *l, void *ud)
{
    (void)l;
    struct agent *a = ud;
    backoff_reset(&a->bo);
}

static void on_hb_done(struct http_req *r, void *ud)
{
    struct agent *a = ud;
    long status = http_req_status(r);
    a->hb = NULL;
    if (http_req_ok(r) && status >= 200 && status < 300) {
        size_t len = 0;
        const char *body = http_req_body(r, &len);
        json_t *j = json_loadb(body, len, 0, NULL);
        json_int_t revived = json_integer_value(json_object_get(j, "revived"));
        if (revived > 0)
            log_info("heartbeat revived %lld row%s", (long long)revived, revived == 1 ? "" : "s");
        else
            log_debug("heartbeat ok");
        json_decref(j);
        http_req_free(r);
        return;
    }
    if (status == 404) {
        http_req_free(r);
        log_warn("mcpd does not know session %s (404 on heartbeat); registering again", a->session);
        connection_lost(a, "mcpd forgot the session");
        return;
    }
    if (status == 401) {
        http_req_free(r);
        token_rejected(a, "a heartbeat");
        return;
    }
    char why[512];
    describe_failure(a, r, why, sizeof why);
    http_req_free(r);
    log_warn("heartbeat failed: %s", why);
}

static void send_heartbeat(struct agent *a)
{
    if (a->hb || !a->session[0])
        return;
    if (mcpd_request(a, "POST", MCP_ROUTE_HEARTBEAT, true, "{}", on_hb_done, a, &a->hb) < 0)
        log_error("cannot send a heartbeat: out of memory");
}

static void on_hb_timer(struct loop *l, void *ud)
{
    struct agent *a = ud;
    send_heartbeat(a);
    loop_timer_start(l, &a->hb_t, a->hb_ms);
}

static void on_stall_timer(struct loop *l, void *ud)
{
    struct agent *a = ud;
    int64_t limit = STALL_PINGS * a->ping_ms;
    int64_t idle = loop_now(l) - a->last_rx;
    if (idle < limit) {
        loop_timer_start(l, &a->stall_t, limit - idle);
        return;
    }
    /* Bytes that arrived while this process could not run (stopped,
     * suspended, starved) are data too: look at the socket, and give the
     * loop one more round to read what is there before judging. */
    int fd = a->stream ? http_req_socket(a->stream) : -1;
    int pending = 0;
    if (fd >= 0 && ioctl(fd, FIONREAD, &pending) == 0 && pending > 0) {
        log_debug("stream quiet for %lld ms but %d bytes are waiting; reading them",
                  (long long)idle, pending);
        a->last_rx = loop_now(l);
        loop_timer_start(l, &a->stall_t, limit);
        return;
    }
    if (!a->stall_recheck) {
        a->stall_recheck = true;
        loop_timer_start(l, &a->stall_t, STALL_RECHECK_MS);
        return;
    }
    char why[128];
    snprintf(why, sizeof why, "no data from mcpd for %.1f s", (double)idle / 1000.0);
    connection_lost(a, why);
}

/* ---- the result stream ---------------------------------------------- */

/* A result the stream never sent goes out as a post of its own. */
static void post_unsent(const char *task_id, char *body, void *ud)
{
    struct agent *a = ud;
    struct task *t = task_new(a, task_id);
    if (!t) {
        log_error("task %s: cannot post its result: out of memory", task_id);
        free(body);
        return;
    }
    snprintf(t->llm, sizeof t->llm, "-");
    task_post(t, body, true);
}

static void on_results_end(struct results *rs, const struct results_end *e, void *ud)
{
    struct agent *a = ud;
    a->rs = NULL;
    if (e->clean) {
        log_debug("result stream ended");
    } else if (e->nothing_sent) {
        /* mcpd saw none of it: the results go out one by one. */
        if (e->status == 404 || e->status == 405 || e->status == 400) {
            log_info("mcpd does not take a result stream (%s); posting each result", e->why);
            a->rs_refused = true;
        } else if (a->state == ST_UP) {
            log_warn("result stream refused (%s); posting each result", e->why);
        }
    }
    results_take_unsent(rs, post_unsent, a);
    results_free(rs);
    if (a->state == ST_STOPPING) {
        check_stop_done(a);
        return;
    }
    if (!e->clean && !e->nothing_sent && a->state == ST_UP) {
        /* Results that went out may be lost: mcpd ends the control stream
         * too, and everything starts again. */
        char why[600];
        snprintf(why, sizeof why, "the result stream broke off (%s)", e->why);
        connection_lost(a, why);
    }
}

static void open_results(struct agent *a)
{
    struct mcpd_headers h;
    char *url = mcpd_url(a, MCP_ROUTE_RESULTS);
    if (!url) {
        log_error("cannot open the result stream: out of memory");
        return;
    }
    struct results_opts o = {
        .url = url,
        .headers = mcpd_headers(a, &h, true, NULL, "Content-Type: application/x-ndjson"),
        .ca_file = a->creds.ca_file,
        .keepalive_ms = a->ping_ms,
        .on_end = on_results_end,
        .ud = a,
    };
    if (results_open(a->loop, &o, &a->rs) < 0)
        log_error("cannot open the result stream: out of memory");
    free(url);
}

static void on_hello(struct agent *a, const char *data, size_t len)
{
    struct hello_frame h;
    if (wire_parse_hello(data, len, &h) < 0) {
        log_warn("hello frame is not JSON; using the default intervals");
    } else if (h.session[0] && strcmp(h.session, a->session) != 0) {
        log_warn("hello names session %s, expected %s", h.session, a->session);
    }
    a->hb_ms = h.heartbeat_ms;
    a->ping_ms = h.ping_ms;
    a->state = ST_UP;
    log_info("stream up (session %s, heartbeat every %.1f s)", a->session,
             (double)a->hb_ms / 1000.0);
    loop_timer_start(a->loop, &a->hb_t, a->hb_ms);
    loop_timer_start(a->loop, &a->healthy_t, a->o.healthy_ms);
    a->stall_recheck = false;
    loop_timer_start(a->loop, &a->stall_t, STALL_PINGS * a->ping_ms);
    if (h.result_stream && !a->rs_refused && !a->rs)
        open_results(a);
}

static int on_stream_event(void *ud, const struct sse_event *ev)
{
    struct agent *a = ud;
    if (strcmp(ev->event, MCP_EVENT_HELLO) == 0) {
        on_hello(a, ev->data, ev->data_len);
    } else if (strcmp(ev->event, MCP_EVENT_TASK) == 0) {
        handle_task(a, ev->data, ev->data_len);
    } else if (strcmp(ev->event, MCP_EVENT_CANCEL) == 0) {
        handle_cancel(a, ev->data, ev->data_len);
    } else {
        log_debug("ignoring '%s' frame", ev->event);
    }
    /* A task handler may have lost the connection (out of memory paths). */
    return a->stream ? 0 : 1;
}

static int on_stream_data(struct http_req *r, const char *data, size_t len, void *ud)
{
    (void)r;
    struct agent *a = ud;
    a->last_rx = loop_now(a->loop);
    a->stall_recheck = false;
    int rc = sse_parser_feed(&a->sse, data, len);
    if (rc == SSE_ERR_LINE_TOO_LONG || rc == SSE_ERR_EVENT_TOO_LARGE) {
        snprintf(a->stream_fail, sizeof a->stream_fail, "mcpd sent a frame over the %d MiB cap",
                 STREAM_MAX_EVENT / (1024 * 1024));
        return 1;
    }
    return rc;
}

static void on_stream_done(struct http_req *r, void *ud)
{
    struct agent *a = ud;
    char why[600];
    long status = http_req_status(r);
    if (a->stream_fail[0])
        snprintf(why, sizeof why, "%s", a->stream_fail);
    else if (status != 0 && status != 200)
        describe_failure(a, r, why, sizeof why);
    else if (!http_req_ok(r) && status == 200)
        snprintf(why, sizeof why, "connection lost (%s)", http_req_error_detail(r));
    else if (!http_req_ok(r))
        describe_failure(a, r, why, sizeof why);
    else
        snprintf(why, sizeof why, "mcpd closed the stream");
    http_req_free(r);
    a->stream = NULL;
    if (status == 401 && a->state != ST_STOPPING) {
        token_rejected(a, "the control stream");
        if (a->state == ST_BACKOFF)
            return;
    }
    connection_lost(a, why);
}

static void open_stream(struct agent *a)
{
    struct mcpd_headers h;
    char *url = mcpd_url(a, MCP_ROUTE_STREAM);
    if (!url) {
        log_error("cannot open the stream: out of memory");
        schedule_retry(a);
        return;
    }
    sse_parser_reset(&a->sse);
    a->stream_fail[0] = '\0';
    struct http_req_opts o = {
        .method = "GET",
        .url = url,
        .headers = mcpd_headers(a, &h, true, "Accept: text/event-stream", NULL),
        .max_body = MCPD_MAX_BODY,
        .connect_timeout_ms = MCPD_CONNECT_TIMEOUT_MS,
        /* No libcurl low-speed limit: it cannot see bytes waiting in the
         * socket after this process was stopped, and would drop a healthy
         * stream; the stall timer (which can) and TCP keepalive cover it. */
        .keepalive = true,
        .ca_file = a->creds.ca_file,
        .on_data = on_stream_data,
        .on_done = on_stream_done,
        .ud = a,
    };
    a->state = ST_STREAMING;
    int rc = http_req_start(a->loop, &o, &a->stream);
    free(url);
    if (rc < 0) {
        log_error("cannot open the stream: out of memory");
        schedule_retry(a);
        return;
    }
    a->last_rx = loop_now(a->loop);
    a->stall_recheck = false;
    loop_timer_start(a->loop, &a->stall_t, STALL_PINGS * a->ping_ms);
}

static void log_published(struct agent *a, const char *const *statuses)
{
    char list[1024];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < a->n_pubs && off < sizeof list; i++) {
        int n = snprintf(list + off, sizeof list - off, "%s%s (%s)", i ? ", " : "",
                         a->pubs[i].p->name, statuses[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    log_info("published %zu provider%s as session %s: %s", a->n_pubs, a->n_pubs == 1 ? "" : "s",
             a->session, list);
}

static void statuses_of(struct agent *a, const char **statuses)
{
    for (size_t i = 0; i < a->n_pubs; i++)
        statuses[i] = config_initial_status(a->pubs[i].p, a->pubs[i].available);
}

static void on_register_done(struct http_req *r, void *ud)
{
    struct agent *a = ud;
    long status = http_req_status(r);
    a->reg = NULL;
    if (http_req_ok(r) && status == 200) {
        size_t len = 0;
        const char *body = http_req_body(r, &len);
        json_t *j = json_loadb(body, len, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "providerSessionId"));
        if (!id || !session_id_valid(id)) {
            json_decref(j);
            http_req_free(r);
            log_warn("register failed: mcpd's answer has no valid providerSessionId");
            goto retry;
        }
        if (strcmp(id, a->session) != 0) {
            snprintf(a->session, sizeof a->session, "%s", id);
            if (session_store(a->session_path, a->session) < 0)
                log_error("cannot write session file '%s': %s", a->session_path, strerror(errno));
        }
        json_decref(j);
        http_req_free(r);
        if (a->token_rejected)
            log_info("mcpd takes the token again");
        a->token_rejected = false;
        a->chunks_only = false;
        const char **statuses = calloc(a->n_pubs ? a->n_pubs : 1, sizeof *statuses);
        if (statuses) {
            statuses_of(a, statuses);
            log_published(a, statuses);
            free(statuses);
        }
        free_checks(a);
        if (a->updating) {
            a->updating = false;
            return;
        }
        open_stream(a);
        return;
    }
    if (status == 404 && a->sent_session && a->updating) {
        /* The stream's session is gone too: reconnect from scratch. */
        http_req_free(r);
        connection_lost(a, "mcpd refused the session on a new register");
        return;
    }
    if (status == 404 && a->sent_session) {
        log_warn("mcpd refused session %s (404); registering as a new session", a->session);
        http_req_free(r);
        a->session[0] = '\0';
        free_checks(a);
        begin_connect(a, a->updating);
        return;
    }
    char why[600];
    describe_failure(a, r, why, sizeof why);
    http_req_free(r);
    if (status == 401) {
        token_rejected(a, "register");
        if (a->state == ST_BACKOFF)
            return; /* it was up: already reconnecting */
    } else if (status == 403)
        log_error("register failed: %s (check the token in '%s')", why, a->creds_path);
    else if (status == 409)
        log_error("register failed: %s (a provider name is taken on mcpd)", why);
    else
        log_warn("register failed: %s", why);
retry:
    if (a->updating) {
        /* The stream is still up; the old registration stands. */
        a->updating = false;
        free_checks(a);
        return;
    }
    drop_connection(a, "register failed");
    schedule_retry(a);
}

static void do_register(struct agent *a)
{
    const struct provider_cfg **ps = calloc(a->n_pubs ? a->n_pubs : 1, sizeof *ps);
    const char **statuses = calloc(a->n_pubs ? a->n_pubs : 1, sizeof *statuses);
    char *body = NULL;
    if (!ps || !statuses)
        goto oom;
    for (size_t i = 0; i < a->n_pubs; i++)
        ps[i] = a->pubs[i].p;
    statuses_of(a, statuses);
    a->sent_session = a->session[0] != '\0';
    body = wire_register_body(a->sent_session ? a->session : NULL, ps, statuses, a->n_pubs);
    if (!body)
        goto oom;
    if (!a->updating)
        a->state = ST_REGISTERING;
    if (mcpd_request(a, "POST", MCP_ROUTE_REGISTER, false, body, on_register_done, a, &a->reg) < 0)
        goto oom;
    free(body);
    free(ps);
    free(statuses);
    return;
oom:
    free(body);
    free(ps);
    free(statuses);
    log_error("cannot register: out of memory");
    if (!a->updating) {
        drop_connection(a, "out of memory");
        schedule_retry(a);
    }
    a->updating = false;
}

static void on_pub_check(void *ud, bool available, const char *reason)
{
    struct pub *pb = ud;
    struct agent *a = pb->a;
    openai_call_free(pb->check);
    pb->check = NULL;
    pb->available = available;
    if (!available)
        log_info("'%s' is asleep (%s); publishing it as hibernating", pb->p->name, reason);
    if (--a->checks_pending == 0)
        do_register(a);
}

static void begin_connect(struct agent *a, bool updating)
{
    free_checks(a);
    if (!a->cfg) {
        a->state = ST_IDLE;
        return;
    }
    size_t n = config_published(a->cfg);
    a->pubs = calloc(n ? n : 1, sizeof *a->pubs);
    if (!a->pubs) {
        log_error("cannot register: out of memory");
        if (!updating)
            schedule_retry(a);
        return;
    }
    a->pub_cfg = config_ref(a->cfg);
    a->updating = updating;
    for (size_t i = 0; i < a->cfg->n_providers; i++) {
        const struct provider_cfg *p = &a->cfg->providers[i];
        if (!p->publish)
            continue;
        a->pubs[a->n_pubs].a = a;
        a->pubs[a->n_pubs].p = p;
        a->pubs[a->n_pubs].available = true;
        a->n_pubs++;
    }
    if (!updating)
        a->state = ST_CHECKING;
    /* Count every check first: a check that fails to start must not
     * trigger the register while others are still being started. */
    for (size_t i = 0; i < a->n_pubs; i++)
        if (a->pubs[i].p->wake.type != WAKE_NONE)
            a->checks_pending++;
    if (a->checks_pending == 0) {
        do_register(a);
        return;
    }
    a->checks_pending++;
    for (size_t i = 0; i < a->n_pubs; i++) {
        struct pub *pb = &a->pubs[i];
        if (pb->p->wake.type == WAKE_NONE)
            continue;
        pb->check = openai_check(a->loop, pb->p, a->o.check_timeout_ms, on_pub_check, pb);
        if (!pb->check) {
            pb->available = false;
            a->checks_pending--;
        }
    }
    if (--a->checks_pending == 0)
        do_register(a);
}

/* ---- files ---------------------------------------------------------- */

struct loaded {
    struct config *cfg; /* NULL when config.json is missing */
    struct credentials creds;
    bool have_creds;
    bool insecure;
};

static int load_files(struct agent *a, struct loaded *l)
{
    char err[1024];
    memset(l, 0, sizeof *l);
    int rc = config_load(a->config_path, &l->cfg, err, sizeof err);
    if (rc == CONFIG_ERR_INVALID) {
        log_error("%s", err);
        return -1;
    }
    rc = credentials_load(a->creds_path, &l->creds, &l->insecure, err, sizeof err);
    if (rc == CONFIG_ERR_INVALID) {
        log_error("%s", err);
        config_unref(l->cfg);
        l->cfg = NULL;
        return -1;
    }
    l->have_creds = rc == 0;
    for (size_t i = 0; l->cfg && i < l->cfg->n_warnings; i++)
        log_warn("%s", l->cfg->warnings[i]);
    if (l->have_creds && l->insecure)
        log_warn("credentials '%s' can be read by other users; run: chmod 600 '%s'", a->creds_path,
                 a->creds_path);
    for (size_t i = 0; l->cfg && i < l->cfg->n_providers; i++) {
        const struct provider_cfg *p = &l->cfg->providers[i];
        if (p->publish && p->api_key_env && !getenv(p->api_key_env))
            log_warn("'%s': environment variable %s (apiKeyEnv) is not set; calling the backend "
                     "without a key",
                     p->name, p->api_key_env);
    }
    return 0;
}

/* Adopts loaded files (takes ownership). */
static void adopt(struct agent *a, struct loaded *l)
{
    config_unref(a->cfg);
    a->cfg = l->cfg;
    if (!a->cfg) {
        struct config *empty = NULL;
        char err[64];
        if (config_parse("{}", 2, a->config_path, &empty, err, sizeof err) == 0)
            a->cfg = empty;
    }
    credentials_release(&a->creds);
    a->creds = l->creds;
    a->have_creds = l->have_creds;
    memset(l, 0, sizeof *l);
}

/* Starts publishing, or idles and says what is missing. */
static void go(struct agent *a, bool config_missing)
{
    if (!a->have_creds) {
        log_warn("no credentials at '%s' (expected {\"mcpdUrl\": \"https://...\", \"token\": "
                 "\"...\"}); idle until the file appears or SIGHUP",
                 a->creds_path);
        a->state = ST_IDLE;
        return;
    }
    if (!a->cfg || config_published(a->cfg) == 0) {
        if (config_missing)
            log_warn("no config at '%s'; nothing to publish; idle until SIGHUP", a->config_path);
        else
            log_warn("nothing to publish: no provider in '%s' has \"publish\": true; idle until "
                     "SIGHUP",
                     a->config_path);
        a->state = ST_IDLE;
        return;
    }
    backoff_reset(&a->bo);
    begin_connect(a, false);
}

int agent_start(struct agent *a)
{
    struct loaded l;
    if (load_files(a, &l) < 0)
        return -1;
    bool missing = l.cfg == NULL;
    adopt(a, &l);
    char err[512];
    int rc = session_load(a->session_path, a->session, err, sizeof err);
    if (rc == CONFIG_ERR_INVALID) {
        log_warn("%s; starting a new session", err);
        a->session[0] = '\0';
    }
    go(a, missing);
    return 0;
}

/* Re-reads both files and applies what changed (SIGHUP, or a new
 * credentials file). */
static void reload(struct agent *a)
{
    struct loaded l;
    if (load_files(a, &l) < 0) {
        log_error("keeping the running configuration");
        return;
    }
    bool missing = l.cfg == NULL;
    bool creds_changed =
        l.have_creds != a->have_creds || (l.have_creds && !credentials_equal(&l.creds, &a->creds));
    const char *old_text = a->cfg ? a->cfg->text : "";
    const char *new_text = l.cfg ? l.cfg->text : "{}";
    bool cfg_changed = strcmp(old_text, new_text) != 0;
    if (missing && strcmp(old_text, "{}") == 0)
        cfg_changed = false;
    if (!creds_changed && !cfg_changed) {
        config_unref(l.cfg);
        credentials_release(&l.creds);
        log_info("files unchanged");
        return;
    }
    adopt(a, &l);
    if (!creds_changed && a->state == ST_UP && !a->updating && config_published(a->cfg) > 0) {
        log_info("configuration changed; registering again");
        begin_connect(a, true);
        return;
    }
    if (a->state != ST_IDLE)
        log_info("%s changed; reconnecting", creds_changed ? "credentials" : "configuration");
    drop_connection(a, "reloading");
    a->state = ST_IDLE;
    go(a, missing);
}

void agent_reload(struct agent *a)
{
    if (a->state == ST_STOPPING || a->state == ST_DONE)
        return;
    log_info("SIGHUP: re-reading '%s' and '%s'", a->config_path, a->creds_path);
    reload(a);
}

/* The home directory changed: a credentials file written (closed after
 * writing, or renamed into place) that differs from the running one is
 * applied as SIGHUP would. */
static void on_home_event(struct loop *l, int fd, short revents, void *ud)
{
    (void)l;
    (void)revents;
    struct agent *a = ud;
    char ev[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool creds = false;
    for (;;) {
        ssize_t n = read(fd, ev, sizeof ev);
        if (n <= 0)
            break;
        for (char *p = ev; p < ev + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            if (e->len > 0 && strcmp(e->name, "credentials") == 0)
                creds = true;
            p += sizeof *e + e->len;
        }
    }
    if (!creds || a->state == ST_STOPPING || a->state == ST_DONE)
        return;
    struct credentials c;
    bool insecure = false;
    char err[1024];
    int rc = credentials_load(a->creds_path, &c, &insecure, err, sizeof err);
    if (rc == CONFIG_ERR_MISSING)
        return;
    if (rc != 0) {
        log_error("%s; keeping the running credentials", err);
        return;
    }
    bool same = a->have_creds && credentials_equal(&c, &a->creds);
    credentials_release(&c);
    if (same)
        return;
    log_info("'%s' changed; re-reading the files", a->creds_path);
    reload(a);
}

static void watch_home(struct agent *a)
{
    a->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (a->inotify_fd < 0)
        return;
    if (inotify_add_watch(a->inotify_fd, a->home, IN_CLOSE_WRITE | IN_MOVED_TO) < 0 ||
        loop_fd_add(a->loop, &a->inotify_w, a->inotify_fd, CURL_WAIT_POLLIN, on_home_event, a) <
            0) {
        log_debug("cannot watch '%s' for new credentials: %s; SIGHUP re-reads them", a->home,
                  strerror(errno));
        close(a->inotify_fd);
        a->inotify_fd = -1;
    }
}

/* ---- shutdown ------------------------------------------------------- */

static void finish_stop(struct agent *a)
{
    loop_timer_stop(a->loop, &a->grace_t);
    drop_connection(a, "shutting down");
    a->state = ST_DONE;
    log_info("stopped");
}

static void check_stop_done(struct agent *a)
{
    if (a->state != ST_STOPPING || a->n_tasks > 0)
        return;
    if (a->rs) {
        results_finish(a->rs); /* its on_end calls again */
        return;
    }
    finish_stop(a);
}

static void on_grace(struct loop *l, void *ud)
{
    (void)l;
    struct agent *a = ud;
    log_warn("tasks still running after %lld ms; stopping anyway",
             (long long)a->o.shutdown_grace_ms);
    finish_stop(a);
}

void agent_shutdown(struct agent *a)
{
    if (a->state == ST_DONE)
        return;
    if (a->state == ST_STOPPING) {
        finish_stop(a);
        return;
    }
    log_info("shutting down (%zu task%s in flight)", a->n_tasks, a->n_tasks == 1 ? "" : "s");
    enum state prev = a->state;
    a->state = ST_STOPPING;
    loop_timer_stop(a->loop, &a->retry_t);
    loop_timer_stop(a->loop, &a->hb_t);
    loop_timer_stop(a->loop, &a->healthy_t);
    loop_timer_stop(a->loop, &a->stall_t);
    free_checks(a);
    http_req_free(a->reg);
    a->reg = NULL;
    a->updating = false;
    if (prev != ST_UP || !a->stream) {
        finish_stop(a);
        return;
    }
    /* A task whose caller has nothing yet fails now, so mcpd can give the
     * call to another member of its pool; one whose answer has begun may
     * finish within the grace period. */
    fail_tasks(a, "publisher shutting down", "publisher_shutdown", true);
    loop_timer_start(a->loop, &a->grace_t, a->o.shutdown_grace_ms);
    check_stop_done(a);
}

bool agent_finished(const struct agent *a)
{
    return a->state == ST_DONE;
}

/* ---- lifecycle ------------------------------------------------------ */

static void on_child_line(void *ud, const char *tag, const char *line)
{
    (void)ud;
    log_info("%s: %s", tag, line);
}

struct agent *agent_new(struct loop *l, const struct agent_opts *o)
{
    struct agent *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->loop = l;
    a->o = *o;
    a->inotify_fd = -1;
    a->home = strdup(o->home);
    a->config_path = join_path(o->home, "config.json");
    a->creds_path = join_path(o->home, "credentials");
    a->session_path = join_path(o->home, "provider-session");
    a->spawner = spawner_new(l, on_child_line, a);
    if (!a->home || !a->config_path || !a->creds_path || !a->session_path || !a->spawner) {
        agent_free(a);
        return NULL;
    }
    wake_opts_defaults(&a->wake_o);
    a->wake_o.poll_first_ms = o->wake_poll_first_ms;
    a->wake_o.poll_ms = o->wake_poll_ms;
    a->wake_o.check_timeout_ms = o->check_timeout_ms;
    uint64_t seed = o->seed;
    if (!o->seeded && id_random_bytes(&seed, sizeof seed) < 0)
        seed = (uint64_t)loop_now(l);
    backoff_init(&a->bo, o->backoff_min_ms, o->backoff_max_ms, seed);
    a->hb_ms = MCP_DEFAULT_HEARTBEAT_INTERVAL_MS;
    a->ping_ms = MCP_DEFAULT_PING_INTERVAL_MS;
    sse_parser_init(&a->sse, STREAM_MAX_LINE, STREAM_MAX_EVENT, on_stream_event, NULL, a);
    loop_timer_init(&a->retry_t, on_retry, a);
    loop_timer_init(&a->hb_t, on_hb_timer, a);
    loop_timer_init(&a->healthy_t, on_healthy, a);
    loop_timer_init(&a->stall_t, on_stall_timer, a);
    loop_timer_init(&a->grace_t, on_grace, a);
    a->state = ST_IDLE;
    watch_home(a);
    return a;
}

void agent_free(struct agent *a)
{
    if (!a)
        return;
    if (a->loop) {
        drop_connection(a, "exiting");
        loop_timer_stop(a->loop, &a->grace_t);
    }
    if (a->inotify_fd >= 0) {
        loop_fd_remove(a->loop, &a->inotify_w);
        close(a->inotify_fd);
    }
    spawner_free(a->spawner);
    sse_parser_release(&a->sse);
    config_unref(a->cfg);
    credentials_release(&a->creds);
    free(a->home);
    free(a->config_path);
    free(a->creds_path);
    free(a->session_path);
    free(a);
}
