/* The broker's rules with a fake clock and fake endpoints: task frames,
 * final and streamed results, result routing and tombstones, cancels,
 * timeouts, wakes, session replacement, revocation, GC, features,
 * backpressure, park refusal, shutdown, result streams, the summary of a
 * call that the usage accounting takes, and pools (the choice of a member,
 * wakes, feature filtering, failover). */
#include "broker.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define OWNER "alice"
#define SID_A "0123456789abcdef0123456789abcdef"
#define SID_B "fedcba9876543210fedcba9876543210"
#define SID_C "00000000000000000000000000000003"
#define HASH_1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HASH_2 "2222222222222222222222222222222222222222222222222222222222222222"
#define BODY "{\"model\":\"m\",\"messages\":[]}"
#define T0 1000000 /* the fake clock's start, monotonic ms */

/* What the broker told its observer about wakes that ended. */
static struct {
    int n;
    enum broker_wake_outcome outcome[16];
    int64_t ms[16];
} wakes_seen;

static void on_wake_end(void *ud, enum broker_wake_outcome outcome, int64_t duration_ms)
{
    assert_ptr_equal(ud, &wakes_seen);
    assert_true(wakes_seen.n < 16);
    wakes_seen.outcome[wakes_seen.n] = outcome;
    wakes_seen.ms[wakes_seen.n++] = duration_ms;
}

/* The only wake the observer heard of since the last call was outcome,
 * after ms. */
static void expect_wake_end(enum broker_wake_outcome outcome, int64_t ms)
{
    assert_int_equal(wakes_seen.n, 1);
    assert_int_equal(wakes_seen.outcome[0], outcome);
    assert_int_equal(wakes_seen.ms[0], ms);
    wakes_seen.n = 0;
}

static const struct broker_config base_cfg = {
    .infer_timeout_ms = 30000,
    .idle_timeout_ms = 5000,
    .wake_timeout_ms = 10000,
    .ping_interval_ms = 40000,
    .heartbeat_interval_ms = 20000,
    .max_inflight = 4,
    .max_held = 2,
    .max_frame = 4096,
    .stream_backlog = 8192,
    .caller_backlog = 4096,
    .max_result = 4096,
    .result_stream = true,
    .on_wake_end = on_wake_end,
    .observer = &wakes_seen,
};

/* ---- fake endpoints ---- */

struct fake_ep {
    struct broker_ep ep;
    int parks; /* park calls, refused or not */
    int wakes;
    bool refuse;
};

static struct fake_ep *fake_of(struct broker_ep *ep)
{
    return (struct fake_ep *)((char *)ep - offsetof(struct fake_ep, ep));
}

static bool fake_park(struct broker_ep *ep)
{
    struct fake_ep *f = fake_of(ep);
    f->parks++;
    return !f->refuse;
}

static void fake_wake(struct broker_ep *ep)
{
    fake_of(ep)->wakes++;
}

static void fake_init(struct fake_ep *f)
{
    memset(f, 0, sizeof *f);
    f->ep.park = fake_park;
    f->ep.wake = fake_wake;
}

/* ---- fixture ---- */

struct fx {
    struct broker *b;
    int64_t now;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->b = broker_new(&base_cfg);
    f->now = T0;
    memset(&wakes_seen, 0, sizeof wakes_seen);
    *state = f;
    return f->b ? 0 : -1;
}

/* Fails the test when it left a stream open or a call not done. */
static int teardown(void **state)
{
    struct fx *f = *state;
    struct broker_stats s;
    broker_stats(f->b, &s);
    broker_free(f->b);
    free(f);
    return s.streams == 0 && s.calls == 0 ? 0 : -1;
}

/* ---- publishers: a session with its control stream ---- */

struct pub {
    struct fake_ep ep;
    struct broker_stream *st;
    const char *sid;
    const char *owner;
};

/* Reads a control stream until it has nothing more to give: out gets the
 * bytes, NUL-terminated; returns the last read's verdict. */
