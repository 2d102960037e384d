/*
 * HTTP/1.1 request framing at the socket level, against the real mcpd.
 *
 * The rule: a request whose framing or header syntax is ambiguous — two
 * Content-Length fields, Content-Length with Transfer-Encoding, a
 * Transfer-Encoding other than "chunked", whitespace between a field name
 * and its colon, an obs-fold line, a NUL in a field value, HTTP/1.1
 * without Host — gets one 400 answer and the connection is closed. The
 * bytes after it are never served as a request, whether it is the first
 * request on the connection or comes after a served one, on every route.
 *
 * Each case is sent followed by a smuggled GET /api/v1/llms; the test
 * reads until mcpd closes and counts the answers. Exactly one, a 400, then
 * the close, passes; a smuggled answer, a second answer of any kind, or a
 * connection left open fails. The cases run on parallel connections, and
 * every failing combination is listed before the test fails, so one run
 * shows the whole picture.
 *
 * Controls: the same connections with well-formed requests (Content-Length
 * or chunked) get both answers. And a chunked body over --max-body is
 * refused with 413 while the client is still sending.
 */
#include "fake_publisher.h"
#include "raw_http.h"
#include "test_env.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* A server that neither answers nor closes within this has hung. */
#define READ_MS 3000
/* After the answers to well-formed requests: long enough to see a close
 * that should not come. */
#define SETTLE_MS 500
/* Connections at once; each combination has its own. */
#define WORKERS 8
#define MAX_BODY "1024"

static const char PROVIDERS[] = "[{\"name\":\"x\",\"type\":\"openai\",\"model\":\"m\"}]";

static struct fixture *F;

