/*
 * Result streams end to end: a session's results as one long chunked POST
 * of JSON objects, written here byte by byte on a raw socket so that every
 * way a record can be cut across chunks is exercised; what a bad record, a
 * cut-off stream and a refused one do to the session.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "raw_http.h"
#include "test_env.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};
static const char PROVIDERS[] = "[{\"name\":\"llm1\",\"type\":\"openai\",\"model\":\"q\"}]";

static int setup(void **state)
{
    *state = fixture_start(NULL, PROVIDERS);
    if (!*state)
        return -1;
    struct fp_script s = {.mode = FP_SILENT};
    fake_publisher_set_script(((struct fixture *)*state)->fp, &s);
    return 0;
}

static int setup_off(void **state)
{
    const char *args[] = {"--result-stream", "off", NULL};
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    assert_int_equal(fixture_stop(*state), 0);
    return 0;
}

/* Starts a caller and returns it once its task reached the publisher; the
 * task's id goes to id (33 bytes). */
static struct http_stream *caller(struct fixture *f, int n, char *id)
{
    char *url = mcpd_url(&f->env->mcpd, "/api/v1/llms/llm1/infer");
    char body[128];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"c%d\"}]}", n);
    struct http_stream *s = http_stream_open("POST", url, f->env->mcpd.token, JSON_HDR, body);
    free(url);
    assert_non_null(s);
    char needle[64];
    snprintf(needle, sizeof needle, "\"content\":\"c%d\"", n);
    assert_int_equal(fake_publisher_wait(f->fp, needle, 1, 5000), 0);
    char *tid = fake_publisher_task_id(f->fp, needle);
    assert_non_null(tid);
    snprintf(id, 33, "%s", tid);
    free(tid);
    return s;
}

/* Opens a result stream for session (token's) on a raw connection. */
static void open_results(struct fixture *f, struct raw_conn *c, const char *token,
                         const char *session)
{
    assert_int_equal(raw_connect(c, f->env->mcpd.port, 0), 0);
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "POST /api/v1/llms/_provider-results HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Authorization: Bearer %s\r\n%s%s%s"
                     "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
                     token, session ? "x-mcpctl-provider-session: " : "", session ? session : "",
                     session ? "\r\n" : "");
    assert_int_equal(raw_send(c, head, (size_t)n), 0);
}

/* Sends data as one chunk. */
static void chunk(struct raw_conn *c, const char *data)
{
    char head[32];
    int n = snprintf(head, sizeof head, "%zx\r\n", strlen(data));
    assert_int_equal(raw_send(c, head, (size_t)n), 0);
    assert_int_equal(raw_send(c, data, strlen(data)), 0);
    assert_int_equal(raw_send(c, "\r\n", 2), 0);
}

static void expect_answer(struct http_stream *s, long status, const char *body)
{
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    assert_int_equal(http_stream_status(s), status);
    char *got = http_stream_body(s);
    if (body)
        assert_string_equal(got, body);
    free(got);
    http_stream_close(s);
}

static void test_records_reach_their_callers(void **state)
{
    struct fixture *f = *state;
    char id[3][33];
    struct http_stream *s[3];
    for (int i = 0; i < 3; i++)
        s[i] = caller(f, i, id[i]);
    struct raw_conn c;
    open_results(f, &c, f->env->mcpd.token, fake_publisher_session(f->fp));

    /* the first record whole, the second cut in the middle of a string */
    char text[1024];
    snprintf(text, sizeof text,
             "{\"taskId\":\"%s\",\"status\":200,\"body\":{\"n\":0,\"s\":\"a}b\\\"{\"}}\n"
             "{\"taskId\":\"%s\",\"status\":201,\"body\":{\"n\":1,\"s\":\"x",
             id[0], id[1]);
    chunk(&c, text);
    expect_answer(s[0], 200, "{\"n\":0,\"s\":\"a}b\\\"{\"}");
    /* the rest of it, a keep-alive line, a record for no task, and a
     * pretty-printed one whose body keeps its bytes */
    snprintf(
        text, sizeof text,
        "y\"}}\n\n"
        "{\"taskId\":\"0123456789abcdef0123456789abcdef\",\"error\":\"nobody\"}\n"
        "{\n  \"taskId\": \"%s\",\n  \"status\": 429,\n"
        "  \"headers\": {\"retry-after\": \"7\"},\n  \"body\": {\n    \"error\": [1, 2]\n  }\n}\n",
        id[2]);
    chunk(&c, text);
    expect_answer(s[1], 201, "{\"n\":1,\"s\":\"xy\"}");
    expect_answer(s[2], 429, "{\n    \"error\": [1, 2]\n  }");

    /* the end of the body is answered; the session lives on */
    assert_int_equal(raw_send(&c, "0\r\n\r\n", 5), 0);
    struct raw_resp r;
    assert_int_equal(raw_read_response(&c, &r, 5000), RAW_OK);
    assert_int_equal(r.status, 200);
    raw_resp_free(&r);
    raw_close(&c);
    char *st = test_llm_status(f->env, "llm1");
    assert_string_equal(st, "active");
    free(st);
}

