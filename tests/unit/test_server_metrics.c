/* The metrics registry: what each call counts, statuses folded into their
 * class, Llm names past the cap folded into one label value, histograms,
 * tokens with labels that need escapes, counting from many threads at
 * once, and an exposition that promtool accepts. */
#include "http.h"
#include "metrics.h"
#include "promtext.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct metrics_route routes[] = {
    {"unmatched", false},
    {"/healthz", false},
    {"/api/v1/llms/:name/infer", true},
    {"/v1/chat/completions", true},
};
enum { T_UNMATCHED, T_HEALTHZ, T_INFER, T_CHAT };

static char *render(struct metrics *m, const struct metrics_gauges *g)
{
    struct buf out;
    buf_init(&out, METRICS_TEXT_MAX);
    assert_int_equal(metrics_render(m, g, &out), 0);
    return buf_steal(&out);
}

/* Renders m and has promtool check the text. */
static char *render_checked(struct metrics *m)
{
    struct metrics_gauges g = {.llms_ok = true};
    char *text = render(m, &g);
    char *report = NULL;
    if (prom_check(text, &report) < 0)
        fail_msg("%s\n--- exposition:\n%s", report, text);
    free(report);
    return text;
}

static void request(struct metrics *m, unsigned route, const char *llm, unsigned status, int64_t us,
                    int64_t first_us)
{
    struct metrics_request rq = {
        .route = route, .llm = llm, .status = status, .duration_us = us, .first_byte_us = first_us};
    metrics_request(m, &rq);
}

