/*
 * Pools end to end, with fake publishers that each publish one member of
 * the pool "qwen": 300 calls spread fairly over three equal members; a
 * slow member gets fewer; a member killed in the middle of a run costs no
 * caller anything, nor does one that fails every task before its first
 * byte; a pool whose members all sleep is woken once; the members route,
 * /v1/models and the 409 for a pool named like another Llm.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "promtext.h"
#include "test_env.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MEMBERS 3
#define CALLERS 12
#define WAIT_MS 10000

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

struct pool_fx {
    struct test_env *env;
    struct fake_publisher *fp[MEMBERS];
};

/* Publisher i registers "qwen-<i+1>" in pool "qwen", with status. */
static struct fake_publisher *member_start(struct pool_fx *f, int i, const char *status)
{
    char providers[256];
    snprintf(providers, sizeof providers,
             "[{\"name\":\"qwen-%d\",\"type\":\"openai\",\"model\":\"q\",\"poolName\":\"qwen\","
             "\"initialStatus\":\"%s\"}]",
             i + 1, status);
    return fake_publisher_start(f->env->mcpd.url, f->env->mcpd.token, providers, NULL);
}

static int start_pool(void **state, const char *status)
{
    struct pool_fx *f = calloc(1, sizeof *f);
    f->env = test_env_start(NULL);
    if (!f->env) {
        free(f);
        return -1;
    }
    *state = f;
    for (int i = 0; i < MEMBERS; i++)
        if (!(f->fp[i] = member_start(f, i, status)))
            return -1;
    return 0;
}

static int setup(void **state)
{
    return start_pool(state, "active");
}

static int setup_asleep(void **state)
{
    return start_pool(state, "hibernating");
}

static int teardown(void **state)
{
    struct pool_fx *f = *state;
    for (int i = 0; i < MEMBERS; i++)
        fake_publisher_stop(f->fp[i]);
    assert_int_equal(test_env_stop(f->env), 0);
    free(f);
    return 0;
}

/* How many tasks of kind publisher i was sent. */
static int tasks_of(struct pool_fx *f, int i, const char *kind)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"kind\":\"%s\"", kind);
    char *t = fake_publisher_transcript(f->fp[i]);
    int n = 0;
    for (char *p = strstr(t, needle); p; p = strstr(p + 1, needle))
        n++;
    free(t);
    return n;
}

static int infers(struct pool_fx *f, int i)
{
    return tasks_of(f, i, "infer");
}

static int wakes(struct pool_fx *f, int i)
{
    return tasks_of(f, i, "wake");
}

