/* Wake-on-demand, mcplocal's half, with the real binary between the fake
 * mcpd and fake backends: the initialStatus rule at publish time, HTTP and
 * command recipes through wake tasks (arguments passed literally, without a
 * shell), failures, the timeout, and heartbeats while polling.
 *
 * The command recipe runs this test binary itself as a helper:
 *   test_mcplocal_wake --wake-helper URL BODY   POSTs BODY to URL
 */
#include "fake_backend.h"
#include "fake_mcpd.h"
#include "http.h"
#include "proc.h"
#include "tmpdir.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 10000

static char self_exe[1024];

struct fx {
    char *dir;
    struct fake_mcpd *fm;
    struct fake_backend *asleep; /* down until its /wake is called */
    struct fake_backend *awake;
    struct proc *p;
};

/* Writes the files (providers is the inside of the providers array),
 * starts mcplocal and waits for its stream. */
static void start(struct fx *x, const char *providers)
{
    char text[4096];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"t\"}", fake_mcpd_url(x->fm));
    tmpdir_write(x->dir, "credentials", text, 0600);
    snprintf(text, sizeof text, "{\"llm\": {\"providers\": [%s]}}", providers);
    tmpdir_write(x->dir, "config.json", text, 0644);
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->dir, "--log-level", "debug", NULL};
    const char *env[] = {"MCPLOCAL_BACKOFF_MIN_MS=20",     "MCPLOCAL_BACKOFF_MAX_MS=200",
                         "MCPLOCAL_WAKE_POLL_FIRST_MS=50", "MCPLOCAL_WAKE_POLL_MS=100",
                         "MCPLOCAL_CHECK_TIMEOUT_MS=1000", NULL};
    x->p = proc_start(argv, env, x->dir);
    assert_non_null(x->p);
    if (fake_mcpd_wait_stream(x->fm, 1, WAIT_MS) != 0) {
        proc_dump(x->p);
        fail_msg("no stream");
    }
    proc_expect(x->p, "stream up", 1, WAIT_MS);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    *state = x;
    x->dir = tmpdir_create("mcplocal-wake");
    x->fm = fake_mcpd_start();
    x->asleep = fake_backend_start();
    x->awake = fake_backend_start();
    if (!x->fm || !x->asleep || !x->awake)
        return -1;
    fake_backend_set_asleep(x->asleep, true);
    /* Heartbeats only when something asks for one (the regular timer is
     * far away), so the ones we count come from wake polls. */
    fake_mcpd_set_intervals(x->fm, 600000, 20000);
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    assert_int_equal(proc_stop(x->p, WAIT_MS), 0);
    fake_mcpd_stop(x->fm);
    fake_backend_stop(x->asleep);
    fake_backend_stop(x->awake);
    tmpdir_remove(x->dir);
    free(x);
    return 0;
}

static json_t *result(struct fx *x, const char *id)
{
    char path[256];
    fake_mcpd_result_path(id, path, sizeof path);
    if (fake_mcpd_wait_count(x->fm, path, 1, WAIT_MS) != 0) {
        proc_dump(x->p);
        fail_msg("no result for %s", id);
    }
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, 0);
    json_t *j = json_loads(r->body, 0, NULL);
    fake_mcpd_req_free(r);
    assert_non_null(j);
    return j;
}

static void test_initial_status_rule(void **state)
{
    struct fx *x = *state;
    char providers[2048];
    snprintf(providers, sizeof providers,
             /* recipe + backend asleep: hibernating */
             "{\"name\": \"a-sleeping\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"http\", \"url\": \"%s\"}},\n"
             /* no recipe, backend asleep: active all the same */
             "{\"name\": \"b-norecipe\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true},\n"
             /* recipe + backend awake: active */
             "{\"name\": \"c-awake\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"command\", \"command\": \"/bin/true\"}}",
             fake_backend_url(x->asleep), fake_backend_wake_url(x->asleep),
             fake_backend_url(x->asleep), fake_backend_url(x->awake));
    start(x, providers);
    proc_expect(x->p,
                "published 3 providers as session sess-1: a-sleeping (hibernating), "
                "b-norecipe (active), c-awake (active)",
                1, WAIT_MS);
    struct fake_mcpd_req *reg = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-register", 0);
    json_t *body = json_loads(reg->body, 0, NULL);
    json_t *ps = json_object_get(body, "providers");
    static const char *const want[] = {"hibernating", "active", "active"};
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(ps, i), "initialStatus")), want[i]);
    json_decref(body);
    fake_mcpd_req_free(reg);
    /* Publishing does not wake anything. */
    assert_int_equal(fake_backend_count(x->asleep, "/wake"), 0);
}

