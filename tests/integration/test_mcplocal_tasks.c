/* mcplocal (the real binary) between the fake mcpd and the fake OpenAI
 * backend: infer tasks non-streaming and streaming (one post per token, in
 * order, as they arrive), backend failures, cancel and 410 aborting the
 * upstream call, many tasks at once, and SIGTERM with tasks in flight. */
#include "clock.h"
#include "fake_backend.h"
#include "fake_mcpd.h"
#include "proc.h"
#include "tmpdir.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 10000

struct fx {
    char *dir;
    struct fake_mcpd *fm;
    struct fake_backend *fb;
    struct proc *p;
};

static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t n = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &n);
    close(s);
    return ntohs(a.sin_port);
}

/* Starts mcplocal publishing "local" (the fake backend, with an API key)
 * and "down" (a closed port), and waits for its stream. */
static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    *state = x;
    x->dir = tmpdir_create("mcplocal-tasks");
    x->fm = fake_mcpd_start();
    x->fb = fake_backend_start();
    if (!x->fm || !x->fb)
        return -1;
    char text[2048];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"t\"}", fake_mcpd_url(x->fm));
    tmpdir_write(x->dir, "credentials", text, 0600);
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [\n"
             "  {\"name\": \"local\", \"type\": \"openai\", \"model\": \"served-model\",\n"
             "   \"url\": \"%s\", \"apiKeyEnv\": \"TEST_BACKEND_KEY\", \"publish\": true},\n"
             "  {\"name\": \"down\", \"type\": \"openai\", \"model\": \"m\",\n"
             "   \"url\": \"http://127.0.0.1:%d/v1\", \"publish\": true}\n"
             "]}}\n",
             fake_backend_url(x->fb), closed_port());
    tmpdir_write(x->dir, "config.json", text, 0644);
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->dir, "--log-level", "debug", NULL};
    const char *env[] = {"MCPLOCAL_BACKOFF_MIN_MS=20", "MCPLOCAL_BACKOFF_MAX_MS=200",
                         "MCPLOCAL_SHUTDOWN_GRACE_MS=3000", "TEST_BACKEND_KEY=sk-local-123", NULL};
    x->p = proc_start(argv, env, x->dir);
    if (!x->p || fake_mcpd_wait_stream(x->fm, 1, WAIT_MS) != 0 ||
        proc_wait_for(x->p, "stream up", WAIT_MS) != 0) {
        if (x->p)
            proc_dump(x->p);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    if (x->p) {
        proc_signal(x->p, SIGTERM);
        int rc = proc_wait_exit(x->p, WAIT_MS);
        if (rc != 0)
            proc_dump(x->p);
        proc_free(x->p);
        assert_int_equal(rc, 0);
    }
    fake_mcpd_stop(x->fm);
    fake_backend_stop(x->fb);
    tmpdir_remove(x->dir);
    free(x);
    return 0;
}

static const char BODY[] = "{\"model\":\"local\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"hi\"}]}";

/* The result posts of task id as JSON values; caller frees each. */
static json_t *result(struct fx *x, const char *id, int i)
{
    char path[256];
    fake_mcpd_result_path(id, path, sizeof path);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, i);
    if (!r)
        return NULL;
    assert_string_equal(r->session, "sess-1");
    json_t *j = json_loads(r->body, 0, NULL);
    if (!j)
        fail_msg("result %d of %s is not JSON: %s", i, id, r->body);
    fake_mcpd_req_free(r);
    return j;
}

static void wait_results(struct fx *x, const char *id, int n)
{
    char path[256];
    fake_mcpd_result_path(id, path, sizeof path);
    if (fake_mcpd_wait_count(x->fm, path, n, WAIT_MS) != 0) {
        proc_dump(x->p);
        fail_msg("task %s: %d result posts never came (got %d)", id, n,
                 fake_mcpd_count(x->fm, path));
    }
}

static const char *error_of(json_t *j)
{
    return json_string_value(json_object_get(j, "error"));
}

static void test_non_streaming(void **state)
{
    struct fx *x = *state;
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t1", "local", false, BODY), 0);
    wait_results(x, "t1", 1);
    json_t *r = result(x, "t1", 0);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_t *body = json_object_get(r, "body");
    assert_string_equal(json_string_value(json_object_get(body, "object")), "chat.completion");
    /* The provider's model was sent upstream, whatever the caller asked. */
    assert_string_equal(json_string_value(json_object_get(body, "model")), "served-model");
    json_decref(r);
    char *auth = fake_backend_last_header(x->fb, "/v1/chat/completions", "Authorization");
    assert_string_equal(auth, "Bearer sk-local-123");
    free(auth);
    char *up = fake_backend_last_body(x->fb, "/v1/chat/completions");
    assert_non_null(strstr(up, "\"model\":\"served-model\""));
    assert_non_null(strstr(up, "\"content\":\"hi\""));
    free(up);
    /* One result per task: nothing more comes. */
    assert_int_equal(fake_mcpd_count(x->fm, "/api/v1/llms/_provider-task/t1/"), 1);
}

