/* End to end: the real mcpd, the real mcplocal and a fake OpenAI backend.
 * A caller talks to mcpd only; tokens come from the "laptop" backend
 * through mcplocal's control stream.
 *
 *   publish -> virtual/active -> inference (plain and streaming) ->
 *   SIGTERM -> inactive at once -> restart -> same session, active again;
 *   a caller that leaves cancels the upstream call; backend errors reach the
 *   caller; a hibernating backend is woken by the first request. */
#include "clock.h"
#include "fake_backend.h"
#include "http.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "test_env.h"
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

#include <cmocka.h>

#define WAIT_MS 15000

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

struct fx {
    struct test_env *env;
    struct fake_backend *fb;
    char *home;
    struct proc *p;
};

static struct proc *start_mcplocal(struct fx *x)
{
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->home, NULL};
    const char *env[] = {"MCPLOCAL_BACKOFF_MIN_MS=50", "MCPLOCAL_BACKOFF_MAX_MS=500",
                         "MCPLOCAL_WAKE_POLL_FIRST_MS=50", "MCPLOCAL_WAKE_POLL_MS=100", NULL};
    struct proc *p = proc_start(argv, env, x->home);
    assert_non_null(p);
    return p;
}

static int stop_mcplocal(struct fx *x)
{
    int rc = proc_stop(x->p, WAIT_MS);
    x->p = NULL;
    return rc;
}

/* mcpd with short heartbeat and ping intervals; the backend; mcplocal's
 * files (provider "laptop" -> the backend, with the given wake block). */
static struct fx *fx_new(const char *wake)
{
    struct fx *x = calloc(1, sizeof *x);
    const char *args[] = {"--heartbeat-interval", "300ms", "--ping-interval", "300ms", NULL};
    x->env = test_env_start(args);
    x->fb = fake_backend_start();
    if (!x->env || !x->fb)
        return NULL;
    x->home = tmpdir_create("mcplocal-e2e");
    char text[2048];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", x->env->mcpd.url,
             x->env->mcpd.token);
    tmpdir_write(x->home, "credentials", text, 0600);
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"laptop\", \"type\": \"openai\",\n"
             "  \"model\": \"served-model\", \"url\": \"%s\", \"tier\": \"fast\",\n"
             "  \"publish\": true%s%s}]}}\n",
             fake_backend_url(x->fb), wake ? ", \"wake\": " : "", wake ? wake : "");
    tmpdir_write(x->home, "config.json", text, 0644);
    return x;
}

static int setup(void **state)
{
    struct fx *x = fx_new(NULL);
    *state = x;
    return x ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    if (x->p)
        assert_int_equal(stop_mcplocal(x), 0);
    fake_backend_stop(x->fb);
    assert_int_equal(test_env_stop(x->env), 0);
    tmpdir_remove(x->home);
    free(x);
    return 0;
}