static int setup(void **state)
{
    (void)state;
    const char *args[] = {"--max-body", MAX_BODY, NULL};
    F = fixture_start(args, PROVIDERS);
    return F ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return fixture_stop(F) == 0 ? 0 : -1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- routes, positions and request bytes ---- */

enum route_id { ROUTE_CHAT, ROUTE_INFER, ROUTE_REGISTER, ROUTE_LIST, NROUTES };

static const struct route {
    const char *method, *path;
    const char *body_fmt; /* %s: the marker that identifies the request */
} routes[NROUTES] = {
    [ROUTE_CHAT] = {"POST", "/v1/chat/completions",
                    "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}"},
    [ROUTE_INFER] = {"POST", "/api/v1/llms/x/infer",
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}"},
    [ROUTE_REGISTER] = {"POST", "/api/v1/llms/_provider-register",
                        "{\"providers\":[{\"name\":\"%s\",\"type\":\"openai\",\"model\":\"m\"}]}"},
    [ROUTE_LIST] = {"GET", "/api/v1/llms", "{\"note\":\"%s\"}"},
};

/* First: the request opens the connection. Later: it follows a served
 * GET /healthz on the same keep-alive connection. */
enum position { FIRST, LATER, NPOSITIONS };
static const char *const position_names[NPOSITIONS] = {"first", "later"};

static const char HEALTHZ[] = "GET /healthz HTTP/1.1\r\nHost: mcpd\r\n\r\n";

/* A request is written as a template:
 *   {LINE}     the request line, "METHOD PATH HTTP/1.1"
 *   {AUTH}     "Authorization: Bearer <alice's token>\r\n"
 *   {BODY}     the route's body, {LEN} its length in decimal
 *   {CHUNKED}  the same body chunked (one chunk, then the last one),
 *              {CLEN} the length of that encoding
 *   {NUL}      a NUL byte
 * Everything else is copied as it is. */
#define HEAD "{LINE}\r\nHost: mcpd\r\n{AUTH}Content-Type: application/json\r\n"

static const struct framing_case {
    const char *name;
    const char *raw;
} bad_cases[] = {
    {"two equal Content-Length fields",
     HEAD "Content-Length: {LEN}\r\nContent-Length: {LEN}\r\n\r\n{BODY}"},
    {"two different Content-Length fields",
     HEAD "Content-Length: {LEN}\r\nContent-Length: 1\r\n\r\n{BODY}"},
    {"Content-Length, then Transfer-Encoding: chunked",
     HEAD "Content-Length: {CLEN}\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED}"},
    {"Transfer-Encoding: chunked, then Content-Length",
     HEAD "Transfer-Encoding: chunked\r\nContent-Length: {CLEN}\r\n\r\n{CHUNKED}"},
    {"Transfer-Encoding: xchunked", HEAD "Transfer-Encoding: xchunked\r\n\r\n{CHUNKED}"},
    {"Transfer-Encoding: gzip, chunked", HEAD "Transfer-Encoding: gzip, chunked\r\n\r\n{CHUNKED}"},
    {"Transfer-Encoding: identity", HEAD "Transfer-Encoding: identity\r\n\r\n{BODY}"},
    {"Transfer-Encoding: chunked, twice",
     HEAD "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED}"},
    {"a space before the colon (Content-Length : N)", HEAD "Content-Length : {LEN}\r\n\r\n{BODY}"},
    {"a tab before the colon (Content-Length<TAB>: N)",
     HEAD "Content-Length\t: {LEN}\r\n\r\n{BODY}"},
    {"a space before the colon (Transfer-Encoding : chunked)",
     HEAD "Transfer-Encoding : chunked\r\n\r\n{CHUNKED}"},
    {"an obs-fold line starting with a space",
     HEAD "X-Note: first\r\n second\r\nContent-Length: {LEN}\r\n\r\n{BODY}"},
    {"an obs-fold line starting with a tab",
     HEAD "X-Note: first\r\n\tsecond\r\nContent-Length: {LEN}\r\n\r\n{BODY}"},
    {"Content-Length folded onto an obs-fold line", HEAD "Content-Length:\r\n {LEN}\r\n\r\n{BODY}"},
    {"a NUL in a header value", HEAD "X-Note: a{NUL}b\r\nContent-Length: {LEN}\r\n\r\n{BODY}"},
    /* Not here: a NUL right before the CR LF of the last header line.
     * libmicrohttpd 0.9.75 ends the value at the NUL and shows mcpd nothing
     * that sets it apart (docs/protocol.md, "Request framing"); it frames
     * the body by the digits before the NUL, so what follows the body is
     * read as the next request, as a strict parser would have framed it. */
    {"HTTP/1.1 without Host",
     "{LINE}\r\n{AUTH}Content-Type: application/json\r\nContent-Length: {LEN}\r\n\r\n{BODY}"},
};
#define NBAD (sizeof bad_cases / sizeof bad_cases[0])

static const struct framing_case good_cases[] = {
    {"Content-Length", HEAD "Content-Length: {LEN}\r\n\r\n{BODY}"},
    {"Transfer-Encoding: chunked", HEAD "Transfer-Encoding: chunked\r\n\r\n{CHUNKED}"},
};
#define NGOOD (sizeof good_cases / sizeof good_cases[0])

struct bytes {
    char *data;
    size_t len, cap;
};

static void put(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data)
            abort();
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void put_str(struct bytes *b, const char *s)
{
    put(b, s, strlen(s));
}

/* The bytes of template raw for route r, its body carrying marker. */
static struct bytes expand(const char *raw, enum route_id r, const char *marker, const char *token)
{
    char body[512], chunked[600], line[128], auth[256], num[32];
    snprintf(body, sizeof body, routes[r].body_fmt, marker);
    snprintf(chunked, sizeof chunked, "%zx\r\n%s\r\n0\r\n\r\n", strlen(body), body);
    snprintf(line, sizeof line, "%s %s HTTP/1.1", routes[r].method, routes[r].path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    static const struct {
        const char *name;
        int what;
    } tokens[] = {{"{LINE}", 0},    {"{AUTH}", 1}, {"{BODY}", 2}, {"{LEN}", 3},
                  {"{CHUNKED}", 4}, {"{CLEN}", 5}, {"{NUL}", 6}};
    struct bytes b = {0};
    for (const char *p = raw; *p;) {
        size_t t = 0;
        size_t ntokens = sizeof tokens / sizeof tokens[0];
        while (t < ntokens && strncmp(p, tokens[t].name, strlen(tokens[t].name)) != 0)
            t++;
        if (t == ntokens) {
            put(&b, p++, 1);
            continue;
        }
        p += strlen(tokens[t].name);
        switch (tokens[t].what) {
        case 0:
            put_str(&b, line);
            break;
        case 1:
            put_str(&b, auth);
            break;
        case 2:
            put_str(&b, body);
            break;
        case 3:
            snprintf(num, sizeof num, "%zu", strlen(body));
            put_str(&b, num);
            break;
        case 4:
            put_str(&b, chunked);
            break;
        case 5:
            snprintf(num, sizeof num, "%zu", strlen(chunked));
            put_str(&b, num);
            break;
        default:
            put(&b, "", 1);
            break;
        }
    }
    return b;
}

/* The request smuggled after each case: answered only if mcpd took the
 * bytes after a bad request as a request of their own. */
static struct bytes smuggled(const char *token)
{
    struct bytes b = {0};
    char s[512];
    snprintf(s, sizeof s,
             "GET /api/v1/llms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", token);
    put_str(&b, s);
    return b;
}

/* ---- one exchange ---- */

enum ending {
    END_CLOSED,  /* mcpd closed the connection */
    END_RESET,   /* ...with a reset, after what was read */
    END_TIMEOUT, /* nothing more in time, and still open */
    END_GARBAGE, /* bytes that are not a whole HTTP response */
    END_SETUP,   /* could not connect, or GET /healthz was not served */
};
static const char *const ending_names[] = {"closed", "reset", "left open", "garbage",
                                           "setup failed"};

#define MAX_ANSWERS 4

struct outcome {
    int n;                   /* responses read */
    int status[MAX_ANSWERS]; /* their statuses (the first MAX_ANSWERS) */
    bool smuggled_answer;    /* a later 200 whose body is the Llm list */
    enum ending end;
    int64_t ms; /* from sending to the end */
};

/* Connects (after GET /healthz for LATER), sends req then the smuggled
 * request in one write, and reads answers until mcpd closes, or until no
 * whole answer comes in time: READ_MS for each of the first `expect`
 * answers, quiet_ms after them. A connection mcpd keeps open shows as
 * END_TIMEOUT. */
static void exchange(enum position pos, const struct bytes *req, const struct bytes *after,
                     int expect, int quiet_ms, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    struct raw_conn c;
    if (raw_connect(&c, F->env->mcpd.port, 0) < 0) {
        o->end = END_SETUP;
        return;
    }
    if (pos == LATER) {
        struct raw_resp r = {0};
        bool ok = raw_send(&c, HEALTHZ, sizeof HEALTHZ - 1) == 0 &&
                  raw_read_response(&c, &r, READ_MS) == RAW_OK && r.status == 200;
        raw_resp_free(&r);
        if (!ok) {
            o->end = END_SETUP;
            raw_close(&c);
            return;
        }
    }
    struct bytes all = {0};
    put(&all, req->data, req->len);
    put(&all, after->data, after->len);
    int64_t start = now_ms();
    /* mcpd may close before taking every byte; what it answered counts. */
    raw_send(&c, all.data, all.len);
    free(all.data);
    for (;;) {
        struct raw_resp r;
        enum raw_result rc = raw_read_response(&c, &r, o->n < expect ? READ_MS : quiet_ms);
        if (rc == RAW_OK) {
            if (o->n < MAX_ANSWERS)
                o->status[o->n] = r.status;
            if (o->n > 0 && r.status == 200 && r.body && strstr(r.body, "\"name\":\"x\""))
                o->smuggled_answer = true;
            o->n++;
            raw_resp_free(&r);
            continue;
        }
        if (rc == RAW_CLOSED)
            o->end = END_CLOSED;
        else if (rc == RAW_TIMEOUT)
            o->end = END_TIMEOUT;
        else
            o->end = c.reset && c.len == 0 ? END_RESET : END_GARBAGE;
        break;
    }
    o->ms = now_ms() - start;
    raw_close(&c);
}

static void describe(const struct outcome *o, char *out, size_t cap)
{
    int len = snprintf(out, cap, "%d answer%s", o->n, o->n == 1 ? "" : "s");
    for (int i = 0; i < o->n && i < MAX_ANSWERS && len > 0 && (size_t)len < cap; i++)
        len += snprintf(out + len, cap - (size_t)len, "%s%d", i ? ", " : " (", o->status[i]);
    if (o->n > 0 && len > 0 && (size_t)len < cap)
        len += snprintf(out + len, cap - (size_t)len, ")");
    if (len > 0 && (size_t)len < cap)
        snprintf(out + len, cap - (size_t)len, ", then %s after %lld ms%s", ending_names[o->end],
                 (long long)o->ms, o->smuggled_answer ? "; the smuggled request was served" : "");
}

/* ---- the combinations, on WORKERS connections at once ---- */

struct combo {
    const struct framing_case *fc;
    size_t case_index;
    enum position pos;
    enum route_id route;
    char marker[48];
    struct outcome out;
};

struct run {
    struct combo *combos;
    size_t n, next;
    int expect, quiet_ms;
    pthread_mutex_t mu;
};

static void *worker(void *arg)
{
    struct run *run = arg;
    struct bytes after = smuggled(F->env->mcpd.token);
    for (;;) {
        pthread_mutex_lock(&run->mu);
        size_t i = run->next++;
        pthread_mutex_unlock(&run->mu);
        if (i >= run->n)
            break;
        struct combo *k = &run->combos[i];
        struct bytes req = expand(k->fc->raw, k->route, k->marker, F->env->mcpd.token);
        exchange(k->pos, &req, &after, run->expect, run->quiet_ms, &k->out);
        free(req.data);
    }
    free(after.data);
    return NULL;
}

/* Runs every case x position x route, with a marker
 * ("<prefix>-<case>-<f|l>-<route>") in its body, each exchange reading as
 * exchange() says. Returns a new array of the *n combos. */
static struct combo *run_all(const struct framing_case *cases, size_t ncases, const char *prefix,
                             int expect, int quiet_ms, size_t *n)
{
    struct run run = {.n = ncases * NPOSITIONS * NROUTES, .expect = expect, .quiet_ms = quiet_ms};
    run.combos = calloc(run.n, sizeof *run.combos);
    pthread_mutex_init(&run.mu, NULL);
    size_t k = 0;
    for (size_t c = 0; c < ncases; c++)
        for (int p = 0; p < NPOSITIONS; p++)
            for (int r = 0; r < NROUTES; r++, k++) {
                run.combos[k].fc = &cases[c];
                run.combos[k].case_index = c;
                run.combos[k].pos = (enum position)p;
                run.combos[k].route = (enum route_id)r;
                snprintf(run.combos[k].marker, sizeof run.combos[k].marker, "%s-%02zu-%c-%d",
                         prefix, c, position_names[p][0], r);
            }
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, worker, &run), 0);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&run.mu);
    *n = run.n;
    return run.combos;
}