static ssize_t slurp(struct broker *b, struct broker_stream *st, char *out, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    for (;;) {
        assert_true(len + 1 < cap);
        n = broker_stream_read(b, st, out + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    return n;
}

/* The same for a caller's event stream. */
static ssize_t call_slurp(struct broker *b, struct broker_call *c, char *out, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    for (;;) {
        assert_true(len + 1 < cap);
        n = broker_call_read(b, c, out + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    return n;
}

/* Registers sid, opens its stream and reads the hello, leaving the
 * stream's endpoint parked. */
static void pub_open(struct fx *f, struct pub *p, const char *sid, const char *owner,
                     const char *hash, unsigned features)
{
    fake_init(&p->ep);
    p->sid = sid;
    p->owner = owner;
    assert_int_equal(broker_session_registered(f->b, sid, owner, features, f->now), 0);
    p->st = broker_stream_open(f->b, sid, owner, hash, &p->ep.ep, f->now);
    assert_non_null(p->st);
    char text[1024];
    assert_int_equal(slurp(f->b, p->st, text, sizeof text), BROKER_PARKED);
    assert_non_null(strstr(text, "event: hello\n"));
}

static void pub_close(struct fx *f, struct pub *p, bool deactivate)
{
    char sid[BROKER_ID_LEN] = "";
    assert_int_equal(broker_stream_closed(f->b, p->st, sid), deactivate);
    assert_string_equal(sid, p->sid);
    p->st = NULL;
}

/* Everything queued on p's stream since the last read. */
static char *pub_read(struct fx *f, struct pub *p, ssize_t expect_rc)
{
    static char text[16384];
    assert_int_equal(slurp(f->b, p->st, text, sizeof text), expect_rc);
    return text;
}

/* The data of the nth (0-based) frame of event type `event` in text,
 * parsed, or NULL. */
static json_t *frame_data(const char *text, const char *event, int nth)
{
    char head[64];
    snprintf(head, sizeof head, "event: %s\n", event);
    const char *p = text;
    for (;;) {
        p = strstr(p, head);
        if (!p)
            return NULL;
        if (nth-- == 0)
            break;
        p += strlen(head);
    }
    const char *data = strstr(p, "\ndata: ");
    assert_non_null(data);
    data += strlen("\ndata: ");
    const char *end = strstr(data, "\n\n");
    assert_non_null(end);
    json_error_t je;
    json_t *o = json_loadb(data, (size_t)(end - data), 0, &je);
    assert_non_null(o);
    return o;
}

/* The taskId of the nth task frame in text. */
static void task_id_of(const char *text, int nth, char id[BROKER_ID_LEN])
{
    json_t *o = frame_data(text, "task", nth);
    assert_non_null(o);
    const char *s = json_string_value(json_object_get(o, "taskId"));
    assert_non_null(s);
    assert_int_equal(strlen(s), BROKER_ID_LEN - 1);
    memcpy(id, s, BROKER_ID_LEN);
    json_decref(o);
}

/* How many times needle occurs in text. */
static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---- callers ---- */

static struct broker_call_req req(const char *llm, const char *sid)
{
    return (struct broker_call_req){
        .llm = llm, .session = sid, .body = BODY, .body_len = strlen(BODY)};
}

/* Starts a call that must succeed; its endpoint is parked. */
static struct broker_call *start(struct fx *f, struct fake_ep *ep, struct broker_call_req rq)
{
    fake_init(ep);
    struct broker_error err = {0};
    struct broker_call *c = broker_call_start(f->b, &rq, &ep->ep, f->now, &err);
    assert_non_null(c);
    assert_int_equal(ep->parks, 1);
    assert_int_equal(ep->wakes, 0);
    return c;
}

/* Starts a call that must be refused with status. */
static struct broker_error refused(struct fx *f, struct broker_call_req rq, int status)
{
    struct fake_ep ep;
    fake_init(&ep);
    struct broker_error err = {0};
    assert_null(broker_call_start(f->b, &rq, &ep.ep, f->now, &err));
    assert_int_equal(err.status, status);
    assert_int_equal(ep.parks, 0);
    return err;
}

/* Takes a call's failure, which must have status. */
static struct broker_error failure(struct fx *f, struct broker_call *c, int status)
{
    struct broker_head h;
    struct broker_error err = {0};
    assert_int_equal(broker_call_head(f->b, c, &h, &err), -1);
    assert_int_equal(err.status, status);
    assert_true(err.msg[0] != '\0');
    return err;
}

/* Takes an event-stream head. */
static void sse_head(struct fx *f, struct broker_call *c)
{
    struct broker_head h;
    struct broker_error err = {0};
    assert_int_equal(broker_call_head(f->b, c, &h, &err), 1);
    assert_int_equal(h.status, 200);
    assert_true(h.sse);
    assert_null(h.body);
    free(h.headers);
}

/* Checks that text ends with one error event in OpenAI's shape. */
static void expect_error_event(const char *text, const char *type, const char *code)
{
    const char *ev = strstr(text, "event: error\ndata: ");
    assert_non_null(ev);
    json_t *o = frame_data(ev, "error", 0);
    assert_string_equal(strstr(ev, "\n\n"), "\n\n"); /* nothing after it */
    json_t *e = json_object_get(o, "error");
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(e), 3);
    const char *msg = json_string_value(json_object_get(e, "message"));
    assert_non_null(msg);
    assert_true(msg[0] != '\0');
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    if (code)
        assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    else
        assert_true(json_is_null(json_object_get(e, "code")));
    json_decref(o);
}

/* ---- results ---- */

static int deliver(struct fx *f, const struct pub *p, const char *task,
                   const struct broker_piece *pc, struct broker_outcome *out)
{
    struct broker_outcome ignored;
    char msg[256];
    int rc = broker_deliver(f->b, p->sid, p->owner, task, pc, f->now, out ? out : &ignored, msg,
                            sizeof msg);
    if (rc != 200)
        assert_true(msg[0] != '\0');
    return rc;
}

static int final(struct fx *f, const struct pub *p, const char *task, int status, const char *body)
{
    struct broker_piece pc = {.kind = PIECE_FINAL,
                              .status = status,
                              .ctype = "application/json",
                              .data = body,
                              .len = body ? strlen(body) : 0};
    return deliver(f, p, task, &pc, NULL);
}

static int chunk(struct fx *f, const struct pub *p, const char *task, const char *data, bool done)
{
    struct broker_piece pc = {
        .kind = PIECE_CHUNK, .data = data, .len = data ? strlen(data) : 0, .done = done};
    return deliver(f, p, task, &pc, NULL);
}

static int events(struct fx *f, const struct pub *p, const char *task, enum broker_piece_kind kind,
                  const char *data)
{
    struct broker_piece pc = {.kind = kind, .data = data, .len = data ? strlen(data) : 0};
    return deliver(f, p, task, &pc, NULL);
}

/* Starts a call on p and returns the id of the task it sent. */
static struct broker_call *start_task(struct fx *f, struct pub *p, struct fake_ep *ep,
                                      struct broker_call_req rq, char id[BROKER_ID_LEN])
{
    struct broker_call *c = start(f, ep, rq);
    task_id_of(pub_read(f, p, BROKER_PARKED), 0, id);
    return c;
}

static void assert_no_tasks(struct fx *f)
{
    struct broker_stats s;
    broker_stats(f->b, &s);
    assert_int_equal(s.tasks, 0);
    assert_int_equal(s.wakes, 0);
}

/* ---- streams ---- */

static void test_stream_hello_and_reads(void **state)
{
    struct fx *f = *state;
    struct fake_ep ep;
    fake_init(&ep);
    assert_false(broker_session_live(f->b, SID_A));
    assert_int_equal(broker_session_registered(f->b, SID_A, OWNER, 0, f->now), 0);
    struct broker_stream *st = broker_stream_open(f->b, SID_A, OWNER, HASH_1, &ep.ep, f->now);
    assert_non_null(st);
    assert_true(broker_session_live(f->b, SID_A));

    /* the hello comes first, read here in small pieces */
    char want[256], got[256];
    snprintf(want, sizeof want,
             "event: hello\ndata: {\"providerSessionId\":\"%s\",\"heartbeatIntervalSeconds\":20,"
             "\"pingIntervalSeconds\":40,\"heartbeatIntervalMs\":20000,\"pingIntervalMs\":40000,"
             "\"features\":[\"result-stream\"]}\n\n",
             SID_A);
    size_t len = 0;
    for (;;) {
        ssize_t n = broker_stream_read(f->b, st, got + len, 7);
        if (n <= 0) {
            assert_int_equal(n, BROKER_PARKED);
            break;
        }
        assert_true(n <= 7);
        len += (size_t)n;
    }
    got[len] = '\0';
    assert_string_equal(got, want);
    assert_int_equal(ep.parks, 1);
    assert_int_equal(ep.wakes, 0);

    /* a frame for a parked stream wakes it once */
    static const char frame[] = "event: x\ndata: 1\n\n";
    assert_int_equal(broker_dispatch(f->b, SID_A, frame, sizeof frame - 1), 0);
    assert_int_equal(broker_dispatch(f->b, SID_A, frame, sizeof frame - 1), 0);
    assert_int_equal(ep.wakes, 1);
    assert_int_equal(slurp(f->b, st, got, sizeof got), BROKER_PARKED);
    assert_string_equal(got, "event: x\ndata: 1\n\nevent: x\ndata: 1\n\n");
    assert_int_equal(broker_dispatch(f->b, SID_B, frame, sizeof frame - 1), -1);

    /* a kick wakes a parked endpoint, and only a parked one */
    broker_kick(f->b, &ep.ep);
    assert_int_equal(ep.wakes, 2);
    broker_kick(f->b, &ep.ep);
    assert_int_equal(ep.wakes, 2);

    char sid[BROKER_ID_LEN];
    assert_true(broker_stream_closed(f->b, st, sid));
    assert_string_equal(sid, SID_A);
    assert_false(broker_session_live(f->b, SID_A));
}

static void test_ping(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    assert_int_equal(broker_tick(f->b, T0 + 39999), T0 + 40000);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    assert_int_equal(broker_tick(f->b, T0 + 40000), T0 + 80000);
    assert_int_equal(p.ep.wakes, 1);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), ": ping\n\n");
    pub_close(f, &p, true);
}

/* ---- task frames ---- */

static void test_infer_task_frame(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        unsigned features;
        bool streaming;
        const char *path;
        const char *body;
        const char *spliced; /* the body as the frame carries it */
    } cases[] = {
        {"plain", 0, false, NULL, "{\"model\":\"m\",\n \"messages\":[]}\r\n",
         "{\"model\":\"m\",  \"messages\":[]}  "},
        {"streaming", 0, true, NULL, "{\"stream\":true}", "{\"stream\":true}"},
        {"path", BROKER_FEAT_PATHS, false, "/v1/embeddings", "{\"input\":\n\"x\"}\n",
         "{\"input\": \"x\"} "},
        {"streaming path", BROKER_FEAT_PATHS | BROKER_FEAT_STREAMED, true, "/v1/responses",
         "\r\n{}", "  {}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct pub p;
        pub_open(f, &p, SID_A, OWNER, HASH_1, cases[i].features);
        struct broker_call_req rq = req("llm-a", SID_A);
        rq.streaming = cases[i].streaming;
        rq.path = cases[i].path;
        rq.body = cases[i].body;
        rq.body_len = strlen(cases[i].body);
        struct fake_ep ce;
        struct broker_call *c = start(f, &ce, rq);
        assert_int_equal(p.ep.wakes, 1); /* the parked stream has work */

        char *text = pub_read(f, &p, BROKER_PARKED);
        char id[BROKER_ID_LEN];
        task_id_of(text, 0, id);
        char want[1024];
        snprintf(want, sizeof want,
                 "event: task\nid: %s\ndata: {\"kind\":\"infer\",\"taskId\":\"%s\","
                 "\"llmName\":\"llm-a\",\"streaming\":%s%s%s%s,\"body\":%s}\n\n",
                 id, id, cases[i].streaming ? "true" : "false", cases[i].path ? ",\"path\":\"" : "",
                 cases[i].path ? cases[i].path : "", cases[i].path ? "\"" : "", cases[i].spliced);
        assert_string_equal(text, want);

        /* and it is JSON whose body is the caller's */
        json_t *o = frame_data(want, "task", 0);
        json_t *body = json_loads(cases[i].body, 0, NULL);
        assert_non_null(body);
        assert_true(json_equal(json_object_get(o, "body"), body));
        assert_string_equal(json_string_value(json_object_get(o, "kind")), "infer");
        assert_int_equal(json_is_true(json_object_get(o, "streaming")), cases[i].streaming);
        json_decref(body);
        json_decref(o);

        broker_call_done(f->b, c);
        pub_close(f, &p, true);
    }
    assert_no_tasks(f);
}

/* ---- final results ---- */

#define HDRS(s) s, sizeof(s) - 1

static void test_final_results(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        int status;
        const char *body;
        const char *headers;
        size_t headers_len;
        int publisher; /* broker_deliver's answer */
        int caller;    /* the caller's status, as a head or a failure */
        bool has_body;
    } cases[] = {
        {"ok", 200, "{\"id\":\"r\"}", HDRS("x-request-id\0r1\0"), 200, 200, true},
        {"created", 201, "{}", NULL, 0, 200, 201, true},
        {"no content", 204, "dropped", HDRS("x-a\0b\0"), 200, 204, false},
        {"not modified", 304, "dropped", HDRS("etag\0\"v1\"\0"), 200, 304, false},
        {"backend error passes through", 429, "{\"error\":{}}", NULL, 0, 200, 429, true},
        {"highest status", 599, "x", NULL, 0, 200, 599, true},
        {"informational", 100, "x", NULL, 0, 400, 502, false},
        {"just below", 199, "x", NULL, 0, 400, 502, false},
        {"just above", 600, "x", NULL, 0, 400, 502, false},
        {"negative", -200, "x", NULL, 0, 400, 502, false},
    };
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct fake_ep ce;
        char id[BROKER_ID_LEN];
        struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);

        /* not yet: the caller parks again */
        struct broker_head h;
        struct broker_error err = {0};
        assert_int_equal(broker_call_head(f->b, c, &h, &err), 0);
        assert_int_equal(ce.parks, 2);

        struct broker_piece pc = {.kind = PIECE_FINAL,
                                  .status = cases[i].status,
                                  .headers = cases[i].headers,
                                  .headers_len = cases[i].headers_len,
                                  .ctype = "application/json",
                                  .data = cases[i].body,
                                  .len = strlen(cases[i].body)};
        assert_int_equal(deliver(f, &p, id, &pc, NULL), cases[i].publisher);
        assert_int_equal(ce.wakes, 1);
        /* the task is over: a second post is late, and wakes nobody */
        assert_int_equal(deliver(f, &p, id, &pc, NULL), 410);
        assert_int_equal(ce.wakes, 1);

        if (cases[i].publisher != 200) {
            struct broker_error e = failure(f, c, cases[i].caller);
            assert_string_equal(e.code, "publisher_error");
        } else {
            assert_int_equal(broker_call_head(f->b, c, &h, &err), 1);
            assert_int_equal(h.status, cases[i].caller);
            assert_false(h.sse);
            assert_string_equal(h.ctype, "application/json");
            assert_non_null(h.body);
            if (cases[i].has_body) {
                assert_int_equal(h.len, strlen(cases[i].body));
                assert_memory_equal(h.body, cases[i].body, h.len);
            } else {
                assert_int_equal(h.len, 0);
            }
            assert_int_equal(h.headers_len, cases[i].headers_len);
            if (cases[i].headers_len)
                assert_memory_equal(h.headers, cases[i].headers, h.headers_len);
            free(h.body);
            free(h.headers);
            /* the head is taken once */
            assert_int_equal(broker_call_head(f->b, c, &h, &err), -1);
            assert_int_equal(err.status, 500);
        }
        broker_call_done(f->b, c);
        /* a finished task is not cancelled */
        assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    }
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

static void test_result_too_large(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);
    char *big = malloc(base_cfg.max_result + 2);
    memset(big, 'x', base_cfg.max_result + 1);
    big[base_cfg.max_result + 1] = '\0';
    assert_int_equal(final(f, &p, id, 200, big), 200);
    free(big);
    assert_int_equal(ce.wakes, 1);
    failure(f, c, 502);
    assert_int_equal(final(f, &p, id, 200, "{}"), 410);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

/* ---- streamed results ---- */

static void test_streaming_chunks(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, rq, id);
    struct broker_head h;
    struct broker_error err = {0};
    assert_int_equal(broker_call_head(f->b, c, &h, &err), 0);

    /* the first chunk starts the event stream */
    assert_int_equal(chunk(f, &p, id, "{\"a\":1}", false), 200);
    assert_int_equal(ce.wakes, 1);
    assert_int_equal(chunk(f, &p, id, "{\"a\":2}", false), 200);
    assert_int_equal(ce.wakes, 1);
    sse_head(f, c);
    char text[4096];
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_PARKED);
    assert_string_equal(text, "data: {\"a\":1}\n\ndata: {\"a\":2}\n\n");

    assert_int_equal(chunk(f, &p, id, "{\"a\":3}", false), 200);
    assert_int_equal(ce.wakes, 2);
    assert_int_equal(chunk(f, &p, id, NULL, true), 200);
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
    assert_string_equal(text, "data: {\"a\":3}\n\ndata: [DONE]\n\n");
    assert_int_equal(broker_call_read(f->b, c, text, sizeof text), BROKER_END);

    assert_int_equal(chunk(f, &p, id, "{\"a\":4}", false), 410);
    broker_call_done(f->b, c);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), ""); /* no cancel */
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

/* A chunk's data may hold line breaks: each line becomes a data line. */
static void test_chunk_lines(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        const char *data;
        bool done;
        const char *want;
    } cases[] = {
        {"one line", "x", false, "data: x\n\n"},
        {"LF", "a\nb", false, "data: a\ndata: b\n\n"},
        {"CRLF", "a\r\nb", false, "data: a\ndata: b\n\n"},
        {"CR", "a\rb", false, "data: a\ndata: b\n\n"},
        {"last with done", "z", true, "data: z\n\ndata: [DONE]\n\n"},
        {"many lines", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16", false,
         "data: 1\ndata: 2\ndata: 3\ndata: 4\ndata: 5\ndata: 6\ndata: 7\ndata: 8\ndata: 9\n"
         "data: 10\ndata: 11\ndata: 12\ndata: 13\ndata: 14\ndata: 15\ndata: 16\n\n"},
        {"empty lines", "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n", false,
         "data: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \n"
         "data: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \n\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct pub p;
        pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
        struct broker_call_req rq = req("llm-a", SID_A);
        rq.streaming = true;
        struct fake_ep ce;
        char id[BROKER_ID_LEN];
        struct broker_call *c = start_task(f, &p, &ce, rq, id);
        assert_int_equal(chunk(f, &p, id, cases[i].data, cases[i].done), 200);
        assert_int_equal(ce.wakes, 1);
        sse_head(f, c);
        char text[4096];
        assert_int_equal(call_slurp(f->b, c, text, sizeof text),
                         cases[i].done ? BROKER_END : BROKER_PARKED);
        assert_string_equal(text, cases[i].want);
        broker_call_done(f->b, c);
        pub_close(f, &p, true);
    }
    assert_no_tasks(f);
}

