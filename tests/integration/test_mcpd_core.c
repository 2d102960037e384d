/*
 * The server core over HTTP: auth, register rules, streams, heartbeats,
 * decay and deletion by GC, error statuses, clean shutdown.
 */
#include "http.h"
#include "mcpd_harness.h"
#include "test_env.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

static int setup(void **state)
{
    const char *args[] = {"--ping-interval", "100ms", NULL};
    *state = test_env_start(args);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    assert_int_equal(test_env_stop(*state), 0);
    return 0;
}

static struct http_stream *open_stream(struct test_env *env, const char *token, const char *sid)
{
    char hdr[128];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    const char *headers[] = {hdr, NULL};
    char *url = mcpd_url(&env->mcpd, "/api/v1/llms/_provider-stream");
    struct http_stream *s = http_stream_open("GET", url, token, headers, NULL);
    free(url);
    return s;
}

static long call_status(struct test_env *env, const char *method, const char *path,
                        const char *token, const char *const headers[], const char *body)
{
    struct http_resp r;
    test_call(env, method, path, token, headers, body, &r);
    long st = r.status;
    http_resp_free(&r);
    return st;
}

static void test_auth_and_health(void **state)
{
    struct test_env *env = *state;
    assert_int_equal(call_status(env, "GET", "/healthz", NULL, NULL, NULL), 200);
    struct http_resp r;
    test_call(env, "GET", "/api/v1/llms", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "\"error\""));
    http_resp_free(&r);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms", "mcp_nope", NULL, NULL), 401);
    assert_int_equal(call_status(env, "GET", "/v1/models", "mcp_nope", NULL, NULL), 401);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms", env->mcpd.token, NULL, NULL), 200);
}

/* GET /readyz needs no token and answers ready while mcpd serves. */
static void test_readyz(void **state)
{
    struct test_env *env = *state;
    struct http_resp r;
    test_call(env, "GET", "/readyz", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ready\":true}");
    assert_non_null(strstr(r.headers, "application/json"));
    http_resp_free(&r);
    assert_int_equal(call_status(env, "GET", "/readyz", "mcp_nope", NULL, NULL), 200);
    assert_int_equal(call_status(env, "POST", "/readyz", NULL, JSON_HDR, "{}"), 405);
}

static void test_routes_and_errors(void **state)
{
    struct test_env *env = *state;
    const char *t = env->mcpd.token;
    assert_int_equal(call_status(env, "GET", "/api/v1/nothing", t, NULL, NULL), 404);
    assert_int_equal(call_status(env, "DELETE", "/api/v1/llms", t, NULL, NULL), 405);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/_provider-register", t, NULL, NULL),
                     405);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/nope", t, NULL, NULL), 404);
    /* bad bodies */
    assert_int_equal(
        call_status(env, "POST", "/api/v1/llms/_provider-register", t, JSON_HDR, "{nope"), 400);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-register", t, JSON_HDR,
                                 "{\"providers\":[]}"),
                     400);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-register", t, JSON_HDR,
                                 "{\"providers\":[{\"name\":\"-bad\",\"type\":\"openai\","
                                 "\"model\":\"m\"}]}"),
                     400);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-register", t, JSON_HDR,
                                 "{\"providers\":[{\"name\":\"ok\",\"type\":\"openai\"}]}"),
                     400);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-register", t, JSON_HDR,
                                 "{\"providers\":[{\"name\":\"ok\",\"type\":\"openai\","
                                 "\"model\":\"m\",\"initialStatus\":\"asleep\"}]}"),
                     400);
    /* over the 1 MiB cap */
    size_t big = (1u << 20) + 100;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    huge[big] = '\0';
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-register", t, JSON_HDR, huge),
                     413);
    free(huge);
    /* oversized request headers */
    char *hdr = malloc(12 * 1024);
    strcpy(hdr, "X-Big: ");
    memset(hdr + 7, 'a', 10 * 1024);
    hdr[7 + 10 * 1024] = '\0';
    const char *big_headers[] = {hdr, NULL};
    assert_int_equal(call_status(env, "GET", "/api/v1/llms", t, big_headers, NULL), 431);
    free(hdr);
    /* the server still answers afterwards */
    assert_int_equal(call_status(env, "GET", "/api/v1/llms", t, NULL, NULL), 200);
}