/* The Llm list as mcpd has it now. */
static char *llm_list(void)
{
    struct http_resp r;
    test_call(F->env, "GET", "/api/v1/llms", F->env->mcpd.token, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char *body = strdup(r.body);
    http_resp_free(&r);
    return body;
}

/* ---- tests ---- */

/* Well-formed requests, first or later on their connection, followed by
 * the same GET /api/v1/llms: both are answered, and the connection stays
 * open. */
static void test_well_formed_requests_are_served(void **state)
{
    (void)state;
    size_t n;
    struct combo *k = run_all(good_cases, NGOOD, "ok", 2, SETTLE_MS, &n);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct outcome *o = &k[i].out;
        bool ok = o->n == 2 && o->status[0] == 200 && o->status[1] == 200 && o->smuggled_answer &&
                  o->end == END_TIMEOUT;
        if (ok)
            continue;
        char d[256];
        describe(o, d, sizeof d);
        fprintf(stderr, "FAIL %-28s %-5s %s %s: %s (want 2 answers (200, 200), left open)\n",
                k[i].fc->name, position_names[k[i].pos], routes[k[i].route].method,
                routes[k[i].route].path, d);
        failed++;
    }
    free(k);
    if (failed)
        fail_msg("%d of %zu well-formed exchanges went wrong", failed, n);
}