/* GET /metrics, checked by promtool; the caller frees it. */
static char *scrape(struct pool_fx *f)
{
    struct http_resp r;
    test_call(f->env, "GET", "/metrics", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char *report = NULL;
    if (prom_check(r.body, &report) != 0)
        fail_msg("promtool refused /metrics: %s", report ? report : "");
    free(report);
    char *text = strdup(r.body);
    http_resp_free(&r);
    return text;
}

/* A pool member's counter in the metrics text. */
static double member_metric(const char *text, const char *name, int i)
{
    char series[160];
    snprintf(series, sizeof series, "%s{pool=\"qwen\",llm=\"qwen-%d\"}", name, i + 1);
    return prom_value(text, series);
}

static void script_all(struct pool_fx *f, const struct fp_script *s)
{
    for (int i = 0; i < MEMBERS; i++)
        fake_publisher_set_script(f->fp[i], s);
}

/* ---- callers ---- */

struct run {
    struct pool_fx *f;
    int calls;        /* in all */
    bool streaming;   /* every other call streams */
    const char *path; /* NULL: /v1/chat/completions with model "qwen" */
    atomic_int next;  /* the next call to make */
    atomic_int done;  /* calls answered */
    atomic_int failed;
    bool allow_cut; /* a stream cut off after its first byte is no failure */
    atomic_int cut; /* ... and how many were */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast at every answer */
    char first_failure[512];
};

static void note_failure(struct run *run, int i, long status, const char *body)
{
    atomic_fetch_add(&run->failed, 1);
    pthread_mutex_lock(&run->mu);
    if (!run->first_failure[0])
        snprintf(run->first_failure, sizeof run->first_failure, "call %d: %ld %.400s", i, status,
                 body);
    pthread_mutex_unlock(&run->mu);
}

/* One call; its answer must be its own: the echo of its content, or a
 * whole stream. */
static void one_call(struct run *run, int i)
{
    bool stream = run->streaming && i % 2;
    char body[256], want[64];
    snprintf(body, sizeof body,
             "{\"model\":\"qwen\",\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"c%d\"}]}",
             stream ? "true" : "false", i);
    snprintf(want, sizeof want, stream ? "data: [DONE]" : "\"echo: c%d\"", i);
    struct http_resp r;
    test_call(run->f->env, "POST", run->path ? run->path : "/v1/chat/completions",
              run->f->env->mcpd.token, JSON_HDR, body, &r);
    const char *error = strstr(r.body, "event: error");
    bool cut = stream && r.status == 200 && error && strncmp(r.body, "data: {", 7) == 0;
    if (cut && run->allow_cut)
        atomic_fetch_add(&run->cut, 1);
    else if (r.status != 200 || !strstr(r.body, want) || error)
        note_failure(run, i, r.status, r.body);
    http_resp_free(&r);
    pthread_mutex_lock(&run->mu);
    atomic_fetch_add(&run->done, 1);
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
}

/* Waits until n calls are answered. */
static void wait_answered(struct run *run, int n)
{
    pthread_mutex_lock(&run->mu);
    while (atomic_load(&run->done) < n)
        pthread_cond_wait(&run->cv, &run->mu);
    pthread_mutex_unlock(&run->mu);
}

static void *caller_main(void *arg)
{
    struct run *run = arg;
    for (int i; (i = atomic_fetch_add(&run->next, 1)) < run->calls;)
        one_call(run, i);
    return NULL;
}

struct callers {
    pthread_t t[CALLERS];
    struct run run;
};

static void callers_start(struct callers *c, struct pool_fx *f, int calls, bool streaming,
                          bool allow_cut)
{
    memset(&c->run, 0, sizeof c->run);
    c->run.f = f;
    c->run.allow_cut = allow_cut;
    c->run.calls = calls;
    c->run.streaming = streaming;
    pthread_mutex_init(&c->run.mu, NULL);
    pthread_cond_init(&c->run.cv, NULL);
    for (int i = 0; i < CALLERS; i++)
        pthread_create(&c->t[i], NULL, caller_main, &c->run);
}

/* Waits for every caller; fails the test when any call failed. */
static void callers_finish(struct callers *c)
{
    for (int i = 0; i < CALLERS; i++)
        pthread_join(c->t[i], NULL);
    pthread_mutex_destroy(&c->run.mu);
    pthread_cond_destroy(&c->run.cv);
    if (atomic_load(&c->run.failed))
        fail_msg("%d of %d calls failed; the first: %s", atomic_load(&c->run.failed), c->run.calls,
                 c->run.first_failure);
}

/* ---- the choice ---- */

static void test_fair_share(void **state)
{
    struct pool_fx *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .delay_ms = 5, .chunks = 2};
    script_all(f, &s);
    struct callers c;
    callers_start(&c, f, 300, true, false);
    callers_finish(&c);
    int total = 0;
    for (int i = 0; i < MEMBERS; i++) {
        int n = infers(f, i);
        print_message("qwen-%d served %d\n", i + 1, n);
        assert_in_range(n, 80, 120); /* a fair share of 300 is 100 */
        total += n;
    }
    assert_int_equal(total, 300);
    /* the metrics count each member's calls */
    char *text = scrape(f);
    for (int i = 0; i < MEMBERS; i++) {
        assert_int_equal((int)member_metric(text, "mcpd_pool_member_requests_total", i),
                         infers(f, i));
        assert_int_equal((int)member_metric(text, "mcpd_pool_member_failovers_total", i), 0);
    }
    free(text);
}

static void test_slow_member_gets_fewer(void **state)
{
    struct pool_fx *f = *state;
    struct fp_script fast = {.mode = FP_ANSWER, .delay_ms = 5};
    struct fp_script slow = {.mode = FP_ANSWER, .delay_ms = 200};
    fake_publisher_set_script(f->fp[0], &slow);
    fake_publisher_set_script(f->fp[1], &fast);
    fake_publisher_set_script(f->fp[2], &fast);
    struct callers c;
    callers_start(&c, f, 240, false, false);
    callers_finish(&c);
    int n[MEMBERS];
    for (int i = 0; i < MEMBERS; i++) {
        n[i] = infers(f, i);
        print_message("qwen-%d served %d\n", i + 1, n[i]);
    }
    assert_int_equal(n[0] + n[1] + n[2], 240);
    assert_true(n[0] * 2 < n[1]);
    assert_true(n[0] * 2 < n[2]);
}

/* ---- failover ---- */

/* A member stops (its control stream closes) in the middle of a run of
 * non-streaming and streaming calls: its tasks in flight whose callers had
 * no byte yet go to the other members, and those callers notice nothing;
 * only a stream it had begun ends with an error event. */