/* A final result posted after a stream started ends the stream. */
static void test_final_after_stream_started(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        int status;
        const char *body;
        const char *want;       /* the events after "data: first" */
        const char *error_type; /* or an error event of this type */
    } cases[] = {
        {"ok", 200, "{\"x\":1}", "data: {\"x\":1}\n\ndata: [DONE]\n\n", NULL},
        {"pretty-printed", 200,
         "{\n \"a\": 1,\n \"b\": 2,\n \"c\": 3,\n \"d\": 4,\n \"e\": 5,\n"
         " \"f\": 6,\n \"g\": 7,\n \"h\": 8,\n \"i\": 9,\n \"j\": 10\n}",
         "data: {\ndata:  \"a\": 1,\ndata:  \"b\": 2,\ndata:  \"c\": 3,\ndata:  \"d\": 4,\n"
         "data:  \"e\": 5,\ndata:  \"f\": 6,\ndata:  \"g\": 7,\ndata:  \"h\": 8,\n"
         "data:  \"i\": 9,\ndata:  \"j\": 10\ndata: }\n\ndata: [DONE]\n\n",
         NULL},
        {"server error", 500, "{}", NULL, "server_error"},
        {"client error", 404, "{}", NULL, "invalid_request_error"},
        {"rate limit", 429, "{}", NULL, "rate_limit_error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct pub p;
        pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
        struct broker_call_req rq = req("llm-a", SID_A);
        rq.streaming = true;
        struct fake_ep ce;
        char id[BROKER_ID_LEN];
        struct broker_call *c = start_task(f, &p, &ce, rq, id);
        assert_int_equal(chunk(f, &p, id, "first", false), 200);
        sse_head(f, c);
        char text[4096];
        assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_PARKED);
        assert_string_equal(text, "data: first\n\n");

        assert_int_equal(final(f, &p, id, cases[i].status, cases[i].body), 200);
        assert_int_equal(ce.wakes, 2);
        assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
        if (cases[i].want)
            assert_string_equal(text, cases[i].want);
        else
            expect_error_event(text, cases[i].error_type, "backend_error");
        assert_int_equal(final(f, &p, id, 200, "{}"), 410);
        broker_call_done(f->b, c);
        assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
        pub_close(f, &p, true);
    }
    assert_no_tasks(f);
}

static void test_streamed_events(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, BROKER_FEAT_STREAMED);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, rq, id);

    static const char ev1[] = "data: {\"a\":1}\n\n";
    static const char ev2[] = "event: response.delta\nid: 7\ndata: x\ndata: y\n\n: note\n\n";
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, ev1), 200);
    assert_int_equal(ce.wakes, 1);
    sse_head(f, c);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, ev2), 200);
    char text[4096];
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_PARKED);
    assert_string_equal(text, "data: {\"a\":1}\n\n"
                              "event: response.delta\nid: 7\ndata: x\ndata: y\n\n: note\n\n");
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, "data: [DONE]\n\n"), 200);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS_END, NULL), 200);
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
    assert_string_equal(text, "data: [DONE]\n\n");
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, ev1), 410);
    broker_call_done(f->b, c);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

static void test_streamed_events_cut(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, BROKER_FEAT_STREAMED);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, rq, id);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, "data: 1\n\n"), 200);
    sse_head(f, c);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS_CUT, NULL), 200);
    char text[4096];
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
    assert_int_equal(strncmp(text, "data: 1\n\nevent: error\n", 22), 0);
    expect_error_event(text, "server_error", "publisher_error");
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, "data: 2\n\n"), 410);
    broker_call_done(f->b, c);
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

/* Cut before any event: the caller gets an error reply, not a stream. */
static void test_streamed_events_cut_before_any(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, BROKER_FEAT_STREAMED);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, rq, id);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS_CUT, NULL), 200);
    assert_int_equal(ce.wakes, 1);
    failure(f, c, 502);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

static void test_stream_pieces_need_a_streaming_task(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        enum broker_piece_kind kind;
        const char *data;
        bool done;
    } cases[] = {
        {"chunk", PIECE_CHUNK, "{}", false},
        {"last chunk", PIECE_CHUNK, NULL, true},
        {"events", PIECE_EVENTS, "data: x\n\n", false},
        {"events end", PIECE_EVENTS_END, NULL, false},
        {"events cut", PIECE_EVENTS_CUT, NULL, false},
    };
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, BROKER_FEAT_STREAMED);
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct broker_piece pc = {.kind = cases[i].kind,
                                  .data = cases[i].data,
                                  .len = cases[i].data ? strlen(cases[i].data) : 0,
                                  .done = cases[i].done};
        assert_int_equal(deliver(f, &p, id, &pc, NULL), 400);
        assert_int_equal(ce.wakes, 0);
    }
    /* the task lives on and takes its proper answer */
    assert_int_equal(final(f, &p, id, 200, "{}"), 200);
    assert_int_equal(ce.wakes, 1);
    struct broker_head h;
    struct broker_error err;
    assert_int_equal(broker_call_head(f->b, c, &h, &err), 1);
    assert_int_equal(h.status, 200);
    free(h.body);
    free(h.headers);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

static void test_publisher_error_piece(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);
    struct broker_piece pc = {.kind = PIECE_ERROR, .data = "backend refused", .len = 15};
    assert_int_equal(deliver(f, &p, id, &pc, NULL), 200);
    assert_int_equal(ce.wakes, 1);
    struct broker_error e = failure(f, c, 502);
    assert_non_null(strstr(e.msg, "backend refused"));
    assert_int_equal(deliver(f, &p, id, &pc, NULL), 410);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

/* ---- routing and tombstones ---- */

static void test_result_routing(void **state)
{
    struct fx *f = *state;
    struct pub a, b, m;
    pub_open(f, &a, SID_A, OWNER, HASH_1, 0);
    pub_open(f, &b, SID_B, OWNER, HASH_1, 0);     /* the same owner's other session */
    pub_open(f, &m, SID_C, "mallory", HASH_2, 0); /* another owner */
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &a, &ce, req("llm-a", SID_A), id);

    static const char unknown[] = "ffffffffffffffffffffffffffffffff";
    const struct {
        const char *name;
        const char *sid;
        const char *owner;
        const char *task;
    } strangers[] = {
        {"other session", SID_B, OWNER, id},
        {"other owner's session", SID_C, "mallory", id},
        {"wrong owner for the session", SID_A, "mallory", id},
        {"unknown session", "99999999999999999999999999999999", OWNER, id},
        {"unknown task", SID_A, OWNER, unknown},
    };
    struct broker_piece pc = {
        .kind = PIECE_FINAL, .status = 200, .ctype = "application/json", .data = "{}", .len = 2};
    for (size_t i = 0; i < sizeof strangers / sizeof strangers[0]; i++) {
        print_message("stranger %s\n", strangers[i].name);
        struct pub who = {.sid = strangers[i].sid, .owner = strangers[i].owner};
        assert_int_equal(deliver(f, &who, strangers[i].task, &pc, NULL), 404);
        assert_int_equal(ce.wakes, 0);
    }

    /* finished: late posts get 410 from the right session and owner only */
    assert_int_equal(deliver(f, &a, id, &pc, NULL), 200);
    assert_int_equal(ce.wakes, 1);
    broker_call_done(f->b, c);
    assert_int_equal(deliver(f, &a, id, &pc, NULL), 410);
    for (size_t i = 0; i < sizeof strangers / sizeof strangers[0]; i++) {
        print_message("stranger %s on the tombstone\n", strangers[i].name);
        struct pub who = {.sid = strangers[i].sid, .owner = strangers[i].owner};
        assert_int_equal(deliver(f, &who, strangers[i].task, &pc, NULL), 404);
    }
    struct broker_stats s;
    broker_stats(f->b, &s);
    assert_int_equal(s.tombstones, 1);

    /* the tombstone lasts 60 s */
    f->now = T0 + 59999;
    broker_tick(f->b, f->now);
    assert_int_equal(deliver(f, &a, id, &pc, NULL), 410);
    f->now = T0 + 60000;
    broker_tick(f->b, f->now);
    assert_int_equal(deliver(f, &a, id, &pc, NULL), 404);
    broker_stats(f->b, &s);
    assert_int_equal(s.tombstones, 0);

    pub_close(f, &a, true);
    pub_close(f, &b, true);
    pub_close(f, &m, true);
}

/* ---- cancel ---- */

static void test_cancel_on_call_done(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        bool streaming;
        bool started; /* the stream started before the caller left */
    } cases[] = {
        {"waiting", false, false},
        {"waiting for a stream", true, false},
        {"mid-stream", true, true},
    };
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct broker_call_req rq = req("llm-a", SID_A);
        rq.streaming = cases[i].streaming;
        struct fake_ep ce;
        char id[BROKER_ID_LEN];
        struct broker_call *c = start_task(f, &p, &ce, rq, id);
        if (cases[i].started) {
            assert_int_equal(chunk(f, &p, id, "x", false), 200);
            sse_head(f, c);
        }
        int wakes = p.ep.wakes;
        broker_call_done(f->b, c);
        assert_int_equal(p.ep.wakes, wakes + 1);
        char want[128];
        snprintf(want, sizeof want, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", id);
        assert_string_equal(pub_read(f, &p, BROKER_PARKED), want);
        assert_int_equal(final(f, &p, id, 200, "{}"), 410);
        assert_int_equal(chunk(f, &p, id, "y", false), 410);
    }
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

/* ---- timeouts ---- */

static void test_infer_timeout(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);

    /* the task's deadline comes before the next ping and reap */
    assert_int_equal(broker_tick(f->b, T0), T0 + 30000);
    assert_int_equal(broker_tick(f->b, T0 + 29999), T0 + 30000);
    assert_int_equal(ce.wakes, 0);
    assert_int_equal(broker_tick(f->b, T0 + 30000), T0 + 40000);
    assert_int_equal(ce.wakes, 1);
    struct broker_error e = failure(f, c, 504);
    assert_string_equal(e.code, "timeout");

    char want[128];
    snprintf(want, sizeof want, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", id);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), want);
    f->now = T0 + 30001;
    assert_int_equal(final(f, &p, id, 200, "{}"), 410);
    broker_call_done(f->b, c);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    pub_close(f, &p, true);
}