static void test_ambiguous_framing_is_refused_and_closed(void **state)
{
    (void)state;
    size_t n;
    struct combo *k = run_all(bad_cases, NBAD, "bad", 1, READ_MS, &n);
    char *transcript = fake_publisher_transcript(F->fp);
    char *list = llm_list();
    int failed = 0;
    int failed_by_case[NBAD] = {0};
    for (size_t i = 0; i < n; i++) {
        const struct outcome *o = &k[i].out;
        /* A bad request's body never reaches a publisher, and never
         * registers an Llm. */
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", k[i].marker);
        bool leaked = strstr(transcript, k[i].marker) || strstr(list, quoted);
        bool ok = o->n == 1 && o->status[0] == 400 &&
                  (o->end == END_CLOSED || o->end == END_RESET) && !leaked;
        if (ok)
            continue;
        char d[256];
        describe(o, d, sizeof d);
        fprintf(stderr, "FAIL %-55s %-5s %-4s %-32s %s%s\n", k[i].fc->name,
                position_names[k[i].pos], routes[k[i].route].method, routes[k[i].route].path, d,
                leaked ? "; its body was acted on" : "");
        failed_by_case[k[i].case_index]++;
        failed++;
    }
    if (failed) {
        fprintf(stderr, "\nFailing combinations by case (of %d each):\n", NPOSITIONS * NROUTES);
        for (size_t c = 0; c < NBAD; c++)
            fprintf(stderr, "  %2d  %s\n", failed_by_case[c], bad_cases[c].name);
    }
    free(transcript);
    free(list);
    free(k);
    if (failed)
        fail_msg("%d of %zu exchanges were not one 400 and a close", failed, n);
}