static void test_member_killed_mid_run(void **state)
{
    struct pool_fx *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .delay_ms = 30, .chunks = 1};
    script_all(f, &s);
    struct callers c;
    callers_start(&c, f, 300, true, true);
    wait_answered(&c.run, 100); /* a third of the run behind, every member busy */
    fake_publisher_drop(f->fp[1]);
    callers_finish(&c);
    assert_int_equal(test_wait_status(f->env, "qwen-2", "inactive", WAIT_MS), 0);
    int served_after = infers(f, 0) + infers(f, 2);
    print_message("the killed member was sent %d, the others %d; %d stream(s) cut after their "
                  "first byte\n",
                  infers(f, 1), served_after, atomic_load(&c.run.cut));
    assert_true(atomic_load(&c.run.cut) <= CALLERS);
    assert_true(served_after >= 200);
}

/* A member whose backend is unreachable (its publisher posts {"error"})
 * before the first byte: the other member answers; its caller sees 200. */
static void test_failing_member_fails_over(void **state)
{
    struct pool_fx *f = *state;
    struct fp_script bad = {.mode = FP_ERROR};
    struct fp_script good = {.mode = FP_ANSWER};
    fake_publisher_set_script(f->fp[0], &bad);
    fake_publisher_set_script(f->fp[1], &good);
    fake_publisher_stop(f->fp[2]);
    f->fp[2] = NULL;
    assert_int_equal(test_wait_status(f->env, "qwen-3", "inactive", WAIT_MS), 0);
    struct callers c;
    callers_start(&c, f, 60, true, false);
    callers_finish(&c);
    assert_true(infers(f, 0) > 0); /* it was tried, and its calls went on to qwen-2 */
    assert_int_equal(infers(f, 1), 60);
    /* every call qwen-1 was sent failed over */
    char *text = scrape(f);
    assert_int_equal((int)member_metric(text, "mcpd_pool_member_requests_total", 0), infers(f, 0));
    assert_int_equal((int)member_metric(text, "mcpd_pool_member_failovers_total", 0), infers(f, 0));
    assert_int_equal((int)member_metric(text, "mcpd_pool_member_failovers_total", 1), 0);
    free(text);
    /* a streaming call that meets a publisher dropping before its first
     * chunk is served too */
    struct fp_script drop = {.mode = FP_DROP, .drop_after = 0};
    fake_publisher_set_script(f->fp[0], &drop);
    callers_start(&c, f, 20, true, false);
    callers_finish(&c);
}

/* The backend's own answers are not retried: a 503 of the backend reaches
 * the caller. */
static void test_backend_answer_not_retried(void **state)
{
    struct pool_fx *f = *state;
    struct fp_script busy = {.mode = FP_STATUS, .status = 503};
    script_all(f, &busy);
    struct http_resp r;
    test_call(f->env, "POST", "/v1/chat/completions", f->env->mcpd.token, JSON_HDR,
              "{\"model\":\"qwen\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "backend said no"));
    http_resp_free(&r);
    assert_int_equal(infers(f, 0) + infers(f, 1) + infers(f, 2), 1);
}

/* ---- wakes ---- */

static void test_all_asleep_one_wake(void **state)
{
    struct pool_fx *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .wake_delay_ms = 300};
    script_all(f, &s);
    struct callers c;
    callers_start(&c, f, 24, false, false);
    callers_finish(&c);
    int woken = -1, n = 0;
    for (int i = 0; i < MEMBERS; i++) {
        n += wakes(f, i);
        if (wakes(f, i))
            woken = i;
    }
    assert_int_equal(n, 1);
    assert_int_equal(infers(f, woken), 24);
    char name[16];
    for (int i = 0; i < MEMBERS; i++) {
        snprintf(name, sizeof name, "qwen-%d", i + 1);
        char *st = test_llm_status(f->env, name);
        assert_string_equal(st, i == woken ? "active" : "hibernating");
        free(st);
    }
}

/* ---- reading pools ---- */

static json_t *get_json(struct pool_fx *f, const char *path, long want)
{
    struct http_resp r;
    test_call(f->env, "GET", path, f->env->mcpd.token, NULL, NULL, &r);
    assert_int_equal(r.status, want);
    json_t *v = json_loads(r.body, 0, NULL);
    assert_non_null(v);
    http_resp_free(&r);
    return v;
}