static void test_idle_timeout(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, rq, id);

    f->now = T0 + 1000;
    assert_int_equal(chunk(f, &p, id, "1", false), 200);
    sse_head(f, c);
    assert_int_equal(broker_tick(f->b, f->now), T0 + 6000);
    f->now = T0 + 5000; /* a piece before the idle deadline re-arms it */
    assert_int_equal(chunk(f, &p, id, "2", false), 200);
    assert_int_equal(broker_tick(f->b, T0 + 9999), T0 + 10000);
    char text[4096];
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_PARKED);
    assert_string_equal(text, "data: 1\n\ndata: 2\n\n");

    broker_tick(f->b, T0 + 10000);
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
    expect_error_event(text, "server_error", "timeout");
    json_t *o = frame_data(text, "error", 0);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(o, "error"), "message")), "idle"));
    json_decref(o);
    char want[128];
    snprintf(want, sizeof want, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", id);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), want);
    assert_int_equal(chunk(f, &p, id, "3", false), 410);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

/* A streaming caller that does not read is cut off, and the task too. */
static void test_caller_backlog(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, rq, id);
    char piece[1001];
    memset(piece, 'x', 1000);
    piece[1000] = '\0';
    for (int i = 0; i < 4; i++) /* 4 x 1008 bytes fit in 4096 */
        assert_int_equal(chunk(f, &p, id, piece, false), 200);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    assert_int_equal(chunk(f, &p, id, piece, false), 200);
    char want[128];
    snprintf(want, sizeof want, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", id);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), want);
    assert_int_equal(chunk(f, &p, id, piece, false), 410);

    sse_head(f, c);
    static char text[8192];
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
    assert_int_equal(count(text, "data: xxxx"), 4);
    expect_error_event(text, "server_error", "caller_too_slow");
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

/* ---- wakes ---- */

static void test_wake_join_and_success(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.hibernating = true;
    struct fake_ep e1, e2;
    struct broker_call *c1 = start(f, &e1, rq);
    rq.streaming = true;
    struct broker_call *c2 = start(f, &e2, rq);

    char *text = pub_read(f, &p, BROKER_PARKED);
    char wid[BROKER_ID_LEN], want[512];
    task_id_of(text, 0, wid);
    snprintf(want, sizeof want,
             "event: task\nid: %s\ndata: {\"kind\":\"wake\",\"taskId\":\"%s\","
             "\"llmName\":\"llm-a\"}\n\n",
             wid, wid);
    assert_string_equal(text, want);
    struct broker_stats s;
    broker_stats(f->b, &s);
    assert_int_equal(s.wakes, 1);
    assert_int_equal(s.tasks, 1);
    assert_int_equal(s.calls, 2);

    /* held callers park */
    struct broker_head h;
    struct broker_error err;
    assert_int_equal(broker_call_head(f->b, c1, &h, &err), 0);

    /* a wake takes no stream pieces */
    assert_int_equal(chunk(f, &p, wid, "x", false), 400);
    assert_int_equal(wakes_seen.n, 0);

    f->now += 750;
    struct broker_outcome out;
    struct broker_piece ok = {.kind = PIECE_FINAL, .status = 204, .ctype = "application/json"};
    assert_int_equal(deliver(f, &p, wid, &ok, &out), 200);
    assert_string_equal(out.woke, "llm-a");
    expect_wake_end(BROKER_WAKE_OK, 750);
    assert_int_equal(e1.wakes, 0);
    assert_int_equal(e2.wakes, 0);

    /* both callers' infer tasks went out, in the order they came */
    text = pub_read(f, &p, BROKER_PARKED);
    assert_int_equal(count(text, "event: task\n"), 2);
    char id1[BROKER_ID_LEN], id2[BROKER_ID_LEN];
    task_id_of(text, 0, id1);
    task_id_of(text, 1, id2);
    assert_string_not_equal(id1, id2);
    assert_string_not_equal(id1, wid);
    json_t *o1 = frame_data(text, "task", 0), *o2 = frame_data(text, "task", 1);
    assert_string_equal(json_string_value(json_object_get(o1, "kind")), "infer");
    assert_string_equal(json_string_value(json_object_get(o1, "llmName")), "llm-a");
    assert_true(json_is_false(json_object_get(o1, "streaming")));
    assert_true(json_is_true(json_object_get(o2, "streaming")));
    json_decref(o1);
    json_decref(o2);
    broker_stats(f->b, &s);
    assert_int_equal(s.wakes, 0);
    assert_int_equal(s.tasks, 2);
    assert_int_equal(final(f, &p, wid, 200, "{}"), 410);

    assert_int_equal(final(f, &p, id1, 200, "{\"n\":1}"), 200);
    assert_int_equal(e1.wakes, 1);
    assert_int_equal(broker_call_head(f->b, c1, &h, &err), 1);
    assert_int_equal(h.status, 200);
    assert_memory_equal(h.body, "{\"n\":1}", h.len);
    free(h.body);
    free(h.headers);
    assert_int_equal(chunk(f, &p, id2, "s", true), 200);
    assert_int_equal(e2.wakes, 1);
    sse_head(f, c2);
    char ev[256];
    assert_int_equal(call_slurp(f->b, c2, ev, sizeof ev), BROKER_END);
    assert_string_equal(ev, "data: s\n\ndata: [DONE]\n\n");

    broker_call_done(f->b, c1);
    broker_call_done(f->b, c2);
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

static void test_wake_failures(void **state)
{
    struct fx *f = *state;
    enum how { BY_ERROR, BY_STATUS, BY_TIMEOUT };
    static const struct {
        const char *name;
        enum how how;
        int status;
        int publisher; /* broker_deliver's answer */
    } cases[] = {
        {"error piece", BY_ERROR, 0, 200},       {"server error", BY_STATUS, 500, 200},
        {"not found", BY_STATUS, 404, 200},      {"redirect", BY_STATUS, 302, 200},
        {"invalid status", BY_STATUS, 700, 400}, {"timeout", BY_TIMEOUT, 0, 0},
    };
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        int64_t t = f->now; /* no ping falls due within a wake timeout */
        struct broker_call_req rq = req("llm-a", SID_A);
        rq.hibernating = true;
        struct fake_ep e1, e2;
        struct broker_call *c1 = start(f, &e1, rq);
        struct broker_call *c2 = start(f, &e2, rq);
        char *text = pub_read(f, &p, BROKER_PARKED);
        assert_int_equal(count(text, "event: task\n"), 1);
        char wid[BROKER_ID_LEN];
        task_id_of(text, 0, wid);

        struct broker_outcome out = {.woke = "stale"};
        if (cases[i].how == BY_ERROR) {
            struct broker_piece pc = {.kind = PIECE_ERROR, .data = "no gpu", .len = 6};
            assert_int_equal(deliver(f, &p, wid, &pc, &out), 200);
        } else if (cases[i].how == BY_STATUS) {
            struct broker_piece pc = {.kind = PIECE_FINAL, .status = cases[i].status};
            assert_int_equal(deliver(f, &p, wid, &pc, &out), cases[i].publisher);
        } else {
            assert_int_equal(broker_tick(f->b, t + 9999), t + 10000);
            assert_int_equal(e1.wakes, 0);
            broker_tick(f->b, t + 10000);
            out.woke[0] = '\0';
        }
        assert_string_equal(out.woke, "");
        assert_int_equal(e1.wakes, 1);
        assert_int_equal(e2.wakes, 1);
        if (cases[i].how == BY_TIMEOUT)
            expect_wake_end(BROKER_WAKE_TIMEOUT, 10000);
        else
            expect_wake_end(BROKER_WAKE_ERROR, 0);
        struct broker_error err1 = failure(f, c1, 503);
        struct broker_error err2 = failure(f, c2, 503);
        assert_true(err1.retry_after > 0);
        assert_true(err2.retry_after > 0);
        assert_no_tasks(f);

        text = pub_read(f, &p, BROKER_PARKED);
        if (cases[i].how == BY_TIMEOUT) {
            char want[128];
            snprintf(want, sizeof want, "event: cancel\ndata: {\"taskId\":\"%s\"}\n\n", wid);
            assert_string_equal(text, want);
        } else {
            assert_string_equal(text, "");
        }
        assert_int_equal(final(f, &p, wid, 200, NULL), 410);
        broker_call_done(f->b, c1);
        broker_call_done(f->b, c2);
        assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    }
    pub_close(f, &p, true);
}

static void test_wake_held_cap(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.hibernating = true;
    struct fake_ep e1, e2;
    struct broker_call *c1 = start(f, &e1, rq);
    struct broker_call *c2 = start(f, &e2, rq);
    struct broker_error err = refused(f, rq, 503);
    assert_true(err.retry_after > 0);
    assert_non_null(strstr(err.msg, "cap"));
    assert_int_equal(count(pub_read(f, &p, BROKER_PARKED), "event: task\n"), 1);

    /* a held caller that leaves makes room */
    broker_call_done(f->b, c1);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), ""); /* the wake goes on */
    struct fake_ep e3;
    struct broker_call *c3 = start(f, &e3, rq);
    refused(f, rq, 503);

    /* another Llm has its own wake */
    struct fake_ep e4;
    struct broker_call *c4 = start(
        f, &e4,
        (struct broker_call_req){
            .llm = "llm-b", .session = SID_A, .hibernating = true, .body = "{}", .body_len = 2});
    assert_int_equal(count(pub_read(f, &p, BROKER_PARKED), "\"kind\":\"wake\""), 1);
    struct broker_stats s;
    broker_stats(f->b, &s);
    assert_int_equal(s.wakes, 2);

    broker_call_done(f->b, c2);
    broker_call_done(f->b, c3);
    broker_call_done(f->b, c4);
    /* the wakes' tasks end with the stream */
    assert_int_equal(wakes_seen.n, 0);
    pub_close(f, &p, true);
    assert_no_tasks(f);
    assert_int_equal(wakes_seen.n, 2);
    assert_int_equal(wakes_seen.outcome[0], BROKER_WAKE_GONE);
    assert_int_equal(wakes_seen.outcome[1], BROKER_WAKE_GONE);
}

/* ---- losing a session ---- */

static void test_session_replacement(void **state)
{
    struct fx *f = *state;
    struct pub old, cur;
    pub_open(f, &old, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ce, he;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &old, &ce, req("llm-a", SID_A), id);
    struct broker_call_req rq = req("llm-b", SID_A);
    rq.hibernating = true;
    struct broker_call *held = start(f, &he, rq); /* its wake frame stays unread */
    assert_int_equal(old.ep.wakes, 2);

    pub_open(f, &cur, SID_A, OWNER, HASH_1, 0);
    assert_true(broker_session_live(f->b, SID_A));
    assert_int_equal(ce.wakes, 1);
    assert_int_equal(he.wakes, 1);
    struct broker_error e = failure(f, c, 502);
    assert_string_equal(e.code, "publisher_error");
    e = failure(f, held, 503);
    assert_true(e.retry_after > 0);
    assert_no_tasks(f);
    expect_wake_end(BROKER_WAKE_GONE, 0);

    /* the old stream drains what it had, then ends */
    char *text = pub_read(f, &old, BROKER_END);
    assert_non_null(strstr(text, "\"kind\":\"wake\""));
    assert_int_equal(broker_stream_read(f->b, old.st, text, 16), BROKER_END);
    assert_int_equal(final(f, &cur, id, 200, "{}"), 410);

    /* closing the replaced stream leaves the session alone */
    pub_close(f, &old, false);
    assert_true(broker_session_live(f->b, SID_A));
    struct fake_ep ce2;
    struct broker_call *c2 = start_task(f, &cur, &ce2, req("llm-a", SID_A), id);
    assert_int_equal(ce2.wakes, 0);
    broker_call_done(f->b, c);
    broker_call_done(f->b, held);
    broker_call_done(f->b, c2);
    pub_close(f, &cur, true);
    assert_false(broker_session_live(f->b, SID_A));
}

/* Closing the current stream fails its tasks too. */
static void test_stream_closed_fails_tasks(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);
    pub_close(f, &p, true);
    assert_int_equal(ce.wakes, 1);
    failure(f, c, 502);
    broker_call_done(f->b, c);
    assert_no_tasks(f);
    refused(f, req("llm-a", SID_A), 503);
}