static void test_streaming_token_by_token(void **state)
{
    struct fx *x = *state;
    const int n = 5;
    fake_backend_set_stream(x->fb, n, 150);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "s1", "local", true, BODY), 0);
    wait_results(x, "s1", n + 1);
    char path[256];
    fake_mcpd_result_path("s1", path, sizeof path);
    for (int i = 0; i < n; i++) {
        json_t *r = result(x, "s1", i);
        json_t *data = json_object_get(json_object_get(r, "chunk"), "data");
        assert_true(json_is_object(data));
        assert_string_equal(json_string_value(json_object_get(data, "object")),
                            "chat.completion.chunk");
        json_t *delta =
            json_object_get(json_array_get(json_object_get(data, "choices"), 0), "delta");
        char tok[16];
        snprintf(tok, sizeof tok, "tok%d", i);
        assert_string_equal(json_string_value(json_object_get(delta, "content")), tok);
        json_decref(r);
        /* Relayed as it arrived: mcpd had chunk i before the backend even
         * produced chunk i+1. */
        if (i + 1 < n) {
            struct fake_mcpd_req *post = fake_mcpd_get(x->fm, path, i);
            int64_t next = fake_backend_chunk_sent_ms(x->fb, i + 1);
            if (post->at_ms > next)
                fail_msg("chunk %d reached mcpd at %lld, after chunk %d left the backend (%lld)", i,
                         (long long)post->at_ms, i + 1, (long long)next);
            fake_mcpd_req_free(post);
        }
    }
    json_t *last = result(x, "s1", n);
    assert_true(json_is_true(json_object_get(json_object_get(last, "chunk"), "done")));
    json_decref(last);
    char *up = fake_backend_last_body(x->fb, "/v1/chat/completions");
    assert_non_null(strstr(up, "\"stream\":true"));
    free(up);
}

/* A backend far faster than the result posts: mcplocal stops reading from it
 * while 64 chunks are queued and resumes when the queue drains; every chunk
 * still arrives, once, in order. */
static void test_streaming_backpressure(void **state)
{
    struct fx *x = *state;
    const int n = 1500;
    fake_backend_set_stream(x->fb, n, 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "bp", "local", true, BODY), 0);
    wait_results(x, "bp", n + 1);
    for (int i = 0; i < n; i++) {
        json_t *r = result(x, "bp", i);
        json_t *data = json_object_get(json_object_get(r, "chunk"), "data");
        json_t *delta =
            json_object_get(json_array_get(json_object_get(data, "choices"), 0), "delta");
        char tok[16];
        snprintf(tok, sizeof tok, "tok%d", i);
        const char *got = json_string_value(json_object_get(delta, "content"));
        if (!got || strcmp(got, tok) != 0)
            fail_msg("result %d is '%s', want '%s'", i, got ? got : "(none)", tok);
        json_decref(r);
    }
    json_t *last = result(x, "bp", n);
    assert_true(json_is_true(json_object_get(json_object_get(last, "chunk"), "done")));
    json_decref(last);
}

static void test_backend_errors(void **state)
{
    struct fx *x = *state;
    fake_backend_set_fail(x->fb, 500);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "e1", "local", false, BODY), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "e2", "local", true, BODY), 0);
    wait_results(x, "e1", 1);
    wait_results(x, "e2", 1);
    json_t *r = result(x, "e1", 0);
    assert_string_equal(error_of(r), "backend answered 500: fake failure");
    json_decref(r);
    r = result(x, "e2", 0);
    assert_string_equal(error_of(r), "backend answered 500: fake failure");
    json_decref(r);
    proc_expect(x->p, "task e1 (local) failed: backend answered 500", 1, WAIT_MS);

    assert_int_equal(fake_mcpd_push_infer(x->fm, "e3", "down", false, BODY), 0);
    wait_results(x, "e3", 1);
    r = result(x, "e3", 0);
    assert_string_equal(error_of(r), "backend unreachable: Couldn't connect to server");
    json_decref(r);

    assert_int_equal(fake_mcpd_push_infer(x->fm, "e4", "nobody", false, BODY), 0);
    wait_results(x, "e4", 1);
    r = result(x, "e4", 0);
    assert_string_equal(error_of(r), "llm 'nobody' is not published by this publisher");
    json_decref(r);

    /* A wake for a provider without a recipe says so. */
    assert_int_equal(fake_mcpd_push_wake(x->fm, "e5", "local"), 0);
    wait_results(x, "e5", 1);
    r = result(x, "e5", 0);
    assert_string_equal(error_of(r), "no wake recipe is configured for this llm");
    json_decref(r);
}