static void test_requests(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(routes, 4);
    assert_non_null(m);
    request(m, T_HEALTHZ, NULL, 200, 10, 10);
    request(m, T_HEALTHZ, NULL, 200, 10, 10);
    request(m, T_UNMATCHED, NULL, 404, 10, 10);
    request(m, T_INFER, "llm1", 200, 400, 300);      /* 0.4 ms: le 0.0005 */
    request(m, T_INFER, "llm1", 200, 2000000, 1000); /* 2 s: le 2.5 */
    request(m, T_INFER, "llm1", 418, 1000, -1);      /* folds into 4xx */
    request(m, T_CHAT, "llm1", 0, 5000, -1);         /* no response */
    request(m, T_CHAT, NULL, 404, 100, 100);         /* no such Llm */
    request(m, T_CHAT, "llm-2", 299, 100, 100);      /* 2xx */
    request(m, T_CHAT, "llm-2", 700, 100, 100);      /* other */
    char *t = render_checked(m);
    assert_int_equal(prom_value(t, "mcpd_http_requests_total{route=\"/healthz\",status=\"200\"}"),
                     2);
    assert_int_equal(prom_value(t, "mcpd_http_requests_total{route=\"unmatched\",status=\"404\"}"),
                     1);
    assert_int_equal(
        prom_value(t,
                   "mcpd_http_requests_total{route=\"/api/v1/llms/:name/infer\",status=\"4xx\"}"),
        1);
    static const struct {
        const char *series;
        double want;
    } relay[] = {
        {"{llm=\"llm1\",route=\"/api/v1/llms/:name/infer\",status=\"200\"}", 2},
        {"{llm=\"llm1\",route=\"/api/v1/llms/:name/infer\",status=\"4xx\"}", 1},
        {"{llm=\"llm1\",route=\"/v1/chat/completions\",status=\"0\"}", 1},
        {"{llm=\"_other\",route=\"/v1/chat/completions\",status=\"404\"}", 1},
        {"{llm=\"llm-2\",route=\"/v1/chat/completions\",status=\"2xx\"}", 1},
        {"{llm=\"llm-2\",route=\"/v1/chat/completions\",status=\"other\"}", 1},
        {"{llm=\"llm1\",route=\"/v1/chat/completions\",status=\"200\"}", -1}, /* none */
    };
    for (size_t i = 0; i < sizeof relay / sizeof relay[0]; i++) {
        char series[256];
        snprintf(series, sizeof series, "mcpd_relay_requests_total%s", relay[i].series);
        assert_true(prom_value(t, series) == relay[i].want);
    }
    /* routes that are not relayed have no relay series */
    assert_null(strstr(t, "route=\"/healthz\",le="));
    static const char infer[] = "route=\"/api/v1/llms/:name/infer\"";
    assert_int_equal(prom_histogram_count(t, "mcpd_relay_duration_seconds", infer), 3);
    assert_int_equal(prom_histogram_count(t, "mcpd_relay_first_byte_seconds", infer), 2);
    assert_int_equal(prom_value(t, "mcpd_relay_duration_seconds_bucket{"
                                   "route=\"/api/v1/llms/:name/infer\""
                                   ",le=\"0.0005\"}"),
                     1);
    assert_int_equal(prom_value(t, "mcpd_relay_duration_seconds_bucket{"
                                   "route=\"/api/v1/llms/:name/infer\""
                                   ",le=\"1\"}"),
                     2);
    assert_int_equal(prom_value(t, "mcpd_relay_duration_seconds_bucket{"
                                   "route=\"/api/v1/llms/:name/infer\""
                                   ",le=\"2.5\"}"),
                     3);
    assert_true(prom_value(t, "mcpd_relay_duration_seconds_sum{"
                              "route=\"/api/v1/llms/:name/infer\"}") == 2.0014);
    assert_int_equal(
        prom_histogram_count(t, "mcpd_relay_duration_seconds", "route=\"/v1/chat/completions\""),
        4);
    free(t);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_llm_names_are_capped(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(routes, 4);
    char name[32];
    for (int i = 0; i < METRICS_LLM_MAX + 10; i++) {
        snprintf(name, sizeof name, "llm-%04d", i);
        request(m, T_CHAT, name, 200, 1, 1);
        request(m, T_CHAT, name, 200, 1, 1); /* found again, not added twice */
    }
    char *t = render_checked(m);
    assert_int_equal(
        prom_value(t, "mcpd_relay_requests_total{llm=\"llm-0000\",route=\"/v1/chat/completions\","
                      "status=\"200\"}"),
        2);
    snprintf(name, sizeof name, "llm-%04d", METRICS_LLM_MAX - 1);
    char series[256];
    snprintf(series, sizeof series,
             "mcpd_relay_requests_total{llm=\"%s\",route=\"/v1/chat/completions\","
             "status=\"200\"}",
             name);
    assert_int_equal(prom_value(t, series), 2);
    snprintf(name, sizeof name, "llm-%04d", METRICS_LLM_MAX);
    assert_null(strstr(t, name));
    assert_int_equal(prom_value(t, "mcpd_relay_requests_total{llm=\"_other\",route=\"/v1/chat/"
                                   "completions\",status=\"200\"}"),
                     20);
    free(t);
    metrics_free(m);
}

static void test_wakes_gc_tokens_and_gauges(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(routes, 4);
    metrics_wake(m, BROKER_WAKE_OK, 1200);
    metrics_wake(m, BROKER_WAKE_OK, 40);
    metrics_wake(m, BROKER_WAKE_TIMEOUT, 120000);
    metrics_gc_batch(m, true, 3, 250, 800);
    metrics_gc_batch(m, false, 0, 0, 20);
    metrics_stream_events(m, 7);
    metrics_add_tokens(m, "llm1", "alice", 10, 25);
    metrics_add_tokens(m, "llm1", "alice", 1, 0);
    metrics_add_tokens(m, "llm1", "team \"a\\b\"\nx", 0, 4);
    struct metrics_gauges g = {
        .broker = {.sessions = 5,
                   .live_sessions = 3,
                   .streams = 4,
                   .tasks = 7,
                   .wakes = 2,
                   .calls = 9,
                   .held = 1,
                   .overflows = 6},
        .llms = {{1, 0, 0}, {3, 2, 1}},
        .llms_ok = true,
        .connections_open = 12,
        .connections_max = 1000,
        .access_log_errors = 2,
    };
    char *t = render(m, &g);
    char *report = NULL;
    if (prom_check(t, &report) < 0)
        fail_msg("%s\n%s", report, t);
    free(report);
    assert_int_equal(prom_value(t, "mcpd_wakes_total{outcome=\"ok\"}"), 2);
    assert_int_equal(prom_value(t, "mcpd_wakes_total{outcome=\"timeout\"}"), 1);
    assert_int_equal(prom_value(t, "mcpd_wakes_total{outcome=\"disconnected\"}"), 0);
    assert_int_equal(prom_histogram_count(t, "mcpd_wake_duration_seconds", "outcome=\"ok\""), 2);
    assert_int_equal(prom_value(t, "mcpd_wake_duration_seconds_bucket{outcome=\"ok\",le=\"0.05\"}"),
                     1);
    assert_int_equal(prom_value(t, "mcpd_gc_batches_total{result=\"ok\"}"), 1);
    assert_int_equal(prom_value(t, "mcpd_gc_batches_total{result=\"error\"}"), 1);
    assert_int_equal(prom_value(t, "mcpd_gc_rows_total{action=\"deleted\"}"), 250);
    assert_int_equal(prom_value(t, "mcpd_gc_rows_total{action=\"inactivated\"}"), 3);
    assert_int_equal(prom_histogram_count(t, "mcpd_gc_batch_duration_seconds", ""), 2);
    assert_int_equal(prom_value(t, "mcpd_relay_stream_events_total"), 7);
    assert_int_equal(
        prom_value(t, "mcpd_tokens_total{llm=\"llm1\",owner=\"alice\",kind=\"prompt\"}"), 11);
    assert_int_equal(
        prom_value(t, "mcpd_tokens_total{llm=\"llm1\",owner=\"alice\",kind=\"completion\"}"), 25);
    assert_int_equal(prom_value(t,
                                "mcpd_tokens_total{llm=\"llm1\",owner=\"team \\\"a\\\\b\\\"\\nx\","
                                "kind=\"completion\"}"),
                     4);
    assert_int_equal(prom_value(t, "mcpd_publisher_sessions{state=\"streaming\"}"), 3);
    assert_int_equal(prom_value(t, "mcpd_publisher_sessions{state=\"idle\"}"), 2);
    assert_int_equal(prom_value(t, "mcpd_llms{kind=\"virtual\",status=\"inactive\"}"), 2);
    assert_int_equal(prom_value(t, "mcpd_llms{kind=\"public\",status=\"active\"}"), 1);
    assert_int_equal(prom_value(t, "mcpd_tasks_in_flight{kind=\"infer\"}"), 5);
    assert_int_equal(prom_value(t, "mcpd_tasks_in_flight{kind=\"wake\"}"), 2);
    assert_int_equal(prom_value(t, "mcpd_control_streams_open"), 4);
    assert_int_equal(prom_value(t, "mcpd_control_streams_cut_total"), 6);
    assert_int_equal(prom_value(t, "mcpd_callers_waiting"), 9);
    assert_int_equal(prom_value(t, "mcpd_callers_held"), 1);
    assert_int_equal(prom_value(t, "mcpd_http_connections_open"), 12);
    assert_int_equal(prom_value(t, "mcpd_access_log_write_errors_total"), 2);
    assert_int_equal(prom_value(t, "mcpd_build_info{version=\"" MCP_VERSION "\"}"), 1);
    assert_true(prom_value(t, "process_start_time_seconds") > 1.7e9);
    free(t);

    /* the database did not answer: no Llm gauges rather than zeros */
    g.llms_ok = false;
    t = render(m, &g);
    assert_null(strstr(t, "mcpd_llms"));
    free(t);
    metrics_free(m);
}

static void test_token_series_are_capped(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(routes, 4);
    char owner[32];
    for (int i = 0; i < METRICS_TOKEN_SERIES_MAX + 3; i++) {
        snprintf(owner, sizeof owner, "owner-%d", i);
        metrics_add_tokens(m, "llm1", owner, 1, 2);
    }
    char long_owner[300];
    memset(long_owner, 'o', sizeof long_owner - 1);
    long_owner[sizeof long_owner - 1] = '\0';
    metrics_add_tokens(m, "llm1", long_owner, 1, 0); /* too long for a key: folded */
    char *t = render_checked(m);
    assert_int_equal(
        prom_value(t, "mcpd_tokens_total{llm=\"_other\",owner=\"_other\",kind=\"prompt\"}"), 4);
    assert_int_equal(
        prom_value(t, "mcpd_tokens_total{llm=\"_other\",owner=\"_other\",kind=\"completion\"}"), 6);
    assert_int_equal(
        prom_value(t, "mcpd_tokens_total{llm=\"llm1\",owner=\"owner-0\",kind=\"completion\"}"), 2);
    free(t);
    metrics_free(m);
}

/* ---- many threads at once ---- */

#define THREADS 4
#define PER_THREAD 20000
#define NAMES 16

static void *hammer(void *arg)
{
    struct metrics *m = arg;
    char name[16];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(name, sizeof name, "llm-%d", i % NAMES); /* first seen by every thread at once */
        request(m, (i / NAMES) % 2 ? T_CHAT : T_INFER, name, 200, i, i);
        metrics_add_tokens(m, name, "alice", 1, 1);
        metrics_stream_events(m, 1);
    }
    return NULL;
}