static void test_revoke(void **state)
{
    struct fx *f = *state;
    struct pub p[3];
    const char *sids[] = {SID_A, SID_B, SID_C};
    const char *hashes[] = {HASH_1, HASH_1, HASH_2};
    struct fake_ep ce[3];
    struct broker_call *c[3];
    char id[3][BROKER_ID_LEN];
    for (int i = 0; i < 3; i++) {
        pub_open(f, &p[i], sids[i], OWNER, hashes[i], 0);
        c[i] = start_task(f, &p[i], &ce[i], req("llm-a", sids[i]), id[i]);
    }
    assert_int_equal(broker_revoke(f->b, "3333"), 0);
    assert_int_equal(broker_revoke(f->b, HASH_1), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ce[i].wakes, 1);
        failure(f, c[i], 502);
        assert_int_equal(p[i].ep.wakes, 2);
        assert_string_equal(pub_read(f, &p[i], BROKER_END), "");
        assert_false(broker_session_live(f->b, sids[i]));
        assert_int_equal(final(f, &p[i], id[i], 200, "{}"), 410);
    }
    /* the other token's stream and task are untouched */
    assert_int_equal(ce[2].wakes, 0);
    assert_int_equal(p[2].ep.wakes, 1);
    assert_true(broker_session_live(f->b, SID_C));
    assert_string_equal(pub_read(f, &p[2], BROKER_PARKED), "");
    assert_int_equal(broker_revoke(f->b, HASH_1), 0); /* already ended */

    assert_int_equal(final(f, &p[2], id[2], 200, "{}"), 200);
    struct broker_head h;
    struct broker_error err;
    assert_int_equal(broker_call_head(f->b, c[2], &h, &err), 1);
    free(h.body);
    free(h.headers);
    for (int i = 0; i < 3; i++) {
        broker_call_done(f->b, c[i]);
        pub_close(f, &p[i], true); /* revoked streams still deactivate */
    }
    assert_no_tasks(f);
}

static void test_session_expire(void **state)
{
    struct fx *f = *state;
    struct pub p, other;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    pub_open(f, &other, SID_B, OWNER, HASH_1, 0);
    struct fake_ep ce, he, oe;
    char id[BROKER_ID_LEN], oid[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);
    struct broker_call_req rq = req("llm-z", SID_A);
    rq.hibernating = true;
    struct broker_call *held = start(f, &he, rq);
    pub_read(f, &p, BROKER_PARKED);
    struct broker_call *oc = start_task(f, &other, &oe, req("llm-b", SID_B), oid);

    broker_session_expire(f->b, SID_A, "heartbeats stopped");
    assert_int_equal(ce.wakes, 1);
    struct broker_error e = failure(f, c, 502);
    assert_non_null(strstr(e.msg, "heartbeats stopped"));
    assert_int_equal(he.wakes, 1);
    failure(f, held, 503);
    assert_false(broker_session_live(f->b, SID_A));
    assert_string_equal(pub_read(f, &p, BROKER_END), "");
    assert_int_equal(final(f, &p, id, 200, "{}"), 410);
    /* another session is untouched */
    assert_int_equal(oe.wakes, 0);
    assert_true(broker_session_live(f->b, SID_B));
    broker_session_expire(f->b, "99999999999999999999999999999999", "none");

    broker_call_done(f->b, c);
    broker_call_done(f->b, held);
    broker_call_done(f->b, oc);
    pub_close(f, &p, true);
    pub_close(f, &other, true);
    assert_no_tasks(f);
}

static void test_results_stream(void **state)
{
    struct fx *f = *state;
    uint64_t serial = 0, newer = 0;
    /* no such session, another owner's, no stream bound */
    assert_int_equal(broker_results_open(f->b, SID_A, OWNER, &serial), 404);
    assert_int_equal(broker_session_registered(f->b, SID_A, OWNER, 0, f->now), 0);
    assert_int_equal(broker_results_open(f->b, SID_A, "someone-else", &serial), 404);
    assert_int_equal(broker_results_open(f->b, SID_A, OWNER, &serial), 409);

    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    assert_int_equal(broker_results_open(f->b, SID_A, OWNER, &serial), 200);
    struct fake_ep ce;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ce, req("llm-a", SID_A), id);

    /* a cut of a stream the session no longer has changes nothing */
    broker_results_cut(f->b, SID_A, serial + 1, "stale");
    assert_true(broker_session_live(f->b, SID_A));
    assert_int_equal(ce.wakes, 0);

    /* the stream's own cut ends its control stream and fails its tasks */
    broker_results_cut(f->b, SID_A, serial, "the result stream broke off");
    assert_int_equal(ce.wakes, 1);
    struct broker_error e = failure(f, c, 502);
    assert_non_null(strstr(e.msg, "result stream"));
    assert_false(broker_session_live(f->b, SID_A));
    assert_string_equal(pub_read(f, &p, BROKER_END), "");
    broker_call_done(f->b, c);
    pub_close(f, &p, true);

    /* a new control stream gets a new serial, which an old cut cannot touch */
    struct pub q;
    pub_open(f, &q, SID_A, OWNER, HASH_1, 0);
    assert_int_equal(broker_results_open(f->b, SID_A, OWNER, &newer), 200);
    assert_true(newer != serial);
    broker_results_cut(f->b, SID_A, serial, "late");
    assert_true(broker_session_live(f->b, SID_A));
    pub_close(f, &q, true);
    assert_no_tasks(f);

    /* result streams off: not offered in hello, and refused */
    struct broker_config off = base_cfg;
    off.result_stream = false;
    broker_free(f->b);
    f->b = broker_new(&off);
    assert_non_null(f->b);
    struct fake_ep ep;
    fake_init(&ep);
    assert_int_equal(broker_session_registered(f->b, SID_A, OWNER, 0, f->now), 0);
    struct broker_stream *st = broker_stream_open(f->b, SID_A, OWNER, HASH_1, &ep.ep, f->now);
    assert_non_null(st);
    char text[1024];
    assert_int_equal(slurp(f->b, st, text, sizeof text), BROKER_PARKED);
    assert_non_null(strstr(text, "\"features\":[]}"));
    assert_int_equal(broker_results_open(f->b, SID_A, OWNER, &serial), 404);
    char sid[BROKER_ID_LEN];
    assert_true(broker_stream_closed(f->b, st, sid));
}

/* ---- features and caps ---- */

static void test_paths_feature(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *name;
        unsigned features;
        const char *path;
        int refused; /* 0: the task goes out */
    } cases[] = {
        {"chat without features", 0, NULL, 0},
        {"path without features", 0, "/v1/embeddings", 400},
        {"path with streamed-results only", BROKER_FEAT_STREAMED, "/v1/embeddings", 400},
        {"path with paths", BROKER_FEAT_PATHS, "/v1/embeddings", 0},
        {"path with both", BROKER_FEAT_PATHS | BROKER_FEAT_STREAMED, "/v1/audio/speech", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct pub p;
        pub_open(f, &p, SID_A, OWNER, HASH_1, cases[i].features);
        struct broker_call_req rq = req("llm-a", SID_A);
        rq.path = cases[i].path;
        if (cases[i].refused) {
            struct broker_error e = refused(f, rq, cases[i].refused);
            assert_string_equal(e.code, "unsupported_route");
            assert_non_null(strstr(e.msg, "\"paths\""));
            assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
        } else {
            struct fake_ep ce;
            struct broker_call *c = start(f, &ce, rq);
            json_t *o = frame_data(pub_read(f, &p, BROKER_PARKED), "task", 0);
            json_t *path = json_object_get(o, "path");
            if (cases[i].path)
                assert_string_equal(json_string_value(path), cases[i].path);
            else
                assert_null(path);
            json_decref(o);
            broker_call_done(f->b, c);
        }
        pub_close(f, &p, true);
    }
    assert_no_tasks(f);
}

/* A hibernating Llm is woken first; the feature is checked when its task
 * would go out. */
static void test_paths_feature_after_wake(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.hibernating = true;
    rq.path = "/v1/embeddings";
    struct fake_ep ce;
    struct broker_call *c = start(f, &ce, rq);
    char wid[BROKER_ID_LEN];
    task_id_of(pub_read(f, &p, BROKER_PARKED), 0, wid);
    assert_int_equal(final(f, &p, wid, 200, NULL), 200);
    assert_int_equal(ce.wakes, 1);
    struct broker_error e = failure(f, c, 400);
    assert_string_equal(e.code, "unsupported_route");
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
    assert_no_tasks(f);
}

static void test_unavailable_and_busy(void **state)
{
    struct fx *f = *state;
    struct broker_error e = refused(f, req("llm-a", SID_C), 503); /* no such session */
    assert_string_equal(e.code, "publisher_unavailable");
    assert_true(e.retry_after > 0);
    assert_int_equal(broker_session_registered(f->b, SID_B, OWNER, 0, f->now), 0);
    e = refused(f, req("llm-a", SID_B), 503); /* registered, no stream */
    assert_true(e.retry_after > 0);
    struct broker_call_req rq = req("llm-a", SID_B);
    rq.hibernating = true;
    refused(f, rq, 503);

    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ce[4];
    struct broker_call *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = start(f, &ce[i], req("llm-a", SID_A));
    e = refused(f, req("llm-a", SID_A), 503);
    assert_string_equal(e.code, "publisher_busy");
    assert_int_equal(e.retry_after, 1);
    broker_call_done(f->b, c[0]); /* a task ends: room again */
    struct fake_ep ce5;
    struct broker_call *c5 = start(f, &ce5, req("llm-a", SID_A));
    assert_int_equal(count(pub_read(f, &p, BROKER_PARKED), "event: task\n"), 5);
    for (int i = 1; i < 4; i++)
        broker_call_done(f->b, c[i]);
    broker_call_done(f->b, c5);
    pub_close(f, &p, true);
    assert_no_tasks(f);
}

static void test_frame_too_large(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    char *body = malloc(base_cfg.max_frame + 1);
    memset(body, ' ', base_cfg.max_frame);
    body[0] = '{';
    body[base_cfg.max_frame - 1] = '}';
    body[base_cfg.max_frame] = '\0';
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.body = body;
    rq.body_len = base_cfg.max_frame;
    refused(f, rq, 503);
    free(body);
    assert_string_equal(pub_read(f, &p, BROKER_PARKED), "");
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

/* ---- endpoints that cannot keep up or wait ---- */

static void test_stream_backpressure(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    static char frame[4001];
    memset(frame, 'x', 4000);
    assert_int_equal(broker_dispatch(f->b, SID_A, frame, 4000), 0);
    assert_int_equal(broker_dispatch(f->b, SID_A, frame, 4000), 0);
    assert_int_equal(p.ep.wakes, 1);
    /* 8000 bytes wait; 300 more pass the 8192 cap */
    assert_int_equal(broker_dispatch(f->b, SID_A, frame, 300), -1);
    char out[64];
    assert_int_equal(broker_stream_read(f->b, p.st, out, sizeof out), BROKER_OVERFLOW);
    assert_int_equal(broker_stream_read(f->b, p.st, out, sizeof out), BROKER_OVERFLOW);
    assert_int_equal(broker_dispatch(f->b, SID_A, "x", 1), -1);
    struct broker_error e = refused(f, req("llm-a", SID_A), 503);
    assert_true(e.retry_after > 0);
    assert_no_tasks(f);
    pub_close(f, &p, true);
}

/* Reading as fast as it comes keeps a stream under the cap. */
static void test_stream_keeping_up(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    static char frame[4001];
    memset(frame, 'x', 4000);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(broker_dispatch(f->b, SID_A, frame, 4000), 0);
        assert_int_equal(strlen(pub_read(f, &p, BROKER_PARKED)), 4000);
    }
    pub_close(f, &p, true);
}