static json_t *get_llm(struct fx *x, const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/llms/%s", name);
    struct http_resp r;
    assert_int_equal(test_call(x->env, "GET", path, x->env->mcpd.token, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    http_resp_free(&r);
    assert_non_null(j);
    return j;
}

static char *session_file(struct fx *x)
{
    char *path = tmpdir_path(x->home, "provider-session");
    FILE *f = fopen(path, "r");
    char line[256] = "";
    if (f) {
        if (!fgets(line, sizeof line, f))
            line[0] = '\0';
        fclose(f);
    }
    free(path);
    line[strcspn(line, "\n")] = '\0';
    return strdup(line);
}

static void test_publish_infer_stop_restart(void **state)
{
    struct fx *x = *state;
    fake_backend_set_stream(x->fb, 4, 200);
    x->p = start_mcplocal(x);
    proc_expect(x->p, "stream up", 1, WAIT_MS);

    /* Published: a virtual, active row, owned by alice, in this session. */
    json_t *row = get_llm(x, "laptop");
    assert_string_equal(json_string_value(json_object_get(row, "kind")), "virtual");
    assert_string_equal(json_string_value(json_object_get(row, "status")), "active");
    assert_string_equal(json_string_value(json_object_get(row, "model")), "served-model");
    assert_string_equal(json_string_value(json_object_get(row, "owner")), "alice");
    char *sid = session_file(x);
    assert_true(strlen(sid) > 0);
    assert_string_equal(json_string_value(json_object_get(row, "providerSessionId")), sid);
    json_decref(row);

    /* Plain inference through mcpd. */
    struct http_resp r;
    assert_int_equal(test_call(x->env, "POST", "/api/v1/llms/laptop/infer", x->env->mcpd.token,
                               JSON_HDR,
                               "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}", &r),
                     0);
    if (r.status != 200)
        fail_msg("infer: %ld %s", r.status, r.body);
    json_t *ans = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(ans, "model")), "served-model");
    json_t *msg = json_object_get(json_array_get(json_object_get(ans, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "hello from fake");
    json_decref(ans);
    http_resp_free(&r);

    /* Streaming through the OpenAI surface: the first token reaches the
     * caller while the backend has not produced the third yet. */
    char *url = mcpd_url(&x->env->mcpd, "/v1/chat/completions");
    struct http_stream *s =
        http_stream_open("POST", url, x->env->mcpd.token, JSON_HDR,
                         "{\"model\":\"laptop\",\"stream\":true,"
                         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    free(url);
    assert_int_equal(http_stream_wait_for(s, "tok0", 1, WAIT_MS), 0);
    assert_int_equal(fake_backend_chunk_sent_ms(x->fb, 2), -1);
    assert_int_equal(http_stream_wait_for(s, "data: [DONE]", 1, WAIT_MS), 0);
    assert_int_equal(http_stream_wait_done(s, WAIT_MS), 0);
    assert_int_equal(http_stream_status(s), 200);
    char *body = http_stream_body(s);
    const char *t0 = strstr(body, "tok0"), *t3 = strstr(body, "tok3");
    assert_true(t0 && strstr(body, "tok1") && strstr(body, "tok2") && t3 && t0 < t3);
    free(body);
    http_stream_close(s);

    /* SIGTERM: the stream closes and the row is inactive at once. */
    assert_int_equal(stop_mcplocal(x), 0);
    assert_int_equal(test_wait_status(x->env, "laptop", "inactive", 2000), 0);
    assert_int_equal(test_call(x->env, "POST", "/api/v1/llms/laptop/infer", x->env->mcpd.token,
                               JSON_HDR, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                               &r),
                     0);
    assert_int_equal(r.status, 503);
    http_resp_free(&r);

    /* Restart: the same session adopts the row again. */
    x->p = start_mcplocal(x);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    assert_int_equal(test_wait_status(x->env, "laptop", "active", WAIT_MS), 0);
    char *sid2 = session_file(x);
    assert_string_equal(sid2, sid);
    row = get_llm(x, "laptop");
    assert_string_equal(json_string_value(json_object_get(row, "providerSessionId")), sid);
    json_decref(row);
    free(sid);
    free(sid2);
}

static void test_caller_leaving_cancels_upstream(void **state)
{
    struct fx *x = *state;
    fake_backend_set_stream(x->fb, 500, 20);
    x->p = start_mcplocal(x);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    char *url = mcpd_url(&x->env->mcpd, "/api/v1/llms/laptop/infer");
    struct http_stream *s = http_stream_open(
        "POST", url, x->env->mcpd.token, JSON_HDR,
        "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"long\"}]}");
    free(url);
    assert_int_equal(http_stream_wait_for(s, "tok1", 1, WAIT_MS), 0);
    http_stream_close(s); /* the caller goes away */
    /* mcpd cancels, mcplocal aborts the backend call long before its end. */
    assert_int_equal(fake_backend_wait_aborted(x->fb, 1, 5000), 0);
    assert_int_equal(fake_backend_streams_completed(x->fb), 0);
}

static void test_backend_error_reaches_caller(void **state)
{
    struct fx *x = *state;
    fake_backend_set_fail(x->fb, 500);
    x->p = start_mcplocal(x);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    struct http_resp r;
    assert_int_equal(test_call(x->env, "POST", "/api/v1/llms/laptop/infer", x->env->mcpd.token,
                               JSON_HDR, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                               &r),
                     0);
    /* The backend's own status and error object reach the caller. */
    assert_int_equal(r.status, 500);
    if (!strstr(r.body, "fake failure"))
        fail_msg("500 body: %s", r.body);
    http_resp_free(&r);
}

static int setup_wake(void **state)
{
    struct fx *x = fx_new(NULL);
    *state = x;
    if (!x)
        return -1;
    char wake[512];
    snprintf(wake, sizeof wake, "{\"type\": \"http\", \"url\": \"%s\", \"maxWaitSeconds\": 10}",
             fake_backend_wake_url(x->fb));
    char text[2048];
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"laptop\", \"type\": \"openai\",\n"
             "  \"model\": \"served-model\", \"url\": \"%s\", \"publish\": true,\n"
             "  \"wake\": %s}]}}\n",
             fake_backend_url(x->fb), wake);
    tmpdir_write(x->home, "config.json", text, 0644);
    fake_backend_set_asleep(x->fb, true);
    fake_backend_set_wake(x->fb, 200, 300);
    return 0;
}

static void test_wake_on_first_request(void **state)
{
    struct fx *x = *state;
    x->p = start_mcplocal(x);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    json_t *row = get_llm(x, "laptop");
    assert_string_equal(json_string_value(json_object_get(row, "status")), "hibernating");
    json_decref(row);
    assert_int_equal(fake_backend_count(x->fb, "/wake"), 0);

    struct http_resp r;
    assert_int_equal(test_call(x->env, "POST", "/v1/chat/completions", x->env->mcpd.token, JSON_HDR,
                               "{\"model\":\"laptop\",\"messages\":[{\"role\":\"user\","
                               "\"content\":\"wake up\"}]}",
                               &r),
                     0);
    if (r.status != 200)
        fail_msg("first request: %ld %s", r.status, r.body);
    assert_non_null(strstr(r.body, "hello from fake"));
    http_resp_free(&r);
    assert_int_equal(fake_backend_count(x->fb, "/wake"), 1);
    row = get_llm(x, "laptop");
    assert_string_equal(json_string_value(json_object_get(row, "status")), "active");
    json_decref(row);
    proc_expect(x->p, "woke 'laptop' in", 1, WAIT_MS);

    /* Awake now: the next request goes straight through, no second wake. */
    assert_int_equal(test_call(x->env, "POST", "/v1/chat/completions", x->env->mcpd.token, JSON_HDR,
                               "{\"model\":\"laptop\",\"messages\":[{\"role\":\"user\","
                               "\"content\":\"again\"}]}",
                               &r),
                     0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    assert_int_equal(fake_backend_count(x->fb, "/wake"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_infer_stop_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caller_leaving_cancels_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_error_reaches_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_on_first_request, setup_wake, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