/* A chunked body that grows past --max-body is refused as soon as it
 * does, while the client is still sending: the head and 2 KiB of chunks go
 * out, the last chunk never does. */
static void test_chunked_body_over_the_cap_is_refused_at_once(void **state)
{
    (void)state;
    static const enum route_id posts[] = {ROUTE_CHAT, ROUTE_INFER, ROUTE_REGISTER};
    char chunk[256 + 16];
    int clen = snprintf(chunk, sizeof chunk, "100\r\n");
    memset(chunk + clen, 'x', 256);
    memcpy(chunk + clen + 256, "\r\n", 2);
    clen += 258;
    int failed = 0;
    for (int p = 0; p < NPOSITIONS; p++) {
        for (size_t i = 0; i < sizeof posts / sizeof posts[0]; i++) {
            enum route_id r = posts[i];
            char head[1024];
            snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: mcpd\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                     routes[r].method, routes[r].path, F->env->mcpd.token);
            struct raw_conn c;
            assert_int_equal(raw_connect(&c, F->env->mcpd.port, 0), 0);
            if (p == LATER) {
                struct raw_resp hr;
                assert_int_equal(raw_send(&c, HEALTHZ, sizeof HEALTHZ - 1), 0);
                assert_int_equal(raw_read_response(&c, &hr, READ_MS), RAW_OK);
                assert_int_equal(hr.status, 200);
                raw_resp_free(&hr);
            }
            int64_t start = now_ms();
            bool sent = raw_send(&c, head, strlen(head)) == 0;
            for (int k = 0; k < 8 && sent; k++) /* 8 x 256 bytes */
                sent = raw_send(&c, chunk, (size_t)clen) == 0;
            struct raw_resp resp;
            enum raw_result rc = raw_read_response(&c, &resp, READ_MS);
            int64_t ms = now_ms() - start;
            int status = rc == RAW_OK ? resp.status : 0;
            if (rc == RAW_OK)
                raw_resp_free(&resp);
            raw_close(&c);
            /* libmicrohttpd can answer only before a body or after all of
             * it: mcpd closes the connection the moment the body passes the
             * cap rather than read the rest for a 413. */
            if (status == 413 || rc == RAW_CLOSED)
                continue;
            fprintf(stderr,
                    "FAIL %-5s %s %s: %s after %lld ms, want 413 or a close before the body ends\n",
                    position_names[p], routes[r].method, routes[r].path,
                    rc == RAW_OK        ? "answered"
                    : rc == RAW_TIMEOUT ? "no answer"
                                        : "closed without an answer",
                    (long long)ms);
            if (rc == RAW_OK)
                fprintf(stderr, "     (status %d)\n", status);
            failed++;
        }
    }
    if (failed)
        fail_msg("%d chunked uploads over the cap were not refused in time", failed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_formed_requests_are_served),
        cmocka_unit_test(test_ambiguous_framing_is_refused_and_closed),
        cmocka_unit_test(test_chunked_body_over_the_cap_is_refused_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