static void test_park_refused(void **state)
{
    struct fx *f = *state;
    struct fake_ep ep;
    fake_init(&ep);
    ep.refuse = true;
    assert_int_equal(broker_session_registered(f->b, SID_A, OWNER, 0, f->now), 0);
    struct broker_stream *st = broker_stream_open(f->b, SID_A, OWNER, HASH_1, &ep.ep, f->now);
    char text[1024];
    assert_int_equal(slurp(f->b, st, text, sizeof text), BROKER_GONE);
    assert_non_null(strstr(text, "event: hello"));
    assert_int_equal(ep.parks, 1);
    assert_int_equal(broker_stream_read(f->b, st, text, sizeof text), BROKER_GONE);

    /* a caller that cannot wait */
    struct pub p = {.st = st, .sid = SID_A, .owner = OWNER};
    struct fake_ep ce;
    fake_init(&ce);
    ce.refuse = true;
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct broker_error err = {0};
    struct broker_call *c = broker_call_start(f->b, &rq, &ce.ep, f->now, &err);
    assert_non_null(c);
    assert_int_equal(ep.wakes, 0); /* never parked, never woken */
    char id[BROKER_ID_LEN];
    assert_true(slurp(f->b, st, text, sizeof text) == BROKER_GONE);
    task_id_of(text, 0, id);
    struct broker_head h;
    assert_int_equal(broker_call_head(f->b, c, &h, &err), BROKER_GONE);
    assert_int_equal(chunk(f, &p, id, "x", false), 200);
    assert_int_equal(ce.wakes, 0);
    sse_head(f, c);
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_GONE);
    assert_string_equal(text, "data: x\n\n");
    broker_call_done(f->b, c);
    char sid[BROKER_ID_LEN];
    assert_true(broker_stream_closed(f->b, st, sid));
}

/* ---- shutdown ---- */

static void test_shutdown(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep we, se, he;
    char wid[BROKER_ID_LEN], sid_[BROKER_ID_LEN];
    struct broker_call *waiting = start_task(f, &p, &we, req("llm-a", SID_A), wid);
    struct broker_call_req rq = req("llm-a", SID_A);
    rq.streaming = true;
    struct broker_call *streaming = start_task(f, &p, &se, rq, sid_);
    assert_int_equal(chunk(f, &p, sid_, "x", false), 200);
    sse_head(f, streaming);
    rq = req("llm-b", SID_A);
    rq.hibernating = true;
    struct broker_call *held = start(f, &he, rq);
    pub_read(f, &p, BROKER_PARKED);

    f->now += 40;
    broker_tick(f->b, f->now);
    broker_shutdown(f->b);
    expect_wake_end(BROKER_WAKE_SHUTDOWN, 40);
    assert_int_equal(we.wakes, 1);
    assert_int_equal(he.wakes, 1);
    struct broker_error e = failure(f, waiting, 503);
    assert_true(e.retry_after > 0);
    e = failure(f, held, 503);
    assert_true(e.retry_after > 0);
    char text[4096];
    assert_int_equal(call_slurp(f->b, streaming, text, sizeof text), BROKER_END);
    expect_error_event(text, "server_error", "publisher_unavailable");
    assert_string_equal(pub_read(f, &p, BROKER_END), "");
    assert_no_tasks(f);

    /* nothing new starts */
    refused(f, req("llm-a", SID_A), 503);
    struct fake_ep ep2;
    fake_init(&ep2);
    assert_null(broker_stream_open(f->b, SID_B, OWNER, HASH_1, &ep2.ep, f->now));

    broker_call_done(f->b, waiting);
    broker_call_done(f->b, streaming);
    broker_call_done(f->b, held);
    pub_close(f, &p, true);
}

/* ---- pools ---- */

#define POOL "qwen"
#define GEN 7

/* Restarts the broker with another in-flight cap (before any stream). */
static void set_max_inflight(struct fx *f, int max_inflight)
{
    struct broker_config cfg = base_cfg;
    cfg.max_inflight = max_inflight;
    broker_free(f->b);
    f->b = broker_new(&cfg);
    assert_non_null(f->b);
}

/* Members qwen-a, qwen-b, qwen-c on SID_A, SID_B, SID_C, the first n of
 * them; asleep is a bit mask of the hibernating ones. */
static void pool_of(struct fx *f, uint64_t gen, size_t n, unsigned asleep)
{
    static const char *const llms[] = {"qwen-a", "qwen-b", "qwen-c"};
    static const char *const sids[] = {SID_A, SID_B, SID_C};
    struct broker_member m[3];
    for (size_t i = 0; i < n; i++)
        m[i] = (struct broker_member){
            .llm = llms[i], .session = sids[i], .hibernating = (asleep >> i) & 1};
    assert_int_equal(broker_pool_set(f->b, POOL, gen, m, n), 0);
}

static struct broker_call_req pool_req(void)
{
    return (struct broker_call_req){
        .llm = POOL, .pool = POOL, .pool_gen = GEN, .body = BODY, .body_len = strlen(BODY)};
}

/* Which of n publishers got the one task frame sent since the last reads:
 * its index, with the task's id and llmName. */
static int task_went_to(struct fx *f, struct pub *p, int n, char id[BROKER_ID_LEN],
                        char llm[BROKER_NAME_MAX])
{
    int at = -1;
    for (int i = 0; i < n; i++) {
        char *text = pub_read(f, &p[i], BROKER_PARKED);
        int k = count(text, "event: task\n");
        if (k == 0)
            continue;
        assert_int_equal(k, 1);
        assert_int_equal(at, -1);
        at = i;
        task_id_of(text, 0, id);
        json_t *o = frame_data(text, "task", 0);
        snprintf(llm, BROKER_NAME_MAX, "%s", json_string_value(json_object_get(o, "llmName")));
        json_decref(o);
    }
    assert_true(at >= 0);
    return at;
}

/* Takes a call's complete 200 answer. */
static void answered(struct fx *f, struct broker_call *c)
{
    struct broker_head h;
    struct broker_error err;
    assert_int_equal(broker_call_head(f->b, c, &h, &err), 1);
    assert_int_equal(h.status, 200);
    free(h.body);
    free(h.headers);
}

struct counts {
    uint64_t requests[3], failovers[3];
    int members;
};

static void count_member(void *ud, const struct broker_member_stats *m)
{
    struct counts *c = ud;
    assert_string_equal(m->pool, POOL);
    int i = m->llm[5] - 'a';
    c->requests[i] = m->requests;
    c->failovers[i] = m->failovers;
    c->members++;
}

static struct counts pool_counts(struct fx *f)
{
    struct counts c = {0};
    broker_pool_stats(f->b, count_member, &c);
    return c;
}

/* Opens n (up to 3) publishers of OWNER on SID_A, SID_B and SID_C, with
 * features[i] (NULL: none). */
static void pubs_open(struct fx *f, struct pub *p, int n, const unsigned *features)
{
    static const char *const sids[] = {SID_A, SID_B, SID_C};
    for (int i = 0; i < n; i++)
        pub_open(f, &p[i], sids[i], OWNER, HASH_1, features ? features[i] : 0);
}

/* Ends n calls and closes np publishers; nothing may be left in flight. */
static void pool_done(struct fx *f, struct broker_call **c, int n, struct pub *p, int np)
{
    for (int i = 0; i < n; i++)
        broker_call_done(f->b, c[i]);
    for (int i = 0; i < np; i++)
        pub_close(f, &p[i], true);
    assert_no_tasks(f);
}

/* The broker asks for the pool until it has a record at the call's
 * generation or newer. */
static void test_pool_record_generation(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ep;
    fake_init(&ep);
    struct broker_error err = {.status = -1};
    struct broker_call_req rq = pool_req();
    assert_null(broker_call_start(f->b, &rq, &ep.ep, f->now, &err));
    assert_int_equal(err.status, 0); /* never heard of it */
    pool_of(f, GEN - 1, 1, 0);
    err.status = -1;
    assert_null(broker_call_start(f->b, &rq, &ep.ep, f->now, &err));
    assert_int_equal(err.status, 0); /* older than the route */
    assert_int_equal(ep.parks, 0);
    pool_of(f, GEN, 1, 0);
    struct broker_call *c = start(f, &ep, rq);
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    assert_int_equal(task_went_to(f, &p, 1, id, llm), 0);
    assert_string_equal(llm, "qwen-a");
    /* an older record than the one held changes nothing */
    struct broker_member none[1];
    assert_int_equal(broker_pool_set(f->b, POOL, GEN - 2, none, 0), 0);
    struct fake_ep ep2;
    struct broker_call *c2 = start(f, &ep2, rq);
    assert_int_equal(task_went_to(f, &p, 1, id, llm), 0);
    broker_call_done(f->b, c);
    broker_call_done(f->b, c2);
    pub_close(f, &p, true);
}

/* The member with the fewest tasks in flight takes the call; among equals
 * the pool's cursor decides. */
static void test_pool_least_inflight(void **state)
{
    struct fx *f = *state;
    set_max_inflight(f, 16);
    struct pub p[3];
    pubs_open(f, p, 2, NULL);
    pub_open(f, &p[2], SID_C, "bob", HASH_2, 0); /* members may have several owners */
    pool_of(f, GEN, 3, 0);
    /* A has two tasks in flight (of another Llm on the same publisher), B one */
    struct fake_ep se[3];
    struct broker_call *single[3] = {
        start(f, &se[0], req("other-a", SID_A)),
        start(f, &se[1], req("other-a", SID_A)),
        start(f, &se[2], req("other-b", SID_B)),
    };
    pub_read(f, &p[0], BROKER_PARKED);
    pub_read(f, &p[1], BROKER_PARKED);
    static const int want[] = {2, 1, 2, 0, 1, 2};
    struct fake_ep ce[6];
    struct broker_call *c[6];
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    for (int i = 0; i < 6; i++) {
        print_message("call %d\n", i);
        c[i] = start(f, &ce[i], pool_req());
        assert_int_equal(task_went_to(f, p, 3, id, llm), want[i]);
        char name[16];
        snprintf(name, sizeof name, "qwen-%c", 'a' + want[i]);
        assert_string_equal(llm, name);
    }
    struct counts n = pool_counts(f);
    assert_int_equal(n.members, 3);
    assert_int_equal(n.requests[0], 1);
    assert_int_equal(n.requests[1], 2);
    assert_int_equal(n.requests[2], 3);
    for (int i = 0; i < 6; i++)
        broker_call_done(f->b, c[i]);
    pool_done(f, single, 3, p, 3);
}

/* Calls answered one by one go round the members exactly; a burst that is
 * not answered spreads evenly; a member that frees up takes the next ones. */