static void test_concurrent_counting(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(routes, 4);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, m), 0);
    /* scrapes meanwhile see whole series */
    for (int i = 0; i < 20; i++) {
        struct metrics_gauges g = {0};
        free(render(m, &g));
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *t = render_checked(m);
    for (int k = 0; k < NAMES; k++) {
        char series[256];
        snprintf(series, sizeof series,
                 "mcpd_relay_requests_total{llm=\"llm-%d\",route=\"/v1/chat/completions\","
                 "status=\"200\"}",
                 k);
        assert_int_equal(prom_value(t, series), THREADS * PER_THREAD / NAMES / 2);
        snprintf(series, sizeof series,
                 "mcpd_tokens_total{llm=\"llm-%d\",owner=\"alice\",kind=\"prompt\"}", k);
        assert_int_equal(prom_value(t, series), THREADS * PER_THREAD / NAMES);
    }
    assert_null(strstr(t, "llm=\"_other\",route=\"/v1/chat/completions\",status=\"200\""));
    assert_int_equal(prom_value(t, "mcpd_relay_stream_events_total"), THREADS * PER_THREAD);
    assert_int_equal(
        prom_histogram_count(t, "mcpd_relay_duration_seconds", "route=\"/v1/chat/completions\""),
        THREADS * PER_THREAD / 2);
    free(t);
    metrics_free(m);
}

/* mcpd's own routes: each has a label of its own (a route added to
 * enum route without one would stop mcpd at start). */
static void test_http_routes_have_labels(void **state)
{
    (void)state;
    for (int i = 0; i < R_COUNT; i++) {
        if (!http_routes[i].label)
            fail_msg("route %d has no label in http_routes", i);
        for (int k = 0; k < i; k++)
            assert_string_not_equal(http_routes[i].label, http_routes[k].label);
    }
    struct metrics *m = metrics_new(http_routes, R_COUNT);
    assert_non_null(m);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_routes_have_labels),
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_llm_names_are_capped),
        cmocka_unit_test(test_wakes_gc_tokens_and_gauges),
        cmocka_unit_test(test_token_series_are_capped),
        cmocka_unit_test(test_concurrent_counting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
