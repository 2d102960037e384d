/*
 * What an operator watches, end to end: GET /metrics parses with
 * Prometheus's own parser (promtool) and moves with traffic by exactly
 * what was sent; the access log has one line per request with the fields
 * the requests had; SIGHUP moves the log to a new file after a rotation;
 * the log goes to stderr by default and nowhere with --access-log off.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "promtext.h"
#include "test_env.h"
#include "tmpdir.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};
static const char PROVIDERS[] =
    "[{\"name\":\"llm1\",\"type\":\"openai\",\"model\":\"q\"},"
    "{\"name\":\"sleepy\",\"type\":\"openai\",\"model\":\"q\",\"initialStatus\":\"hibernating\"}]";
static const char CHAT[] =
    "{\"model\":\"llm1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char CHAT_STREAM[] = "{\"model\":\"llm1\",\"stream\":true,"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

#define WAIT_MS 20000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Between two looks at something that changes by itself. */
static void pause_briefly(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static long call(struct test_env *env, const char *method, const char *path, const char *body,
                 struct http_resp *out)
{
    struct http_resp r;
    struct http_resp *rp = out ? out : &r;
    test_call(env, method, path, env->mcpd.token, body ? JSON_HDR : NULL, body, rp);
    long status = rp->status;
    if (!out)
        http_resp_free(&r);
    return status;
}

/* ---- metrics ---- */

/* GET /metrics, checked by promtool; a new string. */
static char *scrape(struct test_env *env)
{
    struct http_resp r;
    test_call(env, "GET", "/metrics", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char *ctype = http_resp_header(&r, "Content-Type");
    assert_non_null(ctype);
    assert_string_equal(ctype, "text/plain; version=0.0.4; charset=utf-8");
    free(ctype);
    char *report = NULL;
    if (prom_check(r.body, &report) < 0)
        fail_msg("%s\n--- /metrics:\n%s", report, r.body);
    free(report);
    char *text = r.body;
    r.body = NULL;
    http_resp_free(&r);
    return text;
}

/* A sample's value; 0 when the series is not there yet. */
static double value(const char *text, const char *series)
{
    double v = prom_value(text, series);
    return v < 0 ? 0 : v;
}

/* Scrapes until series reaches want (requests are counted once their
 * response is out, a moment after the client has it all); it must then be
 * want exactly, unless at_least. */
static char *scrape_for(struct test_env *env, const char *series, double want, bool at_least)
{
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        char *text = scrape(env);
        double v = value(text, series);
        if (v >= want || now_ms() > deadline) {
            if (at_least ? v < want : v != want)
                fail_msg("%s is %g, want %g\n%s", series, v, want, text);
            return text;
        }
        free(text);
        pause_briefly();
    }
}

static char *scrape_until(struct test_env *env, const char *series, double want)
{
    return scrape_for(env, series, want, false);
}

#define RELAY(llm, route, status)                                                                  \
    "mcpd_relay_requests_total{llm=\"" llm "\",route=\"" route "\",status=\"" status "\"}"
#define INFER "/api/v1/llms/:name/infer"
#define CHAT_ROUTE "/v1/chat/completions"

static int setup_metrics(void **state)
{
    const char *args[] = {"--gc-interval", "50ms", NULL};
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    assert_int_equal(fixture_stop(*state), 0);
    return 0;
}

static void test_metrics_move_with_traffic(void **state)
{
    struct fixture *f = *state;
    struct test_env *env = f->env;
    enum { PLAIN = 5, STREAMS = 3, STREAMED_POSTS = 2, CHUNKS = 3 };
    char *before = scrape(env);
    assert_int_equal(value(before, "mcpd_build_info{version=\"" MCP_VERSION "\"}"), 1);
    assert_true(value(before, "process_start_time_seconds") > 1.7e9);
    assert_int_equal(value(before, "mcpd_control_streams_open"), 1);
    assert_int_equal(value(before, "mcpd_publisher_sessions{state=\"streaming\"}"), 1);
    assert_int_equal(value(before, "mcpd_llms{kind=\"virtual\",status=\"active\"}"), 1);
    assert_int_equal(value(before, "mcpd_llms{kind=\"virtual\",status=\"hibernating\"}"), 1);
    double infer0 = value(before, RELAY("llm1", INFER, "200"));
    double chat0 = value(before, RELAY("llm1", CHAT_ROUTE, "200"));
    double events0 = value(before, "mcpd_relay_stream_events_total");
    double dur_infer0 =
        prom_histogram_count(before, "mcpd_relay_duration_seconds", "route=\"" INFER "\"");
    double first_chat0 =
        prom_histogram_count(before, "mcpd_relay_first_byte_seconds", "route=\"" CHAT_ROUTE "\"");
    assert_true(dur_infer0 >= 0 && first_chat0 >= 0);

    struct fp_script script = {.mode = FP_ANSWER, .chunks = CHUNKS};
    fake_publisher_set_script(f->fp, &script);
    for (int i = 0; i < PLAIN; i++)
        assert_int_equal(call(env, "POST", "/api/v1/llms/llm1/infer", CHAT, NULL), 200);
    for (int i = 0; i < STREAMS; i++) {
        struct http_resp r;
        assert_int_equal(call(env, "POST", "/v1/chat/completions", CHAT_STREAM, &r), 200);
        assert_non_null(strstr(r.body, "data: [DONE]"));
        http_resp_free(&r);
    }
    script.mode = FP_STREAMED; /* each post: CHUNKS events and [DONE] */
    fake_publisher_set_script(f->fp, &script);
    for (int i = 0; i < STREAMED_POSTS; i++)
        assert_int_equal(call(env, "POST", "/v1/chat/completions", CHAT_STREAM, NULL), 200);
    assert_int_equal(
        call(env, "POST", "/v1/chat/completions", "{\"model\":\"nope\",\"messages\":[1]}", NULL),
        404);
    assert_int_equal(call(env, "POST", "/api/v1/llms/sleepy/infer", CHAT, NULL), 200);

    free(scrape_until(env, RELAY("llm1", CHAT_ROUTE, "200"), chat0 + STREAMS + STREAMED_POSTS));
    free(scrape_until(env, RELAY("sleepy", INFER, "200"), 1));
    char *t = scrape_until(env, RELAY("llm1", INFER, "200"), infer0 + PLAIN);
    /* exactly what was sent, nothing more */
    assert_int_equal(value(t, RELAY("llm1", INFER, "200")), infer0 + PLAIN);
    assert_int_equal(value(t, RELAY("llm1", CHAT_ROUTE, "200")), chat0 + STREAMS + STREAMED_POSTS);
    assert_int_equal(value(t, RELAY("_other", CHAT_ROUTE, "404")), 1);
    assert_int_equal(value(t, RELAY("sleepy", INFER, "200")), 1);
    assert_int_equal(value(t, "mcpd_http_requests_total{route=\"" INFER "\",status=\"200\"}"),
                     infer0 + PLAIN + 1);
    assert_int_equal(prom_histogram_count(t, "mcpd_relay_duration_seconds", "route=\"" INFER "\""),
                     dur_infer0 + PLAIN + 1);
    assert_int_equal(
        prom_histogram_count(t, "mcpd_relay_first_byte_seconds", "route=\"" INFER "\""),
        dur_infer0 + PLAIN + 1);
    assert_int_equal(
        prom_histogram_count(t, "mcpd_relay_first_byte_seconds", "route=\"" CHAT_ROUTE "\""),
        first_chat0 + STREAMS + STREAMED_POSTS + 1);
    assert_int_equal(
        prom_histogram_count(t, "mcpd_relay_duration_seconds", "route=\"" CHAT_ROUTE "\""),
        first_chat0 + STREAMS + STREAMED_POSTS + 1);
    assert_int_equal(value(t, "mcpd_relay_stream_events_total"),
                     events0 + STREAMS * CHUNKS + STREAMED_POSTS * (CHUNKS + 1));
    /* the wake of sleepy */
    assert_int_equal(value(t, "mcpd_wakes_total{outcome=\"ok\"}"), 1);
    assert_int_equal(value(t, "mcpd_wakes_total{outcome=\"error\"}"), 0);
    assert_int_equal(prom_histogram_count(t, "mcpd_wake_duration_seconds", "outcome=\"ok\""), 1);
    assert_int_equal(value(t, "mcpd_llms{kind=\"virtual\",status=\"active\"}"), 2);
    /* nothing is left in flight */
    assert_int_equal(value(t, "mcpd_tasks_in_flight{kind=\"infer\"}"), 0);
    assert_int_equal(value(t, "mcpd_tasks_in_flight{kind=\"wake\"}"), 0);
    assert_int_equal(value(t, "mcpd_callers_waiting"), 0);
    assert_true(value(t, "mcpd_http_connections_open") >= 2); /* the stream and this scrape */
    free(t);
    free(before);

    /* tokens the backend reports reach mcpd_tokens_total, by Llm and owner */
    script =
        (struct fp_script){.mode = FP_RAW,
                           .raw = "{\"status\":200,\"body\":{\"choices\":[],"
                                  "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":11}}}"};
    fake_publisher_set_script(f->fp, &script);
    assert_int_equal(call(env, "POST", "/api/v1/llms/llm1/infer", CHAT, NULL), 200);
    assert_int_equal(call(env, "POST", "/api/v1/llms/llm1/infer", CHAT, NULL), 200);
    t = scrape_until(env, "mcpd_tokens_total{llm=\"llm1\",owner=\"alice\",kind=\"prompt\"}", 14);
    assert_int_equal(
        value(t, "mcpd_tokens_total{llm=\"llm1\",owner=\"alice\",kind=\"completion\"}"), 22);
    free(t);

    /* the GC runs every 50 ms */
    t = scrape_for(env, "mcpd_gc_batches_total{result=\"ok\"}", 1, true);
    assert_true(prom_histogram_count(t, "mcpd_gc_batch_duration_seconds", "") >= 1);
    free(t);

    /* the publisher leaves: its stream closes and its rows go inactive */
    fake_publisher_drop(f->fp);
    t = scrape_until(env, "mcpd_llms{kind=\"virtual\",status=\"inactive\"}", 2);
    assert_int_equal(value(t, "mcpd_control_streams_open"), 0);
    assert_int_equal(value(t, "mcpd_publisher_sessions{state=\"streaming\"}"), 0);
    assert_int_equal(
        value(t,
              "mcpd_http_requests_total{route=\"/api/v1/llms/_provider-stream\",status=\"200\"}"),
        1);
    free(t);
}

