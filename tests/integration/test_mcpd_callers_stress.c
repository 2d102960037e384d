/*
 * Caller connections under load. Several client threads on raw sockets run,
 * for a few seconds, a random mix of what callers do: completions on
 * keep-alive connections, pipelined pairs, streams read to the end, streams
 * dropped midway (closed, or reset with SO_LINGER 0), requests given up
 * before any answer, and connections that go on with GET /api/v1/llms,
 * which libmicrohttpd then serves; requests go out in one write or split
 * at a random byte. Meanwhile the fake publisher answers every task after
 * a small random delay, in one piece or in chunks, and echoes the request's
 * content, unique per request.
 *
 * Every request whose client stayed gets exactly one answer, well framed
 * and its own; it reached the publisher exactly once; nothing hangs (every
 * read has a deadline); afterwards mcpd still serves, its count of the
 * publisher's tasks in flight is back to zero (exactly --max-inflight
 * silent tasks are taken and the next is refused), and it stops cleanly.
 *
 * STRESS_SEED replays a run's random choices (up to timing), STRESS_MS
 * sets its length.
 */
#include "fake_publisher.h"
#include "raw_http.h"
#include "test_env.h"

#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>

/* Bounds a server that stalls; no wait lasts this long otherwise. */
#define WAIT_MS 10000
#define CLIENTS 6
#define RUN_MS_DEFAULT 4000
#define CHUNKS 4
#define MAX_INFLIGHT 32

static const char PROVIDERS[] = "[{\"name\":\"llm1\",\"type\":\"openai\",\"model\":\"q\"}]";

enum api { OPENAI, INFER };

enum op {
    OP_PLAIN,        /* a completion on the client's keep-alive connection */
    OP_PIPELINED,    /* two requests in one write on a new connection */
    OP_STREAM,       /* a streamed completion read to its end */
    OP_STREAM_DROP,  /* a stream closed (or reset) after some of it came */
    OP_GIVE_UP,      /* a request closed (or reset) before its answer */
    OP_THEN_LISTING, /* a completion, then GET /api/v1/llms (and maybe more) */
    OP_COUNT,
};

static const char *const OP_NAMES[OP_COUNT] = {"plain",   "pipelined", "stream",
                                               "dropped", "given up",  "then listing"};
/* Relative frequencies. */
static const int OP_WEIGHTS[OP_COUNT] = {30, 14, 20, 12, 10, 14};

/* Request contents, for the check of what reached the publisher. */
struct names {
    char **v;
    size_t n, cap;
};

struct client {
    int id;
    int port;
    const char *token;
    int64_t end_ms;
    unsigned int seed;
    int seq;
    struct raw_conn ka; /* the keep-alive connection, fd -1 when closed */
    int ops[OP_COUNT];
    int answers;         /* answers checked */
    struct names stayed; /* requests whose client waited for the answer */
    struct names left;   /* requests given up */
    int failures;
    char failure[1024]; /* the first */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void names_add(struct names *ns, const char *s)
{
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 256;
        ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
    }
    ns->v[ns->n++] = strdup(s);
}

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    memset(ns, 0, sizeof *ns);
}

/* Client threads cannot use cmocka's asserts: they note failures, which
 * the main thread reports. */
__attribute__((format(printf, 2, 3))) static void fail_note(struct client *cl, const char *fmt, ...)
{
    if (cl->failures++ > 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cl->failure, sizeof cl->failure, fmt, ap);
    va_end(ap);
}

static unsigned int pick(struct client *cl, unsigned int n)
{
    return (unsigned int)rand_r(&cl->seed) % n;
}

static bool coin(struct client *cl)
{
    return pick(cl, 2) == 0;
}

static void next_content(struct client *cl, char *out, size_t cap)
{
    snprintf(out, cap, "c%d-%d", cl->id, cl->seq++);
}

/* A whole chat request for content; returns its length. */
static int chat_request(char *out, size_t cap, enum api api, const char *tok, const char *content,
                        bool stream)
{
    char body[256];
    int blen =
        snprintf(body, sizeof body,
                 "{%s\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                 api == OPENAI ? "\"model\":\"llm1\"," : "", stream ? "true" : "false", content);
    return snprintf(out, cap,
                    "POST %s HTTP/1.1\r\nHost: mcpd\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                    api == OPENAI ? "/v1/chat/completions" : "/api/v1/llms/llm1/infer", tok, blen,
                    body);
}