static void test_pool_even_spread(void **state)
{
    struct fx *f = *state;
    set_max_inflight(f, 64);
    struct pub p[3];
    pubs_open(f, p, 3, NULL);
    pool_of(f, GEN, 3, 0);
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    int served[3] = {0};
    for (int i = 0; i < 99; i++) {
        struct fake_ep ce;
        struct broker_call *c = start(f, &ce, pool_req());
        int at = task_went_to(f, p, 3, id, llm);
        served[at]++;
        assert_int_equal(final(f, &p[at], id, 200, "{}"), 200);
        answered(f, c);
        broker_call_done(f->b, c);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(served[i], 33);

    /* a burst of 90 that nobody answers yet: 30 each */
    struct fake_ep ce[120];
    struct broker_call *c[120];
    char ids[120][BROKER_ID_LEN];
    int where[120];
    memset(served, 0, sizeof served);
    for (int i = 0; i < 90; i++) {
        c[i] = start(f, &ce[i], pool_req());
        where[i] = task_went_to(f, p, 3, ids[i], llm);
        served[where[i]]++;
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(served[i], 30);
    /* B answers all of its calls: the next 30 all go to B */
    for (int i = 0; i < 90; i++) {
        if (where[i] != 1)
            continue;
        assert_int_equal(final(f, &p[1], ids[i], 200, "{}"), 200);
        answered(f, c[i]);
    }
    for (int i = 90; i < 120; i++) {
        c[i] = start(f, &ce[i], pool_req());
        assert_int_equal(task_went_to(f, p, 3, ids[i], llm), 1);
    }
    pool_done(f, c, 120, p, 3);
}

/* Members at --max-inflight are skipped; when all active ones are, the
 * caller gets 503 busy, and no hibernating member is woken for it. */
static void test_pool_max_inflight(void **state)
{
    struct fx *f = *state; /* max_inflight 4 */
    struct pub p[3];
    pubs_open(f, p, 3, NULL);
    pool_of(f, GEN, 3, 1u << 2); /* C sleeps */
    struct fake_ep ce[8];
    struct broker_call *c[8];
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    for (int i = 0; i < 4; i++)
        c[i] = start(f, &ce[i], req("other-a", SID_A)); /* A is full */
    pub_read(f, &p[0], BROKER_PARKED);
    for (int i = 4; i < 8; i++) {
        c[i] = start(f, &ce[i], pool_req());
        assert_int_equal(task_went_to(f, p, 3, id, llm), 1);
    }
    struct broker_error e = refused(f, pool_req(), 503);
    assert_string_equal(e.code, "publisher_busy");
    assert_int_equal(e.retry_after, 1);
    assert_string_equal(pub_read(f, &p[2], BROKER_PARKED), ""); /* no wake */
    broker_call_done(f->b, c[0]);                               /* room on A */
    struct fake_ep ce9;
    struct broker_call *c9 = start(f, &ce9, pool_req());
    assert_int_equal(task_went_to(f, p, 3, id, llm), 0);
    broker_call_done(f->b, c9);
    pool_done(f, c + 1, 7, p, 3);
}

/* A hibernating member is woken only when no member is active, and only
 * one at a time per pool; the held callers then go to it. A member whose
 * publisher is not connected is never chosen. */
static void test_pool_hibernating_last_resort(void **state)
{
    struct fx *f = *state;
    struct pub p[2];
    pubs_open(f, p, 2, NULL);
    pool_of(f, GEN, 3, 1u << 0 | 1u << 1); /* A and B sleep; C has no stream */

    struct fake_ep e1, e2, e3;
    struct broker_call *c1 = start(f, &e1, pool_req());
    struct broker_call *c2 = start(f, &e2, pool_req());
    char *text = pub_read(f, &p[0], BROKER_PARKED);
    assert_int_equal(count(text, "event: task\n"), 1);
    assert_int_equal(count(text, "\"kind\":\"wake\""), 1);
    assert_non_null(strstr(text, "\"llmName\":\"qwen-a\""));
    char wid[BROKER_ID_LEN];
    task_id_of(text, 0, wid);
    assert_string_equal(pub_read(f, &p[1], BROKER_PARKED), ""); /* one wake per pool */
    struct broker_stats s;
    broker_stats(f->b, &s);
    assert_int_equal(s.wakes, 1);
    assert_int_equal(s.tasks, 1);
    struct broker_head h;
    struct broker_error err;
    assert_int_equal(broker_call_head(f->b, c1, &h, &err), 0); /* held */

    struct broker_outcome out;
    struct broker_piece ok = {.kind = PIECE_FINAL, .status = 200, .ctype = "application/json"};
    assert_int_equal(deliver(f, &p[0], wid, &ok, &out), 200);
    assert_string_equal(out.woke, "qwen-a");
    /* both held calls went to the woken member, and the next one too */
    assert_int_equal(count(pub_read(f, &p[0], BROKER_PARKED), "\"kind\":\"infer\""), 2);
    struct broker_call *c3 = start(f, &e3, pool_req());
    assert_int_equal(count(pub_read(f, &p[0], BROKER_PARKED), "\"kind\":\"infer\""), 1);
    assert_string_equal(pub_read(f, &p[1], BROKER_PARKED), "");
    broker_call_done(f->b, c1);
    broker_call_done(f->b, c2);
    broker_call_done(f->b, c3);
    for (int i = 0; i < 2; i++)
        pub_close(f, &p[i], true);
    struct broker_error e = refused(f, pool_req(), 503); /* only C is left, unconnected */
    assert_string_equal(e.code, "publisher_unavailable");
    assert_no_tasks(f);
}

/* A failed pool wake answers its held callers 503; the next call wakes
 * again. */
static void test_pool_wake_failure(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    pool_of(f, GEN, 1, 1u << 0);
    struct fake_ep e1;
    struct broker_call *c1 = start(f, &e1, pool_req());
    char wid[BROKER_ID_LEN];
    task_id_of(pub_read(f, &p, BROKER_PARKED), 0, wid);
    struct broker_piece bad = {.kind = PIECE_ERROR, .data = "recipe failed", .len = 13};
    assert_int_equal(deliver(f, &p, wid, &bad, NULL), 200);
    struct broker_error e = failure(f, c1, 503);
    assert_true(e.retry_after > 0);
    broker_call_done(f->b, c1);
    c1 = start(f, &e1, pool_req());
    assert_int_equal(count(pub_read(f, &p, BROKER_PARKED), "\"kind\":\"wake\""), 1);
    pool_done(f, &c1, 1, &p, 1);
}

/* An active member takes the call even when it is busier than a sleeping
 * one is idle. */
static void test_pool_active_before_asleep(void **state)
{
    struct fx *f = *state;
    struct pub p[2];
    pubs_open(f, p, 2, NULL);
    pool_of(f, GEN, 2, 1u << 0); /* A sleeps */
    struct fake_ep ce[3];
    struct broker_call *c[3];
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    for (int i = 0; i < 3; i++) {
        c[i] = start(f, &ce[i], pool_req());
        assert_int_equal(task_went_to(f, p, 2, id, llm), 1);
    }
    pool_done(f, c, 3, p, 2);
}

/* Calls that need a feature skip members whose publisher lacks it; when
 * no connected member has it, the caller is told which. */
static void test_pool_features(void **state)
{
    struct fx *f = *state;
    set_max_inflight(f, 16);
    struct pub p[3];
    static const unsigned features[] = {0, BROKER_FEAT_PATHS,
                                        BROKER_FEAT_PATHS | BROKER_FEAT_STREAMED};
    pubs_open(f, p, 3, features);
    pool_of(f, GEN, 3, 0);
    static const struct {
        const char *name;
        const char *path;
        unsigned needs;
        unsigned may; /* bit mask of the members that may take it */
    } cases[] = {
        {"chat", NULL, 0, 7},
        {"a path", "/embeddings", 0, 6},
        {"named events", "/responses", BROKER_FEAT_STREAMED, 4},
    };
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct broker_call_req rq = pool_req();
        rq.path = cases[i].path;
        rq.needs = cases[i].needs;
        struct fake_ep ce[6];
        struct broker_call *c[6];
        for (int k = 0; k < 6; k++) {
            c[k] = start(f, &ce[k], rq);
            int at = task_went_to(f, p, 3, id, llm);
            assert_true((cases[i].may >> at) & 1);
        }
        for (int k = 0; k < 6; k++)
            broker_call_done(f->b, c[k]);
        for (int k = 0; k < 3; k++)
            pub_read(f, &p[k], BROKER_PARKED); /* the cancels */
    }
    /* C goes away: nobody left streams named events */
    pub_close(f, &p[2], true);
    struct broker_call_req rq = pool_req();
    rq.path = "/messages";
    rq.needs = BROKER_FEAT_STREAMED;
    struct broker_error e = refused(f, rq, 400);
    assert_string_equal(e.code, "unsupported_route");
    assert_non_null(strstr(e.msg, "\"streamed-results\""));
    for (int i = 0; i < 2; i++)
        pub_close(f, &p[i], true);
    e = refused(f, pool_req(), 503); /* nobody connected */
    assert_string_equal(e.code, "publisher_unavailable");
    assert_true(e.retry_after > 0);
    assert_no_tasks(f);
}

/* Failures on the publisher's side before the caller's first byte send
 * the task to another member, once, with the caller's body; after the
 * first byte, or for the backend's own answers, never. */
static void test_pool_failover(void **state)
{
    struct fx *f = *state;
    enum how { BY_ERROR, BY_BAD_STATUS, BY_STREAM_CLOSE, BY_CUT_BEFORE_ANY };
    static const struct {
        const char *name;
        enum how how;
    } cases[] = {
        {"error post", BY_ERROR},
        {"invalid status", BY_BAD_STATUS},
        {"stream closed", BY_STREAM_CLOSE},
        {"streamed post cut before its first event", BY_CUT_BEFORE_ANY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("case %s\n", cases[i].name);
        struct pub p[2];
        static const unsigned streamed[] = {BROKER_FEAT_STREAMED, BROKER_FEAT_STREAMED};
        pubs_open(f, p, 2, streamed);
        pool_of(f, GEN + i, 2, 0);
        struct counts before = pool_counts(f); /* counts carry over from case to case */
        struct broker_call_req rq = pool_req();
        rq.pool_gen = GEN + i;
        rq.streaming = cases[i].how == BY_CUT_BEFORE_ANY;
        struct fake_ep ce;
        struct broker_call *c = start(f, &ce, rq);
        char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
        int first = task_went_to(f, p, 2, id, llm);
        int second = 1 - first;
        struct broker_piece err = {.kind = PIECE_ERROR, .data = "no backend", .len = 10};
        switch (cases[i].how) {
        case BY_ERROR:
            assert_int_equal(deliver(f, &p[first], id, &err, NULL), 200);
            break;
        case BY_BAD_STATUS:
            assert_int_equal(final(f, &p[first], id, 99, "{}"), 400);
            break;
        case BY_STREAM_CLOSE:
            pub_close(f, &p[first], true);
            break;
        case BY_CUT_BEFORE_ANY:
            assert_int_equal(events(f, &p[first], id, PIECE_EVENTS, ""), 200); /* the post began */
            assert_int_equal(events(f, &p[first], id, PIECE_EVENTS_CUT, NULL), 200);
            break;
        }
        assert_int_equal(ce.wakes, 0); /* the caller noticed nothing */
        char id2[BROKER_ID_LEN];
        char *text = pub_read(f, &p[second], BROKER_PARKED);
        assert_int_equal(count(text, "event: task\n"), 1);
        task_id_of(text, 0, id2);
        assert_non_null(strstr(text, ",\"body\":" BODY "}\n\n")); /* the same body */
        struct counts n = pool_counts(f);
        assert_int_equal(n.failovers[first] - before.failovers[first], 1);
        assert_int_equal(n.failovers[second], before.failovers[second]);
        /* the second member fails too: no third try, the caller gets 502 */
        assert_int_equal(deliver(f, &p[second], id2, &err, NULL), 200);
        assert_int_equal(ce.wakes, 1);
        failure(f, c, 502);
        broker_call_done(f->b, c);
        if (cases[i].how != BY_STREAM_CLOSE)
            pub_close(f, &p[first], true);
        pub_close(f, &p[second], true);
        assert_no_tasks(f);
    }
}

/* A failover that finds its second member's answer good; the first byte
 * ends all failover; a backend's own answers (4xx and 5xx) are answers. */
static void test_pool_failover_limits(void **state)
{
    struct fx *f = *state;
    struct pub p[2];
    pubs_open(f, p, 2, NULL);
    pool_of(f, GEN, 2, 0);
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    struct broker_piece err = {.kind = PIECE_ERROR, .data = "no backend", .len = 10};

    /* failed on one, answered by the other */
    struct fake_ep ce;
    struct broker_call *c = start(f, &ce, pool_req());
    int first = task_went_to(f, p, 2, id, llm);
    assert_int_equal(deliver(f, &p[first], id, &err, NULL), 200);
    assert_int_equal(task_went_to(f, p, 2, id, llm), 1 - first);
    assert_int_equal(final(f, &p[1 - first], id, 200, "{\"ok\":1}"), 200);
    answered(f, c);
    broker_call_done(f->b, c);

    /* the backend's own 5xx and 4xx reach the caller as they are */
    static const int statuses[] = {503, 500, 429, 400};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        c = start(f, &ce, pool_req());
        int at = task_went_to(f, p, 2, id, llm);
        assert_int_equal(final(f, &p[at], id, statuses[i], "{\"error\":\"x\"}"), 200);
        struct broker_head h;
        struct broker_error e;
        assert_int_equal(broker_call_head(f->b, c, &h, &e), 1);
        assert_int_equal(h.status, statuses[i]);
        free(h.body);
        free(h.headers);
        broker_call_done(f->b, c);
        for (int k = 0; k < 2; k++)
            assert_string_equal(pub_read(f, &p[k], BROKER_PARKED), "");
    }

    /* after the first chunk, a closed stream ends the caller's stream */
    struct broker_call_req rq = pool_req();
    rq.streaming = true;
    c = start(f, &ce, rq);
    int at = task_went_to(f, p, 2, id, llm);
    assert_int_equal(chunk(f, &p[at], id, "{\"t\":1}", false), 200);
    pub_close(f, &p[at], true);
    sse_head(f, c);
    char text[2048];
    assert_int_equal(call_slurp(f->b, c, text, sizeof text), BROKER_END);
    expect_error_event(text, "server_error", "publisher_error");
    assert_string_equal(pub_read(f, &p[1 - at], BROKER_PARKED), "");
    broker_call_done(f->b, c);

    /* a timeout is not retried either */
    struct pub *left = &p[1 - at];
    c = start(f, &ce, pool_req());
    task_went_to(f, left, 1, id, llm);
    f->now += base_cfg.infer_timeout_ms;
    broker_tick(f->b, f->now);
    failure(f, c, 504);
    broker_call_done(f->b, c);
    assert_int_equal(count(pub_read(f, left, BROKER_PARKED), "event: cancel\n"), 1);
    pub_close(f, left, true);
    assert_no_tasks(f);
    assert_int_equal(pool_counts(f).failovers[0] + pool_counts(f).failovers[1], 1);
}

/* A failover with no other member able fails the call with the first error. */
static void test_pool_failover_nowhere(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    pool_of(f, GEN, 1, 0);
    struct fake_ep ce;
    struct broker_call *c = start(f, &ce, pool_req());
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    task_went_to(f, &p, 1, id, llm);
    struct broker_piece err = {.kind = PIECE_ERROR, .data = "no backend", .len = 10};
    assert_int_equal(deliver(f, &p, id, &err, NULL), 200);
    struct broker_error e = failure(f, c, 502);
    assert_non_null(strstr(e.msg, "no backend"));
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
    assert_no_tasks(f);
    assert_int_equal(pool_counts(f).failovers[0], 0);
}

/* A new record of the pool keeps each member's counts and the cursor. */
static void test_pool_membership_change(void **state)
{
    struct fx *f = *state;
    struct pub p[3];
    pubs_open(f, p, 3, NULL);
    pool_of(f, GEN, 2, 0);
    char id[BROKER_ID_LEN], llm[BROKER_NAME_MAX];
    struct fake_ep ce;
    struct broker_call *c = start(f, &ce, pool_req());
    assert_int_equal(task_went_to(f, p, 3, id, llm), 0);
    assert_int_equal(final(f, &p[0], id, 200, "{}"), 200);
    answered(f, c);
    broker_call_done(f->b, c);
    pool_of(f, GEN + 1, 3, 0); /* C joins; the cursor stays after A */
    struct broker_call_req rq = pool_req();
    rq.pool_gen = GEN + 1;
    static const int want[] = {1, 2, 0};
    for (int i = 0; i < 3; i++) {
        c = start(f, &ce, rq);
        assert_int_equal(task_went_to(f, p, 3, id, llm), want[i]);
        assert_int_equal(final(f, &p[want[i]], id, 200, "{}"), 200);
        answered(f, c);
        broker_call_done(f->b, c);
    }
    struct counts n = pool_counts(f);
    assert_int_equal(n.requests[0], 2);
    assert_int_equal(n.requests[1], 1);
    assert_int_equal(n.requests[2], 1);
    pool_done(f, NULL, 0, p, 3);
}

/* ---- the summary of a call, for the usage accounting ---- */

static struct broker_call_summary summary(struct fx *f, struct broker_call *c)
{
    struct broker_call_summary s;
    broker_call_summary(f->b, c, &s);
    return s;
}

static void expect_summary(struct fx *f, struct broker_call *c, const char *llm, int status,
                           int64_t prompt, int64_t completion)
{
    struct broker_call_summary s = summary(f, c);
    assert_string_equal(s.llm, llm);
    assert_int_equal(s.status, status);
    assert_int_equal(s.usage.has_prompt, prompt >= 0);
    assert_int_equal(s.usage.has_completion, completion >= 0);
    if (prompt >= 0)
        assert_int_equal(s.usage.prompt, prompt);
    if (completion >= 0)
        assert_int_equal(s.usage.completion, completion);
}

/* A whole answer: its status and the counts its piece carried. */
static void test_summary_of_an_answer(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, 0);
    struct fake_ep ep;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ep, req("llm-a", SID_A), id);
    expect_summary(f, c, "llm-a", 499, -1, -1); /* nothing answered yet */
    struct broker_piece pc = {
        .kind = PIECE_FINAL,
        .status = 200,
        .ctype = "application/json",
        .data = "{}",
        .len = 2,
        .usage = {.prompt = 5, .completion = 7, .has_prompt = true, .has_completion = true}};
    assert_int_equal(deliver(f, &p, id, &pc, NULL), 200);
    expect_summary(f, c, "llm-a", 200, 5, 7); /* the answer waits to be taken: it was given */
    struct broker_head h;
    struct broker_error err;
    assert_int_equal(broker_call_head(f->b, c, &h, &err), 1);
    free(h.body);
    free(h.headers);
    expect_summary(f, c, "llm-a", 200, 5, 7);
    broker_call_done(f->b, c);

    /* A backend's refusal is the caller's status, and an error. */
    c = start_task(f, &p, &ep, req("llm-a", SID_A), id);
    assert_int_equal(final(f, &p, id, 429, "{\"error\":\"slow down\"}"), 200);
    expect_summary(f, c, "llm-a", 429, -1, -1);
    broker_call_done(f->b, c);

    /* A publisher's error, before anything was sent. */
    c = start_task(f, &p, &ep, req("llm-a", SID_A), id);
    assert_int_equal(events(f, &p, id, PIECE_ERROR, "no gpu"), 200);
    failure(f, c, 502);
    expect_summary(f, c, "llm-a", 502, -1, -1);
    broker_call_done(f->b, c);

    /* A caller that leaves before its answer. */
    c = start_task(f, &p, &ep, req("llm-a", SID_A), id);
    expect_summary(f, c, "llm-a", 499, -1, -1);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