static void test_register_list_and_sticky_session(void **state)
{
    struct test_env *env = *state;
    const char *t = env->mcpd.token;
    long st;
    char *sid = test_register(env, t, NULL,
                              "[{\"name\":\"m1\",\"type\":\"openai\",\"model\":\"q\",\"tier\":"
                              "\"fast\",\"extraConfig\":{\"a\":1},\"poolName\":\"p\"}]",
                              &st);
    assert_int_equal(st, 200);
    assert_int_equal(strlen(sid), 32);
    struct http_resp r;
    test_call(env, "GET", "/api/v1/llms", t, NULL, NULL, &r);
    json_t *arr = json_loads(r.body, 0, NULL);
    http_resp_free(&r);
    assert_int_equal(json_array_size(arr), 1);
    json_t *row = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(row, "kind")), "virtual");
    assert_string_equal(json_string_value(json_object_get(row, "status")), "active");
    assert_string_equal(json_string_value(json_object_get(row, "tier")), "fast");
    assert_string_equal(json_string_value(json_object_get(row, "poolName")), "p");
    assert_string_equal(json_string_value(json_object_get(row, "owner")), "alice");
    assert_string_equal(json_string_value(json_object_get(row, "providerSessionId")), sid);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(row, "extraConfig"), "a")),
                     1);
    const char *created = json_string_value(json_object_get(row, "createdAt"));
    assert_int_equal(strlen(created), 24); /* 2026-01-02T03:04:05.678Z */
    json_decref(arr);

    /* the same session id comes back (sticky), and updates the row */
    long st2;
    char *sid2 = test_register(env, t, sid,
                               "[{\"name\":\"m1\",\"type\":\"openai\",\"model\":\"q2\"}]", &st2);
    assert_int_equal(st2, 200);
    assert_string_equal(sid, sid2);
    test_call(env, "GET", "/api/v1/llms/m1", t, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "\"model\":\"q2\""));
    http_resp_free(&r);

    /* another owner sees the row without the session id, and may not use it */
    char *bob = mcpd_create_token(env->mcpd.db, "bob");
    test_call(env, "GET", "/api/v1/llms/m1", bob, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"providerSessionId\":null"));
    http_resp_free(&r);
    long st3;
    char *none = test_register(env, bob, sid,
                               "[{\"name\":\"b1\",\"type\":\"openai\",\"model\":\"q\"}]", &st3);
    assert_null(none);
    assert_int_equal(st3, 404);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    const char *h[] = {hdr, NULL};
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-heartbeat", bob, h, "{}"),
                     404);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/_provider-stream", bob, h, NULL), 404);
    free(bob);
    free(sid);
    free(sid2);
}

static void test_conflict_is_all_or_nothing(void **state)
{
    struct test_env *env = *state;
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"held\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    char *bob = mcpd_create_token(env->mcpd.db, "bob");
    struct http_resp r;
    test_call(env, "POST", "/api/v1/llms/_provider-register", bob, JSON_HDR,
              "{\"providers\":[{\"name\":\"fresh\",\"type\":\"openai\",\"model\":\"q\"},"
              "{\"name\":\"held\",\"type\":\"openai\",\"model\":\"q\"}]}",
              &r);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.body, "\"name\":\"held\""));
    http_resp_free(&r);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/fresh", bob, NULL, NULL), 404);
    /* the same owner's other live session may not take it either */
    long st2;
    char *other = test_register(env, env->mcpd.token, NULL,
                                "[{\"name\":\"held\",\"type\":\"openai\",\"model\":\"q\"}]", &st2);
    assert_null(other);
    assert_int_equal(st2, 409);
    free(bob);
    free(sid);
}

static void test_stream_hello_ping_close_heartbeat(void **state)
{
    struct test_env *env = *state;
    const char *t = env->mcpd.token;
    long st;
    char *sid =
        test_register(env, t, NULL, "[{\"name\":\"s1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/_provider-stream", t, NULL, NULL), 400);
    const char *bad[] = {"x-mcpctl-provider-session: 0123456789abcdef0123456789abcdef", NULL};
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/_provider-stream", t, bad, NULL), 404);

    struct http_stream *s = open_stream(env, t, sid);
    assert_int_equal(
        http_stream_wait_for(s, "event: hello\ndata: {\"providerSessionId\":\"", 1, 5000), 0);
    assert_int_equal(http_stream_wait_for(s, ": ping\n\n", 2, 5000), 0);
    assert_int_equal(http_stream_status(s), 200);
    http_stream_close(s);
    assert_int_equal(test_wait_status(env, "s1", "inactive", 5000), 0);

    struct http_resp r;
    test_call(env, "GET", "/api/v1/llms/s1", t, NULL, NULL, &r);
    assert_null(strstr(r.body, "\"inactiveSince\":null"));
    http_resp_free(&r);

    char hdr[128];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    const char *h[] = {hdr, NULL};
    /* No stream: a heartbeat keeps the session but does not promise a
     * publisher callers cannot reach. */
    test_call(env, "POST", "/api/v1/llms/_provider-heartbeat", t, h, "{}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ok\":true,\"revived\":0}");
    http_resp_free(&r);
    char *status = test_llm_status(env, "s1");
    assert_string_equal(status, "inactive");
    free(status);
    /* Binding a stream again brings the rows back. */
    s = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(s, "event: hello", 1, 5000), 0);
    assert_int_equal(test_wait_status(env, "s1", "active", 5000), 0);
    http_stream_close(s);
    assert_int_equal(test_wait_status(env, "s1", "inactive", 5000), 0);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-heartbeat", t, bad, NULL),
                     404);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-heartbeat", t, NULL, NULL),
                     400);
    free(sid);
}