static void test_refused_streams(void **state)
{
    struct fixture *f = *state;
    struct raw_conn c;
    struct raw_resp r;
    /* no session header */
    open_results(f, &c, f->env->mcpd.token, NULL);
    assert_int_equal(raw_read_response(&c, &r, 5000), RAW_OK);
    assert_int_equal(r.status, 400);
    raw_resp_free(&r);
    raw_close(&c);
    /* another owner's session */
    char *bob = mcpd_create_token(f->env->mcpd.db, "bob");
    open_results(f, &c, bob, fake_publisher_session(f->fp));
    assert_int_equal(raw_read_response(&c, &r, 5000), RAW_OK);
    assert_int_equal(r.status, 404);
    raw_resp_free(&r);
    raw_close(&c);
    free(bob);
    /* a session without a control stream */
    char sid[64];
    snprintf(sid, sizeof sid, "%s", fake_publisher_session(f->fp));
    fake_publisher_drop(f->fp);
    assert_int_equal(test_wait_status(f->env, "llm1", "inactive", 5000), 0);
    open_results(f, &c, f->env->mcpd.token, sid);
    assert_int_equal(raw_read_response(&c, &r, 5000), RAW_OK);
    assert_int_equal(r.status, 409);
    raw_resp_free(&r);
    raw_close(&c);
}

/* Behind a proxy that buffers request bodies, an operator turns result
 * streams off: the hello offers none and the route is refused. */
static void test_result_streams_off(void **state)
{
    struct fixture *f = *state;
    char *t = fake_publisher_transcript(f->fp);
    assert_non_null(strstr(t, "\"features\":[]}"));
    free(t);
    struct raw_conn c;
    struct raw_resp r;
    open_results(f, &c, f->env->mcpd.token, fake_publisher_session(f->fp));
    assert_int_equal(raw_read_response(&c, &r, 5000), RAW_OK);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "--result-stream off"));
    raw_resp_free(&r);
    raw_close(&c);
}

/* A record that is not a result, or a stream cut off inside a record: the
 * results in it may be lost, so the session's control stream ends and its
 * waiting callers get 502 at once. */
static void check_session_ends(struct fixture *f, const char *bytes, bool close_after)
{
    char id[33];
    struct http_stream *s = caller(f, 7, id);
    struct raw_conn c;
    open_results(f, &c, f->env->mcpd.token, fake_publisher_session(f->fp));
    chunk(&c, bytes);
    if (close_after)
        raw_close(&c);
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    assert_int_equal(http_stream_status(s), 502);
    char *body = http_stream_body(s);
    assert_non_null(strstr(body, "result stream"));
    free(body);
    http_stream_close(s);
    assert_int_equal(test_wait_status(f->env, "llm1", "inactive", 5000), 0);
    if (!close_after) {
        assert_int_equal(raw_wait_closed(&c, 5000), RAW_OK);
        raw_close(&c);
    }
}

static void test_bad_record_ends_the_session(void **state)
{
    check_session_ends(*state, "{\"status\":200,\"body\":{}}\n", false); /* no taskId */
}

static void test_garbage_ends_the_session(void **state)
{
    check_session_ends(*state, "not json\n", false);
}

static void test_cut_inside_a_record_ends_the_session(void **state)
{
    check_session_ends(*state, "{\"taskId\":\"0123", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_records_reach_their_callers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_streams_off, setup_off, teardown),
        cmocka_unit_test_setup_teardown(test_bad_record_ends_the_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_ends_the_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_inside_a_record_ends_the_session, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