/* ---- the access log ---- */

/* One logfmt line: up to 16 key=value pairs. */
struct logline {
    int n;
    char key[16][32];
    char val[16][512];
};

static int parse_logfmt(const char *line, struct logline *out)
{
    memset(out, 0, sizeof *out);
    const char *p = line;
    while (*p && *p != '\n') {
        if (out->n == 16)
            return -1;
        const char *eq = strchr(p, '=');
        if (!eq || eq - p >= 32 || eq == p)
            return -1;
        memcpy(out->key[out->n], p, (size_t)(eq - p));
        p = eq + 1;
        char *v = out->val[out->n];
        size_t k = 0;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (k < 511)
                    v[k++] = *p;
            }
            if (*p++ != '"')
                return -1;
        } else {
            while (*p && *p != ' ' && *p != '\n' && k < 511)
                v[k++] = *p++;
        }
        out->n++;
        if (*p == ' ')
            p++;
        else if (*p && *p != '\n')
            return -1;
    }
    return 0;
}

static const char *field(const struct logline *l, const char *key)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->key[i], key) == 0)
            return l->val[i];
    return NULL;
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return strdup("");
    char *text = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&text, &cap, '\0', fp);
    fclose(fp);
    if (n < 0) {
        free(text);
        return strdup("");
    }
    return text;
}