static void test_second_stream_replaces_first(void **state)
{
    struct test_env *env = *state;
    const char *t = env->mcpd.token;
    long st;
    char *sid =
        test_register(env, t, NULL, "[{\"name\":\"r1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    struct http_stream *a = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(a, "event: hello", 1, 5000), 0);
    struct http_stream *b = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(b, "event: hello", 1, 5000), 0);
    assert_int_equal(http_stream_wait_done(a, 5000), 0); /* the first one ended */
    char *status = test_llm_status(env, "r1");
    assert_string_equal(status, "active"); /* the session is still bound */
    free(status);
    assert_int_equal(http_stream_wait_for(b, ": ping", 1, 5000), 0);
    http_stream_close(a);
    http_stream_close(b);
    assert_int_equal(test_wait_status(env, "r1", "inactive", 5000), 0);
    free(sid);
}

static void test_adopt_inactive_row_of_same_owner(void **state)
{
    struct test_env *env = *state;
    const char *t = env->mcpd.token;
    long st;
    char *sid =
        test_register(env, t, NULL, "[{\"name\":\"a1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    struct http_stream *s = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(s, "event: hello", 1, 5000), 0);
    http_stream_close(s);
    assert_int_equal(test_wait_status(env, "a1", "inactive", 5000), 0);
    char *sid2 =
        test_register(env, t, NULL, "[{\"name\":\"a1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    assert_string_not_equal(sid, sid2);
    struct http_resp r;
    test_call(env, "GET", "/api/v1/llms/a1", t, NULL, NULL, &r);
    assert_non_null(strstr(r.body, sid2));
    assert_non_null(strstr(r.body, "\"status\":\"active\""));
    http_resp_free(&r);
    free(sid);
    free(sid2);
}

static void test_silent_session_decays_then_is_deleted(void **state)
{
    (void)state;
    const char *args[] = {"--heartbeat-timeout",
                          "300ms",
                          "--gc-interval",
                          "50ms",
                          "--inactive-retention",
                          "400ms",
                          NULL};
    struct test_env *env = test_env_start(args);
    assert_non_null(env);
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"d1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    char *status = test_llm_status(env, "d1");
    assert_string_equal(status, "active");
    free(status);
    assert_int_equal(test_wait_status(env, "d1", "inactive", 5000), 0);
    /* deleted once past the retention, by a later GC tick */
    assert_int_equal(proc_wait_for(env->mcpd.proc, ", 1 expired row(s) deleted", 5000), 0);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/d1", env->mcpd.token, NULL, NULL), 404);
    free(sid);
    assert_int_equal(test_env_stop(env), 0);
}

static void test_sigterm_flips_rows_inactive(void **state)
{
    (void)state;
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"t1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    struct http_stream *s = open_stream(env, env->mcpd.token, sid);
    assert_int_equal(http_stream_wait_for(s, "event: hello", 1, 5000), 0);
    /* restart on the same database: the row must be inactive after a clean stop */
    char *dir = strdup(env->dir);
    char *db = strdup(env->mcpd.db);
    assert_int_equal(mcpd_stop(&env->mcpd), 0);
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    http_stream_close(s);
    struct mcpd m2;
    const char *args[] = {NULL};
    assert_int_equal(mcpd_start(&m2, dir, args), 0);
    char *url = mcpd_url(&m2, "/api/v1/llms/t1");
    struct http_resp r;
    http_do("GET", url, m2.token, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "\"status\":\"inactive\""));
    http_resp_free(&r);
    free(url);
    assert_int_equal(mcpd_stop(&m2), 0);
    env->mcpd.proc = NULL;
    free(db);
    free(dir);
    free(sid);
    test_env_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_and_health, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_list_and_sticky_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_is_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_hello_ping_close_heartbeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_stream_replaces_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_inactive_row_of_same_owner, setup, teardown),
        cmocka_unit_test(test_silent_session_decays_then_is_deleted),
        cmocka_unit_test(test_sigterm_flips_rows_inactive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
