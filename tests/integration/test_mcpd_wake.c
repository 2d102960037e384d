/*
 * Wake-on-demand in mcpd, with the fake publisher: one wake shared by all
 * concurrent callers, failure → 503 for all and a fresh wake next time, the
 * held-caller cap (here 1), and the wake timeout apart from the inference timeout.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "test_env.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};
static const char PROVIDERS[] =
    "[{\"name\":\"sleepy\",\"type\":\"openai\",\"model\":\"q\",\"initialStatus\":\"hibernating\"}]";

static int start_with(void **state, const char *const args[])
{
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static int setup(void **state)
{
    return start_with(state, NULL);
}

static int setup_cap(void **state)
{
    const char *args[] = {"--max-held", "1", NULL};
    return start_with(state, args);
}

static int setup_wake_timeout(void **state)
{
    const char *args[] = {"--wake-timeout", "300ms", "--infer-timeout", "10m", NULL};
    return start_with(state, args);
}

static int teardown(void **state)
{
    assert_int_equal(fixture_stop(*state), 0);
    return 0;
}

struct caller {
    struct fixture *f;
    int i;
    long status;
    int matched;
    int retry_after;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    char body[128], want[64];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"w%d\"}]}", c->i);
    snprintf(want, sizeof want, "\"echo: w%d\"", c->i);
    struct http_resp r;
    test_call(c->f->env, "POST", "/api/v1/llms/sleepy/infer", c->f->env->mcpd.token, JSON_HDR, body,
              &r);
    c->status = r.status;
    c->matched = strstr(r.body, want) != NULL;
    char *ra = http_resp_header(&r, "Retry-After");
    c->retry_after = ra ? atoi(ra) : 0;
    free(ra);
    http_resp_free(&r);
    return NULL;
}

static void run_callers(struct fixture *f, struct caller *c, int n)
{
    pthread_t t[16];
    for (int i = 0; i < n; i++) {
        c[i] = (struct caller){.f = f, .i = i};
        pthread_create(&t[i], NULL, caller_main, &c[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

static void test_one_wake_for_five_callers(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .wake_delay_ms = 300};
    fake_publisher_set_script(f->fp, &s);
    char *st = test_llm_status(f->env, "sleepy");
    assert_string_equal(st, "hibernating");
    free(st);
    struct caller c[5];
    run_callers(f, c, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(c[i].status, 200);
        assert_true(c[i].matched);
    }
    char *t = fake_publisher_transcript(f->fp);
    int wakes = 0, infers = 0;
    for (char *p = strstr(t, "\"kind\":\"wake\""); p; p = strstr(p + 1, "\"kind\":\"wake\""))
        wakes++;
    for (char *p = strstr(t, "\"kind\":\"infer\""); p; p = strstr(p + 1, "\"kind\":\"infer\""))
        infers++;
    free(t);
    assert_int_equal(wakes, 1);
    assert_int_equal(infers, 5);
    st = test_llm_status(f->env, "sleepy");
    assert_string_equal(st, "active");
    free(st);
}

static void test_wake_failure_503_then_fresh_wake(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .wake_fail = 1, .wake_delay_ms = 200};
    fake_publisher_set_script(f->fp, &s);
    struct caller c[3];
    run_callers(f, c, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].status, 503);
        assert_true(c[i].retry_after > 0);
    }
    char *st = test_llm_status(f->env, "sleepy");
    assert_string_equal(st, "hibernating");
    free(st);
    /* the next call tries a new wake, which now works */
    s.wake_fail = 0;
    fake_publisher_set_script(f->fp, &s);
    run_callers(f, c, 1);
    assert_int_equal(c[0].status, 200);
    assert_int_equal(fake_publisher_wait(f->fp, "\"kind\":\"wake\"", 2, 1000), 0);
}

static void test_held_cap_overflow_503(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .wake_fail = 2}; /* the wake never answers */
    fake_publisher_set_script(f->fp, &s);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    char *url = mcpd_url(&f->env->mcpd, "/api/v1/llms/sleepy/infer");
    struct http_stream *a = http_stream_open("POST", url, f->env->mcpd.token, JSON_HDR, body);
    assert_int_equal(fake_publisher_wait(f->fp, "\"kind\":\"wake\"", 1, 5000), 0);
    /* the first caller is held (it started the wake); a second is over the cap */
    struct http_resp r;
    test_call(f->env, "POST", "/api/v1/llms/sleepy/infer", f->env->mcpd.token, JSON_HDR, body, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "too many callers"));
    char *ra = http_resp_header(&r, "Retry-After");
    assert_non_null(ra);
    free(ra);
    http_resp_free(&r);
    http_stream_close(a);
    free(url);
}

static void test_wake_timeout_is_its_own(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {.mode = FP_ANSWER, .wake_fail = 2};
    fake_publisher_set_script(f->fp, &s);
    struct caller c[1];
    run_callers(f, c, 1);
    /* 503 from the 300 ms wake timeout, not a 504 after the 10 min inference timeout */
    assert_int_equal(c[0].status, 503);
    assert_true(c[0].retry_after > 0);
    char *st = test_llm_status(f->env, "sleepy");
    assert_string_equal(st, "hibernating");
    free(st);
}

static void test_inactive_is_never_woken(void **state)
{
    struct fixture *f = *state;
    fake_publisher_drop(f->fp);
    assert_int_equal(test_wait_status(f->env, "sleepy", "inactive", 5000), 0);
    struct caller c[1];
    run_callers(f, c, 1);
    assert_int_equal(c[0].status, 503);
    char *t = fake_publisher_transcript(f->fp);
    assert_null(strstr(t, "\"kind\":\"wake\""));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_wake_for_five_callers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_failure_503_then_fresh_wake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_cap_overflow_503, setup_cap, teardown),
        cmocka_unit_test_setup_teardown(test_wake_timeout_is_its_own, setup_wake_timeout, teardown),
        cmocka_unit_test_setup_teardown(test_inactive_is_never_woken, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