/* Waits until the file at path has count lines that hold needle; returns
 * its text. */
static char *wait_log(const char *path, const char *needle, int count)
{
    long long deadline = now_ms() + WAIT_MS;
    for (;;) {
        char *text = read_file(path);
        int n = 0;
        for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
            n++;
        if (n >= count)
            return text;
        if (now_ms() > deadline)
            fail_msg("'%s' has %d lines with '%s', want %d:\n%s", path, n, needle, count, text);
        free(text);
        pause_briefly();
    }
}

/* The nth (0-based) line of text with method and path, parsed. */
static void find_line(const char *text, const char *method, const char *path, int nth,
                      struct logline *out)
{
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        char one[4096];
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        assert_true(len < sizeof one);
        memcpy(one, line, len);
        one[len] = '\0';
        if (strncmp(one, "time=", 5) == 0) {
            if (parse_logfmt(one, out) < 0)
                fail_msg("not logfmt: %s", one);
            const char *m = field(out, "method"), *p = field(out, "path");
            if (m && p && strcmp(m, method) == 0 && strcmp(p, path) == 0 && nth-- == 0)
                return;
        }
        line = nl ? nl + 1 : NULL;
    }
    fail_msg("no line %d for %s %s in:\n%s", nth, method, path, text);
}

/* A line's fields, as the request had them. */
static void expect_line(const struct logline *l, const char *owner, const char *llm,
                        const char *status, size_t bytes, bool ttfb)
{
    char want_bytes[32];
    snprintf(want_bytes, sizeof want_bytes, "%zu", bytes);
    assert_non_null(field(l, "time"));
    assert_int_equal(strlen(field(l, "time")), 24); /* 2026-01-02T03:04:05.678Z */
    assert_int_equal(field(l, "time")[23], 'Z');
    assert_non_null(strstr(field(l, "remote"), "127.0.0.1:"));
    assert_string_equal(field(l, "owner"), owner);
    assert_string_equal(field(l, "llm"), llm);
    assert_string_equal(field(l, "status"), status);
    assert_string_equal(field(l, "bytes"), want_bytes);
    assert_non_null(field(l, "duration_ms"));
    assert_non_null(strchr(field(l, "duration_ms"), '.'));
    if (ttfb)
        assert_non_null(field(l, "ttfb_ms"));
    else
        assert_null(field(l, "ttfb_ms"));
}