static int listing_request(char *out, size_t cap, const char *tok)
{
    return snprintf(out, cap,
                    "GET /api/v1/llms HTTP/1.1\r\nHost: mcpd\r\nAuthorization: Bearer %s\r\n\r\n",
                    tok);
}

static const char *result_name(enum raw_result rc)
{
    switch (rc) {
    case RAW_OK:
        return "ok";
    case RAW_CLOSED:
        return "closed before an answer";
    case RAW_TIMEOUT:
        return "no answer within the deadline";
    case RAW_BROKEN:
        return "broken answer or connection";
    }
    return "?";
}

static bool has_header_prefix(const struct raw_resp *r, const char *name, const char *prefix)
{
    char *v = raw_resp_header(r, name);
    bool ok = v && strncmp(v, prefix, strlen(prefix)) == 0;
    free(v);
    return ok;
}

/* Why a non-streamed answer is not the echo of content, or NULL. */
static const char *check_json_answer(const struct raw_resp *r, const char *content)
{
    if (!has_header_prefix(r, "Content-Type", "application/json"))
        return "not application/json";
    json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
    if (!o)
        return "body is not JSON";
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    const char *got = json_string_value(json_object_get(msg, "content"));
    const char *obj = json_string_value(json_object_get(o, "object"));
    char want[128];
    snprintf(want, sizeof want, "echo: %s", content);
    const char *why = NULL;
    if (!got || strcmp(got, want) != 0)
        why = "another request's answer";
    else if (!obj || strcmp(obj, "chat.completion") != 0)
        why = "not a chat.completion";
    json_decref(o);
    return why;
}

/* Why a streamed answer is not CHUNKS events echoing content and [DONE],
 * or NULL. */
static const char *check_sse_answer(const struct raw_resp *r, const char *content)
{
    if (!has_header_prefix(r, "Content-Type", "text/event-stream"))
        return "not text/event-stream";
    if (!r->chunked)
        return "an HTTP/1.1 stream without chunked framing";
    int events = 0;
    for (const char *p = r->body; *p;) {
        const char *end = strstr(p, "\n\n");
        if (!end)
            return "an event cut short";
        if (*p != ':') { /* comments may come between events */
            if (strncmp(p, "data: ", 6) != 0)
                return "an event that is not data";
            const char *data = p + 6;
            size_t len = (size_t)(end - data);
            if (events < CHUNKS) {
                json_t *o = json_loadb(data, len, 0, NULL);
                json_t *delta =
                    json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
                const char *got = json_string_value(json_object_get(delta, "content"));
                char want[128];
                snprintf(want, sizeof want, "echo: %s tok%d ", content, events);
                bool ok = got && strcmp(got, want) == 0;
                json_decref(o);
                if (!ok)
                    return "a chunk of another request, or out of order";
            } else if (events > CHUNKS || len != 6 || memcmp(data, "[DONE]", 6) != 0) {
                return "more than the chunks and [DONE]";
            }
            events++;
        }
        p = end + 2;
    }
    return events == CHUNKS + 1 ? NULL : "chunks missing";
}

/* Reads the answer to content on c and checks it; *closing tells whether
 * it announced Connection: close. */
static bool expect_answer(struct client *cl, struct raw_conn *c, const char *content, bool stream,
                          bool *closing)
{
    struct raw_resp r;
    enum raw_result rc = raw_read_response(c, &r, WAIT_MS);
    if (rc != RAW_OK) {
        fail_note(cl, "%s (%s): %s", content, stream ? "streamed" : "whole", result_name(rc));
        return false;
    }
    const char *why = r.status != 200 ? "status is not 200"
                      : stream        ? check_sse_answer(&r, content)
                                      : check_json_answer(&r, content);
    if (why) {
        fail_note(cl, "%s (%s): %s:\n%s%.*s", content, stream ? "streamed" : "whole", why, r.head,
                  (int)(r.body_len < 600 ? r.body_len : 600), r.body);
        raw_resp_free(&r);
        return false;
    }
    if (closing)
        *closing = raw_resp_has_token(&r, "Connection", "close");
    raw_resp_free(&r);
    cl->answers++;
    return true;
}