static void test_cancel_aborts_upstream(void **state)
{
    struct fx *x = *state;
    fake_backend_set_stream(x->fb, 500, 20); /* 10 s if nobody stops it */
    assert_int_equal(fake_mcpd_push_infer(x->fm, "c1", "local", true, BODY), 0);
    wait_results(x, "c1", 2);
    int64_t t0 = clock_mono_ms();
    assert_int_equal(fake_mcpd_push_cancel(x->fm, "c1"), 0);
    assert_int_equal(fake_backend_wait_aborted(x->fb, 1, 3000), 0);
    assert_true(clock_mono_ms() - t0 < 2000);
    proc_expect(x->p, "task c1 (local): cancelled by mcpd", 1, WAIT_MS);
    /* Nothing is posted after the cancel was handled. */
    char path[256];
    fake_mcpd_result_path("c1", path, sizeof path);
    int n = fake_mcpd_count(x->fm, path);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, n + 1, 300), -1);
    assert_int_equal(fake_backend_streams_completed(x->fb), 0);
}

static void test_410_aborts_upstream(void **state)
{
    struct fx *x = *state;
    fake_mcpd_set_result_status(x->fm, 410);
    fake_backend_set_stream(x->fb, 500, 20);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "g1", "local", true, BODY), 0);
    assert_int_equal(fake_backend_wait_aborted(x->fb, 1, 3000), 0);
    proc_expect(x->p, "task g1 (local): mcpd answered 410 to a result, the caller is gone", 1,
                WAIT_MS);
    char path[256];
    fake_mcpd_result_path("g1", path, sizeof path);
    assert_int_equal(fake_mcpd_count(x->fm, path), 1);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, 2, 300), -1);
}

static void test_many_tasks_at_once(void **state)
{
    struct fx *x = *state;
    const int tasks = 6, chunks = 4;
    fake_backend_set_stream(x->fb, chunks, 100);
    int64_t t0 = clock_mono_ms();
    for (int i = 0; i < tasks; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        assert_int_equal(fake_mcpd_push_infer(x->fm, id, "local", i % 2 == 0, BODY), 0);
    }
    for (int i = 0; i < tasks; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        wait_results(x, id, i % 2 == 0 ? chunks + 1 : 1);
    }
    /* Concurrent, not one after another (that would take >= 1.2 s). */
    int64_t took = clock_mono_ms() - t0;
    if (took > 1100)
        fail_msg("6 tasks took %lld ms", (long long)took);
    for (int i = 0; i < tasks; i += 2) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        for (int k = 0; k < chunks; k++) {
            json_t *r = result(x, id, k);
            char tok[16];
            snprintf(tok, sizeof tok, "\"tok%d\"", k);
            char *s = json_dumps(r, JSON_COMPACT);
            assert_non_null(strstr(s, tok));
            free(s);
            json_decref(r);
        }
    }
}

static void test_sigterm_fails_tasks_in_flight(void **state)
{
    struct fx *x = *state;
    fake_backend_set_stream(x->fb, 500, 20);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "q1", "local", true, BODY), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "q2", "local", false, BODY), 0);
    wait_results(x, "q1", 2);
    wait_results(x, "q2", 1); /* finished: nothing to fail */
    proc_signal(x->p, SIGTERM);
    assert_int_equal(proc_wait_exit(x->p, WAIT_MS), 0);
    char *log = proc_output(x->p);
    proc_free(x->p);
    x->p = NULL;
    char path[256];
    fake_mcpd_result_path("q1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_body(x->fm, path, "publisher shutting down", WAIT_MS), 0);
    json_t *last = result(x, "q1", -1);
    assert_string_equal(error_of(last), "publisher shutting down");
    json_decref(last);
    assert_int_equal(fake_mcpd_count(x->fm, "/api/v1/llms/_provider-task/q2/"), 1);
    /* The upstream call was cut and the stream closed. */
    assert_int_equal(fake_backend_wait_aborted(x->fb, 1, WAIT_MS), 0);
    assert_int_equal(fake_mcpd_wait_no_stream(x->fm, WAIT_MS), 0);
    if (!strstr(log, "shutting down (1 task in flight)"))
        fail_msg("log:\n%s", log);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_non_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_token_by_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_aborts_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_410_aborts_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_tasks_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_fails_tasks_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