static int setup_log(void **state)
{
    const char *args[] = {"--access-log", "access.log", NULL};
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static void test_access_log_lines(void **state)
{
    struct fixture *f = *state;
    struct test_env *env = f->env;
    char *path = tmpdir_path(env->dir, "access.log");
    struct http_resp list, plain, stream, denied, missing;
    assert_int_equal(call(env, "GET", "/api/v1/llms", NULL, &list), 200);
    assert_int_equal(call(env, "POST", "/api/v1/llms/llm1/infer", CHAT, &plain), 200);
    assert_int_equal(call(env, "POST", "/v1/chat/completions", CHAT_STREAM, &stream), 200);
    char *url = mcpd_url(&env->mcpd, "/api/v1/llms?token=secret-in-query");
    http_do("GET", url, NULL, NULL, NULL, &denied);
    free(url);
    assert_int_equal(denied.status, 401);
    assert_int_equal(call(env, "GET", "/api/v1/llms/no-such-llm", NULL, &missing), 404);

    char *text = wait_log(path, " path=/api/v1/llms/no-such-llm ", 1);
    free(text);
    text = wait_log(path, " path=/api/v1/llms ", 2);
    free(text);
    text = wait_log(path, " path=/v1/chat/completions ", 1);
    struct logline l;
    find_line(text, "GET", "/api/v1/llms", 0, &l);
    expect_line(&l, "alice", "-", "200", list.len, false);
    find_line(text, "GET", "/api/v1/llms", 1, &l);
    expect_line(&l, "-", "-", "401", denied.len, false);
    assert_null(strstr(text, "secret-in-query")); /* the query string stays out */
    find_line(text, "GET", "/api/v1/llms/no-such-llm", 0, &l);
    expect_line(&l, "alice", "-", "404", missing.len, false);
    find_line(text, "POST", "/api/v1/llms/llm1/infer", 0, &l);
    expect_line(&l, "alice", "llm1", "200", plain.len, false);
    find_line(text, "POST", "/v1/chat/completions", 0, &l);
    expect_line(&l, "alice", "llm1", "200", stream.len, true);
    assert_true(atof(field(&l, "ttfb_ms")) <= atof(field(&l, "duration_ms")));
    /* the publisher's own requests are there too */
    find_line(text, "POST", "/api/v1/llms/_provider-register", 0, &l);
    assert_string_equal(field(&l, "status"), "200");
    free(text);
    http_resp_free(&list);
    http_resp_free(&plain);
    http_resp_free(&stream);
    http_resp_free(&denied);
    http_resp_free(&missing);

    /* a caller that leaves before its answer: 499, as usage counts it */
    struct fp_script silent = {.mode = FP_SILENT};
    fake_publisher_set_script(f->fp, &silent);
    url = mcpd_url(&env->mcpd, "/api/v1/llms/llm1/infer");
    struct http_stream *gone = http_stream_open("POST", url, env->mcpd.token, JSON_HDR, CHAT);
    free(url);
    assert_int_equal(fake_publisher_wait(f->fp, "\"kind\":\"infer\"", 3, WAIT_MS), 0);
    http_stream_close(gone);
    text = wait_log(path, " path=/api/v1/llms/llm1/infer ", 2);
    find_line(text, "POST", "/api/v1/llms/llm1/infer", 1, &l);
    expect_line(&l, "alice", "llm1", "499", 0, false);
    assert_string_equal(field(&l, "end"), "client_gone");
    free(text);

    /* a control stream gets its line when it ends */
    fake_publisher_drop(f->fp);
    text = wait_log(path, " path=/api/v1/llms/_provider-stream ", 1);
    find_line(text, "GET", "/api/v1/llms/_provider-stream", 0, &l);
    assert_string_equal(field(&l, "owner"), "alice");
    assert_string_equal(field(&l, "status"), "200");
    assert_true(atoll(field(&l, "bytes")) > 0); /* hello and the task frames */
    assert_non_null(field(&l, "ttfb_ms"));
    assert_string_equal(field(&l, "end"), "client_gone"); /* the watch saw the peer leave */
    free(text);
    free(path);
}

/* ---- SIGHUP after a rotation ---- */

static void test_sighup_reopens_the_log(void **state)
{
    (void)state;
    const char *args[] = {"--access-log", "access.log", NULL};
    struct test_env *env = test_env_start(args);
    assert_non_null(env);
    char *path = tmpdir_path(env->dir, "access.log");
    char *rotated = tmpdir_path(env->dir, "access.log.1");
    assert_int_equal(call(env, "GET", "/api/v1/llms/before-rotation", NULL, NULL), 404);
    free(wait_log(path, " path=/api/v1/llms/before-rotation ", 1));

    assert_int_equal(rename(path, rotated), 0);
    assert_int_equal(proc_signal(env->mcpd.proc, SIGHUP), 0);
    proc_expect(env->mcpd.proc, "access log 'access.log' reopened", 1, WAIT_MS);
    assert_int_equal(call(env, "GET", "/api/v1/llms/after-rotation", NULL, NULL), 404);
    char *text = wait_log(path, " path=/api/v1/llms/after-rotation ", 1);
    assert_null(strstr(text, "before-rotation"));
    free(text);
    text = read_file(rotated);
    assert_non_null(strstr(text, " path=/api/v1/llms/before-rotation "));
    assert_null(strstr(text, "after-rotation"));
    free(text);
    /* SIGHUP leaves mcpd serving */
    assert_int_equal(call(env, "GET", "/healthz", NULL, NULL), 200);
    free(path);
    free(rotated);
    assert_int_equal(test_env_stop(env), 0);
}

/* ---- where the lines go ---- */

static void test_stderr_by_default_and_off(void **state)
{
    (void)state;
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    assert_int_equal(call(env, "GET", "/healthz", NULL, NULL), 200);
    proc_expect(env->mcpd.proc, " method=GET path=/healthz llm=- status=200 ", 1, WAIT_MS);
    assert_int_equal(test_env_stop(env), 0);

    const char *off[] = {"--access-log", "off", NULL};
    env = test_env_start(off);
    assert_non_null(env);
    assert_int_equal(call(env, "GET", "/healthz", NULL, NULL), 200);
    /* buffered lines are written before mcpd exits: once it has, the
     * transcript is complete */
    proc_signal(env->mcpd.proc, SIGTERM);
    assert_int_equal(proc_wait_exit(env->mcpd.proc, WAIT_MS), 0);
    char *log = proc_output(env->mcpd.proc);
    assert_null(strstr(log, "path="));
    free(log);
    test_env_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_move_with_traffic, setup_metrics, teardown),
        cmocka_unit_test_setup_teardown(test_access_log_lines, setup_log, teardown),
        cmocka_unit_test(test_sighup_reopens_the_log),
        cmocka_unit_test(test_stderr_by_default_and_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