/* Bytes the server sent after the answers read: a second answer. */
static bool stray_bytes(struct raw_conn *c)
{
    char b;
    return c->len > 0 || recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static bool expect_quiet(struct client *cl, struct raw_conn *c, const char *after)
{
    if (!stray_bytes(c))
        return true;
    fail_note(cl, "bytes after the answer to %s: '%.*s'", after, (int)(c->len < 300 ? c->len : 300),
              c->buf ? c->buf : "");
    return false;
}

static bool expect_listing(struct client *cl, struct raw_conn *c)
{
    struct raw_resp r;
    enum raw_result rc = raw_read_response(c, &r, WAIT_MS);
    if (rc != RAW_OK) {
        fail_note(cl, "listing: %s", result_name(rc));
        return false;
    }
    json_t *o = r.status == 200 ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
    const char *name = json_string_value(json_object_get(json_array_get(o, 0), "name"));
    bool ok = name && strcmp(name, "llm1") == 0;
    json_decref(o);
    if (!ok)
        fail_note(cl, "listing: not llm1's row:\n%s%s", r.head, r.body);
    raw_resp_free(&r);
    return ok;
}

static bool connect_to(struct client *cl, struct raw_conn *c)
{
    if (raw_connect(c, cl->port, 0) == 0)
        return true;
    fail_note(cl, "cannot connect");
    return false;
}

/* Sends data in one write, or at random in two split anywhere. */
static bool send_all(struct client *cl, struct raw_conn *c, const char *data, size_t len)
{
    size_t cut = len > 1 && coin(cl) ? 1 + pick(cl, (unsigned int)len - 1) : len;
    if (raw_send(c, data, cut) == 0 && (cut == len || raw_send(c, data + cut, len - cut) == 0))
        return true;
    fail_note(cl, "send failed on a connection the server should keep");
    return false;
}

/* Closes c, at random with a reset (SO_LINGER 0) instead of a FIN. */
static void close_abruptly(struct client *cl, struct raw_conn *c)
{
    if (coin(cl)) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    raw_close(c);
}

/* One request on the keep-alive connection, streamed or not. */
static void op_keep_alive(struct client *cl, bool stream)
{
    char content[32], req[1024];
    next_content(cl, content, sizeof content);
    if (cl->ka.fd < 0 && !connect_to(cl, &cl->ka))
        return;
    int n = chat_request(req, sizeof req, pick(cl, 2), cl->token, content, stream);
    names_add(&cl->stayed, content);
    bool closing = false;
    if (!send_all(cl, &cl->ka, req, (size_t)n) ||
        !expect_answer(cl, &cl->ka, content, stream, &closing) ||
        !expect_quiet(cl, &cl->ka, content) || closing)
        raw_close(&cl->ka);
}

static void op_pipelined(struct client *cl)
{
    char a[32], b[32], req[2048];
    bool sa = coin(cl), sb = coin(cl);
    next_content(cl, a, sizeof a);
    next_content(cl, b, sizeof b);
    int n = chat_request(req, sizeof req, pick(cl, 2), cl->token, a, sa);
    n += chat_request(req + n, sizeof req - (size_t)n, pick(cl, 2), cl->token, b, sb);
    names_add(&cl->stayed, a);
    names_add(&cl->stayed, b);
    struct raw_conn c;
    if (!connect_to(cl, &c))
        return;
    bool closing = false;
    if (send_all(cl, &c, req, (size_t)n) && expect_answer(cl, &c, a, sa, &closing)) {
        if (closing)
            fail_note(cl, "%s: Connection: close with %s pipelined behind it", a, b);
        else if (expect_answer(cl, &c, b, sb, NULL))
            expect_quiet(cl, &c, b);
    }
    raw_close(&c);
}

/* A request on a new connection whose client leaves early: a stream after
 * its head or some chunks, or any request within a few milliseconds. */
static void op_leave(struct client *cl, bool midstream)
{
    char content[32], req[1024];
    next_content(cl, content, sizeof content);
    bool stream = midstream || coin(cl);
    int n = chat_request(req, sizeof req, pick(cl, 2), cl->token, content, stream);
    names_add(&cl->left, content);
    struct raw_conn c;
    if (!connect_to(cl, &c))
        return;
    if (!send_all(cl, &c, req, (size_t)n)) {
        raw_close(&c);
        return;
    }
    if (midstream) {
        /* after the head, or after chunk k */
        char needle[64];
        unsigned int k = pick(cl, CHUNKS);
        if (k == 0)
            snprintf(needle, sizeof needle, "\r\n\r\n");
        else
            snprintf(needle, sizeof needle, "tok%u ", k - 1);
        enum raw_result rc = raw_read_until(&c, needle, WAIT_MS);
        if (rc != RAW_OK)
            fail_note(cl, "%s: the stream stopped before '%s': %s", content, needle,
                      result_name(rc));
    } else {
        /* gives up after 0 to 5 ms, whatever came by then */
        raw_read_until(&c, "\r\n\r\n", (int)pick(cl, 6));
    }
    close_abruptly(cl, &c);
}

/* A completion, then a listing on the same connection (written after the
 * answer, or with the request), then maybe another completion: the
 * connection has gone to libmicrohttpd by then. */
static void op_then_listing(struct client *cl)
{
    char content[32], req[2048];
    next_content(cl, content, sizeof content);
    bool stream = coin(cl), together = coin(cl);
    int n = chat_request(req, sizeof req, pick(cl, 2), cl->token, content, stream);
    names_add(&cl->stayed, content);
    int m = listing_request(req + n, sizeof req - (size_t)n, cl->token);
    struct raw_conn c;
    if (!connect_to(cl, &c))
        return;
    bool closing = false;
    if (!send_all(cl, &c, req, together ? (size_t)(n + m) : (size_t)n) ||
        !expect_answer(cl, &c, content, stream, &closing))
        goto out;
    if (closing) {
        /* RFC 9112 9.3.2: a client retries what was pipelined behind it */
        if (!together)
            fail_note(cl, "%s: Connection: close on a keep-alive request", content);
        else if (raw_wait_closed(&c, WAIT_MS) != RAW_OK)
            fail_note(cl, "%s: announced a close but did not close", content);
        goto out;
    }
    if ((!together && !send_all(cl, &c, req + n, (size_t)m)) || !expect_listing(cl, &c) ||
        !expect_quiet(cl, &c, "the listing") || coin(cl))
        goto out;
    next_content(cl, content, sizeof content);
    stream = coin(cl);
    n = chat_request(req, sizeof req, pick(cl, 2), cl->token, content, stream);
    names_add(&cl->stayed, content);
    if (send_all(cl, &c, req, (size_t)n) && expect_answer(cl, &c, content, stream, NULL))
        expect_quiet(cl, &c, content);
out:
    raw_close(&c);
}

static enum op pick_op(struct client *cl)
{
    int total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += OP_WEIGHTS[i];
    int x = (int)pick(cl, (unsigned int)total);
    int i = 0;
    while (x >= OP_WEIGHTS[i])
        x -= OP_WEIGHTS[i++];
    return (enum op)i;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    cl->ka.fd = -1;
    while (now_ms() < cl->end_ms && cl->failures == 0) {
        enum op op = pick_op(cl);
        cl->ops[op]++;
        switch (op) {
        case OP_PLAIN:
            op_keep_alive(cl, false);
            break;
        case OP_PIPELINED:
            op_pipelined(cl);
            break;
        case OP_STREAM:
            op_keep_alive(cl, true);
            break;
        case OP_STREAM_DROP:
            op_leave(cl, true);
            break;
        case OP_GIVE_UP:
            op_leave(cl, false);
            break;
        case OP_THEN_LISTING:
            op_then_listing(cl);
            break;
        case OP_COUNT:
            break;
        }
    }
    if (cl->ka.fd >= 0)
        raw_close(&cl->ka);
    return NULL;
}

/* ---- what reached the publisher ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The transcript runs to megabytes: searches take lengths, not strstr(),
 * whose sanitizer interceptors measure the whole rest of it every call. */
static char *find_in(char *from, const char *end, const char *needle)
{
    return memmem(from, (size_t)(end - from), needle, strlen(needle));
}

/* Every message content in the task frames, sorted. */
static struct names relayed_contents(struct fixture *f)
{
    static const char key[] = "\"content\":\"";
    struct names ns = {0};
    char *t = fake_publisher_transcript(f->fp);
    const char *end = t + strlen(t);
    for (char *p = find_in(t, end, key); p; p = find_in(p, end, key)) {
        p += sizeof key - 1;
        char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            break;
        *q = '\0';
        names_add(&ns, p);
        p = q + 1;
    }
    free(t);
    if (ns.n)
        qsort(ns.v, ns.n, sizeof *ns.v, cmp_str);
    return ns;
}

/* How many times s is in the sorted list. */
static size_t count_in(const struct names *sorted, const char *s)
{
    size_t lo = 0, hi = sorted->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(sorted->v[mid], s) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    while (lo + n < sorted->n && strcmp(sorted->v[lo + n], s) == 0)
        n++;
    return n;
}

/* ---- the test ---- */

static int setup(void **state)
{
    char inflight[16];
    snprintf(inflight, sizeof inflight, "%d", MAX_INFLIGHT);
    const char *args[] = {"--threads", "4", "--max-inflight", inflight, NULL};
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    assert_int_equal(fixture_stop(*state), 0);
    return 0;
}

static unsigned int env_uint(const char *name, unsigned int dflt)
{
    const char *v = getenv(name);
    return v && *v ? (unsigned int)strtoul(v, NULL, 10) : dflt;
}

/* Sends a silent task's request for content on a new connection c and
 * waits until the publisher has it. A 503 (the in-flight cap) is retried
 * until the deadline: tasks of callers that left may still be finishing. */
static void start_silent_task(struct fixture *f, struct raw_conn *c, const char *content,
                              int64_t deadline)
{
    char req[1024], needle[64];
    snprintf(needle, sizeof needle, "\"content\":\"%s\"", content);
    int n = chat_request(req, sizeof req, OPENAI, f->env->mcpd.token, content, false);
    for (;;) {
        assert_int_equal(raw_connect(c, f->env->mcpd.port, 0), 0);
        assert_int_equal(raw_send(c, req, (size_t)n), 0);
        /* the task frame, or an answer */
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        while (fake_publisher_wait(f->fp, needle, 1, 0) < 0) {
            if (now_ms() > deadline)
                fail_msg("%s reached neither the publisher nor a refusal", content);
            if (poll(&p, 1, 20) > 0)
                break;
        }
        if (!p.revents)
            return;
        struct raw_resp r;
        assert_int_equal(raw_read_response(c, &r, WAIT_MS), RAW_OK);
        int status = r.status;
        raw_resp_free(&r);
        raw_close(c);
        if (status != 503 || now_ms() > deadline)
            fail_msg("%s: status %d; tasks in flight did not come back down to 0", content, status);
    }
}

/* After the load: exactly MAX_INFLIGHT tasks may be in flight, so none of
 * the load's is still counted (nor counted off twice); the callers' going
 * cancels them. */
static void check_inflight_accounting(struct fixture *f)
{
    struct fp_script silent = {.mode = FP_SILENT};
    fake_publisher_set_script(f->fp, &silent);
    struct raw_conn conns[MAX_INFLIGHT];
    char *ids[MAX_INFLIGHT];
    int64_t deadline = now_ms() + WAIT_MS;
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        char content[32];
        snprintf(content, sizeof content, "cap-%d", i);
        start_silent_task(f, &conns[i], content, deadline);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"content\":\"%s\"", content);
        ids[i] = fake_publisher_task_id(f->fp, quoted);
        assert_non_null(ids[i]);
    }
    char req[1024];
    int n = chat_request(req, sizeof req, INFER, f->env->mcpd.token, "cap-over", false);
    struct raw_conn c;
    assert_int_equal(raw_connect(&c, f->env->mcpd.port, 0), 0);
    assert_int_equal(raw_send(&c, req, (size_t)n), 0);
    struct raw_resp r;
    assert_int_equal(raw_read_response(&c, &r, WAIT_MS), RAW_OK);
    if (r.status != 503)
        fprintf(stderr, "one over the cap got:\n%s%s\n", r.head, r.body);
    assert_int_equal(r.status, 503);
    raw_resp_free(&r);
    raw_close(&c);

    for (int i = 0; i < MAX_INFLIGHT; i++) {
        raw_close(&conns[i]);
        char needle[128];
        snprintf(needle, sizeof needle, "event: cancel\ndata: {\"taskId\":\"%s\"}", ids[i]);
        assert_int_equal(fake_publisher_wait(f->fp, needle, 1, WAIT_MS), 0);
        free(ids[i]);
    }
    char *t = fake_publisher_transcript(f->fp);
    assert_null(find_in(t, t + strlen(t), "cap-over"));
    free(t);
}