/* A stream: a later count replaces an earlier one (Anthropic's
 * message_delta after its message_start), a count a piece does not have
 * stays; a stream that broke off is an error even after its start. */
static void test_summary_of_a_stream(void **state)
{
    struct fx *f = *state;
    struct pub p;
    pub_open(f, &p, SID_A, OWNER, HASH_1, BROKER_FEAT_STREAMED);
    struct broker_call_req rq = req("llm-s", SID_A);
    rq.streaming = true;
    struct fake_ep ep;
    char id[BROKER_ID_LEN];
    struct broker_call *c = start_task(f, &p, &ep, rq, id);
    struct broker_piece start_ev = {
        .kind = PIECE_EVENTS,
        .data = "event: message_start\ndata: {}\n\n",
        .len = strlen("event: message_start\ndata: {}\n\n"),
        .usage = {.prompt = 11, .completion = 1, .has_prompt = true, .has_completion = true}};
    assert_int_equal(deliver(f, &p, id, &start_ev, NULL), 200);
    sse_head(f, c);
    expect_summary(f, c, "llm-s", 499, 11, 1); /* streaming, not over */
    struct broker_piece delta = {.kind = PIECE_EVENTS,
                                 .data = "event: message_delta\ndata: {}\n\n",
                                 .len = strlen("event: message_delta\ndata: {}\n\n"),
                                 .usage = {.completion = 42, .has_completion = true}};
    assert_int_equal(deliver(f, &p, id, &delta, NULL), 200);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS_END, NULL), 200);
    expect_summary(f, c, "llm-s", 200, 11, 42);
    broker_call_done(f->b, c);

    /* Per-chunk posts, the last chunk with OpenAI's usage. */
    c = start_task(f, &p, &ep, rq, id);
    assert_int_equal(chunk(f, &p, id, "{\"choices\":[]}", false), 200);
    struct broker_piece last = {
        .kind = PIECE_CHUNK,
        .data = "{\"choices\":[]}",
        .len = strlen("{\"choices\":[]}"),
        .done = true,
        .usage = {.prompt = 3, .completion = 9, .has_prompt = true, .has_completion = true}};
    assert_int_equal(deliver(f, &p, id, &last, NULL), 200);
    sse_head(f, c);
    expect_summary(f, c, "llm-s", 200, 3, 9);
    broker_call_done(f->b, c);

    /* Broken off after its start: the error event's status. */
    c = start_task(f, &p, &ep, rq, id);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS, "data: {}\n\n"), 200);
    sse_head(f, c);
    assert_int_equal(events(f, &p, id, PIECE_EVENTS_CUT, NULL), 200);
    expect_summary(f, c, "llm-s", 502, -1, -1);
    broker_call_done(f->b, c);
    pub_close(f, &p, true);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_stream_hello_and_reads),
        T(test_ping),
        T(test_infer_task_frame),
        T(test_final_results),
        T(test_result_too_large),
        T(test_streaming_chunks),
        T(test_chunk_lines),
        T(test_final_after_stream_started),
        T(test_streamed_events),
        T(test_streamed_events_cut),
        T(test_streamed_events_cut_before_any),
        T(test_stream_pieces_need_a_streaming_task),
        T(test_publisher_error_piece),
        T(test_result_routing),
        T(test_cancel_on_call_done),
        T(test_infer_timeout),
        T(test_idle_timeout),
        T(test_caller_backlog),
        T(test_wake_join_and_success),
        T(test_wake_failures),
        T(test_wake_held_cap),
        T(test_session_replacement),
        T(test_stream_closed_fails_tasks),
        T(test_revoke),
        T(test_session_expire),
        T(test_results_stream),
        T(test_paths_feature),
        T(test_paths_feature_after_wake),
        T(test_unavailable_and_busy),
        T(test_frame_too_large),
        T(test_stream_backpressure),
        T(test_stream_keeping_up),
        T(test_park_refused),
        T(test_shutdown),
        T(test_summary_of_an_answer),
        T(test_summary_of_a_stream),
        T(test_pool_record_generation),
        T(test_pool_least_inflight),
        T(test_pool_even_spread),
        T(test_pool_max_inflight),
        T(test_pool_hibernating_last_resort),
        T(test_pool_wake_failure),
        T(test_pool_active_before_asleep),
        T(test_pool_features),
        T(test_pool_failover),
        T(test_pool_failover_limits),
        T(test_pool_failover_nowhere),
        T(test_pool_membership_change),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