static void test_members_route(void **state)
{
    struct pool_fx *f = *state;
    fake_publisher_stop(f->fp[2]);
    f->fp[2] = NULL;
    assert_int_equal(test_wait_status(f->env, "qwen-3", "inactive", WAIT_MS), 0);
    static const char *const paths[] = {"/api/v1/llms/qwen/members", "/api/v1/llms/qwen-2/members"};
    for (size_t k = 0; k < 2; k++) {
        json_t *v = get_json(f, paths[k], 200);
        assert_string_equal(json_string_value(json_object_get(v, "pool")), "qwen");
        assert_int_equal(json_integer_value(json_object_get(v, "size")), 3);
        assert_int_equal(json_integer_value(json_object_get(v, "activeCount")), 2);
        json_t *m = json_object_get(v, "members");
        assert_int_equal(json_array_size(m), 3);
        for (size_t i = 0; i < 3; i++) {
            json_t *row = json_array_get(m, i);
            char name[16];
            snprintf(name, sizeof name, "qwen-%zu", i + 1);
            assert_string_equal(json_string_value(json_object_get(row, "name")), name);
            assert_string_equal(json_string_value(json_object_get(row, "poolName")), "qwen");
            assert_string_equal(json_string_value(json_object_get(row, "status")),
                                i == 2 ? "inactive" : "active");
        }
        json_decref(v);
    }
    long st;
    char *sid = test_register(f->env, f->env->mcpd.token, NULL,
                              "[{\"name\":\"lone\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_non_null(sid);
    free(sid);
    json_decref(get_json(f, "/api/v1/llms/lone/members", 404));
    json_decref(get_json(f, "/api/v1/llms/nothing/members", 404));
    /* calls through the infer route name the pool or a member alike */
    static const char *const infer[] = {"/api/v1/llms/qwen/infer", "/api/v1/llms/qwen-3/infer"};
    for (size_t k = 0; k < 2; k++) {
        struct http_resp r;
        test_call(f->env, "POST", infer[k], f->env->mcpd.token, JSON_HDR,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"m\"}]}", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "echo: m"));
        http_resp_free(&r);
    }
}

static void test_models_list_pool_once(void **state)
{
    struct pool_fx *f = *state;
    json_t *v = get_json(f, "/v1/models", 200);
    json_t *data = json_object_get(v, "data");
    int pools = 0, members = 0;
    const char *prev = "";
    for (size_t i = 0; i < json_array_size(data); i++) {
        json_t *m = json_array_get(data, i);
        const char *id = json_string_value(json_object_get(m, "id"));
        assert_true(strcmp(prev, id) < 0); /* sorted, each id once */
        prev = id;
        if (strcmp(id, "qwen") == 0) {
            pools++;
            assert_string_equal(json_string_value(json_object_get(m, "kind")), "pool");
            assert_string_equal(json_string_value(json_object_get(m, "status")), "active");
            assert_int_equal(json_array_size(json_object_get(m, "members")), 3);
        } else {
            members++;
            assert_string_equal(json_string_value(json_object_get(m, "pool")), "qwen");
        }
    }
    assert_int_equal(pools, 1);
    assert_int_equal(members, 3);
    json_decref(v);
    v = get_json(f, "/v1/models/qwen", 200);
    assert_string_equal(json_string_value(json_object_get(v, "kind")), "pool");
    json_decref(v);
}

static void test_pool_name_conflicts(void **state)
{
    struct pool_fx *f = *state;
    static const char *const refused[] = {
        /* a lone Llm named like the pool */
        "[{\"name\":\"qwen\",\"type\":\"openai\",\"model\":\"q\"}]",
        /* a pool named like an Llm of that pool */
        "[{\"name\":\"x\",\"type\":\"openai\",\"model\":\"q\",\"poolName\":\"qwen-1\"}]",
    };
    static const char *const names[] = {"qwen", "qwen-1"};
    for (size_t i = 0; i < 2; i++) {
        struct http_resp r;
        char body[512];
        snprintf(body, sizeof body, "{\"providers\":%s}", refused[i]);
        test_call(f->env, "POST", "/api/v1/llms/_provider-register", f->env->mcpd.token, JSON_HDR,
                  body, &r);
        assert_int_equal(r.status, 409);
        json_t *o = json_loads(r.body, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(o, "name")), names[i]);
        json_decref(o);
        http_resp_free(&r);
    }
    /* a member may carry its pool's name */
    long st;
    char *sid = test_register(
        f->env, f->env->mcpd.token, NULL,
        "[{\"name\":\"qwen\",\"type\":\"openai\",\"model\":\"q\",\"poolName\":\"qwen\"}]", &st);
    assert_int_equal(st, 200);
    free(sid);
    long bad;
    free(test_register(f->env, f->env->mcpd.token, NULL,
                       "[{\"name\":\"y\",\"type\":\"openai\",\"model\":\"q\",\"poolName\":\"no "
                       "spaces\"}]",
                       &bad));
    assert_int_equal(bad, 400);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fair_share),
        T(test_slow_member_gets_fewer),
        T(test_member_killed_mid_run),
        T(test_failing_member_fails_over),
        T(test_backend_answer_not_retried),
        cmocka_unit_test_setup_teardown(test_all_asleep_one_wake, setup_asleep, teardown),
        T(test_members_route),
        T(test_models_list_pool_once),
        T(test_pool_name_conflicts),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