/* Nothing of the load was worth a warning: no answer lost, no connection
 * that could not be handed over or watched. */
static void expect_quiet_log(struct fixture *f)
{
    char *log = proc_output(f->env->mcpd.proc);
    int bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, " warn mcpd: ") || strstr(line, " error mcpd: ")) {
            if (bad++ < 10)
                fprintf(stderr, "mcpd logged: %s\n", line);
        }
    }
    free(log);
    assert_int_equal(bad, 0);
}

static void test_callers_under_load(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {
        .mode = FP_ANSWER, .chunks = CHUNKS, .delay_ms = 0, .jitter_ms = 3, .echo_chunks = 1};
    fake_publisher_set_script(f->fp, &s);

    unsigned int seed = env_uint("STRESS_SEED", (unsigned int)time(NULL));
    unsigned int run_ms = env_uint("STRESS_MS", RUN_MS_DEFAULT);
    fprintf(stderr, "STRESS_SEED=%u STRESS_MS=%u\n", seed, run_ms);
    static struct client clients[CLIENTS];
    pthread_t threads[CLIENTS];
    int64_t start = now_ms();
    for (int i = 0; i < CLIENTS; i++) {
        memset(&clients[i], 0, sizeof clients[i]);
        clients[i].id = i;
        clients[i].port = f->env->mcpd.port;
        clients[i].token = f->env->mcpd.token;
        clients[i].end_ms = start + run_ms;
        clients[i].seed = seed + (unsigned int)i * 7919u;
        assert_int_equal(pthread_create(&threads[i], NULL, client_main, &clients[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(threads[i], NULL);

    int failures = 0, ops[OP_COUNT] = {0}, answers = 0;
    for (int i = 0; i < CLIENTS; i++) {
        struct client *cl = &clients[i];
        if (cl->failures) {
            fprintf(stderr, "client %d: %d failure(s), the first: %s\n", i, cl->failures,
                    cl->failure);
            failures += cl->failures;
        }
        for (int k = 0; k < OP_COUNT; k++)
            ops[k] += cl->ops[k];
        answers += cl->answers;
    }
    fprintf(stderr, "%lld ms:", (long long)(now_ms() - start));
    for (int k = 0; k < OP_COUNT; k++)
        fprintf(stderr, " %s %d,", OP_NAMES[k], ops[k]);
    fprintf(stderr, " %d answers checked\n", answers);

    /* each request reached the publisher once; those given up at most once */
    struct names relayed = relayed_contents(f);
    int wrong = 0, left_relayed = 0, left_total = 0;
    for (int i = 0; i < CLIENTS; i++) {
        struct client *cl = &clients[i];
        for (size_t k = 0; k < cl->stayed.n; k++) {
            size_t times = count_in(&relayed, cl->stayed.v[k]);
            /* a request after a failure on its connection was not answered */
            if (times != 1 && cl->failures == 0 && wrong++ < 10)
                fprintf(stderr, "%s reached the publisher %zu times\n", cl->stayed.v[k], times);
        }
        for (size_t k = 0; k < cl->left.n; k++) {
            size_t times = count_in(&relayed, cl->left.v[k]);
            left_total++;
            left_relayed += times > 0;
            if (times > 1 && wrong++ < 10)
                fprintf(stderr, "%s (given up) reached the publisher %zu times\n", cl->left.v[k],
                        times);
        }
        names_free(&cl->stayed);
        names_free(&cl->left);
    }
    names_free(&relayed);
    char *t = fake_publisher_transcript(f->fp);
    const char *tend = t + strlen(t);
    int cancels = 0;
    for (char *p = find_in(t, tend, "event: cancel"); p; p = find_in(p + 1, tend, "event: cancel"))
        cancels++;
    free(t);
    fprintf(stderr, "of %d requests given up, %d reached the publisher; %d cancels\n", left_total,
            left_relayed, cancels);
    assert_int_equal(failures, 0);
    assert_int_equal(wrong, 0);
    assert_true(answers > 0);

    check_inflight_accounting(f);

    /* still serving, on both kinds of connection */
    s.mode = FP_ANSWER;
    fake_publisher_set_script(f->fp, &s);
    struct client probe = {.port = f->env->mcpd.port, .token = f->env->mcpd.token, .seed = seed};
    probe.ka.fd = -1;
    op_keep_alive(&probe, false);
    op_keep_alive(&probe, true);
    op_then_listing(&probe);
    if (probe.ka.fd >= 0)
        raw_close(&probe.ka);
    names_free(&probe.stayed);
    if (probe.failures)
        fprintf(stderr, "after the load: %s\n", probe.failure);
    assert_int_equal(probe.failures, 0);
    expect_quiet_log(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_callers_under_load, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