static void test_http_recipe_wakes(void **state)
{
    struct fx *x = *state;
    fake_backend_set_wake(x->asleep, 200, 400);
    char providers[2048];
    snprintf(providers, sizeof providers,
             "{\"name\": \"sleepy\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"http\", \"url\": \"%s\","
             " \"headers\": {\"X-Token\": \"s3cret\"}, \"body\": \"{\\\"start\\\":1}\","
             " \"maxWaitSeconds\": 5}}",
             fake_backend_url(x->asleep), fake_backend_wake_url(x->asleep));
    start(x, providers);
    int hb_before = fake_mcpd_count(x->fm, "/api/v1/llms/_provider-heartbeat");
    assert_int_equal(fake_mcpd_push_wake(x->fm, "w1", "sleepy"), 0);
    json_t *r = result(x, "w1");
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_t *b = json_object_get(r, "body");
    assert_true(json_is_true(json_object_get(b, "ok")));
    assert_true(json_integer_value(json_object_get(b, "ms")) >= 400);
    json_decref(r);
    assert_int_equal(fake_backend_count(x->asleep, "/wake"), 1);
    char *tok = fake_backend_last_header(x->asleep, "/wake", "X-Token");
    assert_string_equal(tok, "s3cret");
    free(tok);
    char *body = fake_backend_last_body(x->asleep, "/wake");
    assert_string_equal(body, "{\"start\":1}");
    free(body);
    /* ~400 ms of polling every 100 ms, each poll heartbeating. */
    int hbs = fake_mcpd_count(x->fm, "/api/v1/llms/_provider-heartbeat") - hb_before;
    if (hbs < 3)
        fail_msg("only %d heartbeats while polling", hbs);
    proc_expect(x->p, "woke 'sleepy' in", 1, WAIT_MS);
}

static void test_command_recipe_literal_args(void **state)
{
    struct fx *x = *state;
    fake_backend_set_wake(x->asleep, 200, 100);
    /* Spaces, quotes and shell metacharacters: all must arrive verbatim. */
    static const char ARG[] = "a b; rm -rf / $(id) `id` | & > * ~ 'q' \\\"dq\\\"";
    static const char ARG_RAW[] = "a b; rm -rf / $(id) `id` | & > * ~ 'q' \"dq\"";
    char providers[8192];
    snprintf(providers, sizeof providers,
             "{\"name\": \"cmd\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"command\", \"command\": \"%s\","
             " \"args\": [\"--wake-helper\", \"%s\", \"%s\"], \"maxWaitSeconds\": 5}}",
             fake_backend_url(x->asleep), self_exe, fake_backend_wake_url(x->asleep), ARG);
    start(x, providers);
    assert_int_equal(fake_mcpd_push_wake(x->fm, "w2", "cmd"), 0);
    json_t *r = result(x, "w2");
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_decref(r);
    char *body = fake_backend_last_body(x->asleep, "/wake");
    assert_string_equal(body, ARG_RAW);
    free(body);
    /* The helper's output went to mcplocal's log. */
    proc_expect(x->p, "wake 'cmd': helper posted", 1, WAIT_MS);
}

static void test_command_recipe_fails(void **state)
{
    struct fx *x = *state;
    char providers[2048];
    snprintf(providers, sizeof providers,
             "{\"name\": \"bad\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"command\", \"command\": \"/bin/false\"}}",
             fake_backend_url(x->asleep));
    start(x, providers);
    assert_int_equal(fake_mcpd_push_wake(x->fm, "w3", "bad"), 0);
    json_t *r = result(x, "w3");
    assert_string_equal(json_string_value(json_object_get(r, "error")),
                        "wake command exited with status 1");
    json_decref(r);
    proc_expect(x->p, "wake 'bad' failed after", 1, WAIT_MS);
}

static void test_timeout(void **state)
{
    struct fx *x = *state;
    fake_backend_set_wake(x->asleep, 200, -1); /* accepts the wake, never comes up */
    char providers[2048];
    snprintf(providers, sizeof providers,
             "{\"name\": \"never\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"http\", \"url\": \"%s\","
             " \"maxWaitSeconds\": 0.6}}",
             fake_backend_url(x->asleep), fake_backend_wake_url(x->asleep));
    start(x, providers);
    assert_int_equal(fake_mcpd_push_wake(x->fm, "w4", "never"), 0);
    json_t *r = result(x, "w4");
    assert_string_equal(json_string_value(json_object_get(r, "error")),
                        "backend still unavailable after 0.6 s: GET /models answered 503");
    json_decref(r);
}

static void test_other_tasks_run_during_a_wake(void **state)
{
    struct fx *x = *state;
    fake_backend_set_wake(x->asleep, 200, 800);
    char providers[2048];
    snprintf(providers, sizeof providers,
             "{\"name\": \"sleepy\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true, \"wake\": {\"type\": \"http\", \"url\": \"%s\"}},"
             "{\"name\": \"busy\", \"type\": \"openai\", \"model\": \"m\", \"url\": \"%s\","
             " \"publish\": true}",
             fake_backend_url(x->asleep), fake_backend_wake_url(x->asleep),
             fake_backend_url(x->awake));
    start(x, providers);
    assert_int_equal(fake_mcpd_push_wake(x->fm, "w5", "sleepy"), 0);
    assert_int_equal(fake_backend_wait_count(x->asleep, "/wake", 1, WAIT_MS), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "i5", "busy", false,
                                          "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                     0);
    json_t *r = result(x, "i5");
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_decref(r);
    /* The infer answer came while the wake was still waiting. */
    char path[256];
    fake_mcpd_result_path("w5", path, sizeof path);
    assert_int_equal(fake_mcpd_count(x->fm, path), 0);
    r = result(x, "w5");
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_decref(r);
}

static int wake_helper(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    struct http_resp resp;
    int rc = http_do("POST", argv[2], NULL, NULL, argv[3], &resp);
    printf("helper posted %zu bytes: %ld\n", strlen(argv[3]), resp.status);
    int ok = rc == 0 && resp.status == 200;
    http_resp_free(&resp);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--wake-helper") == 0)
        return wake_helper(argc, argv);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_initial_status_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_recipe_wakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_recipe_literal_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_recipe_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_tasks_run_during_a_wake, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
