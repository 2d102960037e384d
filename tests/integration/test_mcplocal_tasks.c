/* mcplocal (the real binary) between the fake mcpd and the fake OpenAI
 * backend: whole answers and streamed results (one request per task, the
 * backend's bytes verbatim as they arrive), the fallback to one post per
 * event, the backend's refusals passed through, mid-stream failures,
 * mislabelled event streams, other routes, cancel and 410 aborting both
 * transfers, many tasks at once, and SIGTERM with tasks in flight. */
#include "clock.h"
#include "fake_backend.h"
#include "fake_mcpd.h"
#include "mcplocal_fixture.h"
#include "proc.h"

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

#define WAIT_MS MLFX_WAIT_MS

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
    struct mlfx *x = mlfx_new("mcplocal-tasks");
    *state = x;
    if (!x)
        return -1;
    char config[1024];
    snprintf(config, sizeof config,
             "{\"llm\": {\"providers\": [\n"
             "  {\"name\": \"local\", \"type\": \"openai\", \"model\": \"served-model\",\n"
             "   \"url\": \"%s\", \"apiKeyEnv\": \"TEST_BACKEND_KEY\", \"publish\": true},\n"
             "  {\"name\": \"down\", \"type\": \"openai\", \"model\": \"m\",\n"
             "   \"url\": \"http://127.0.0.1:%d/v1\", \"publish\": true}\n"
             "]}}\n",
             fake_backend_url(x->fb), closed_port());
    const char *env[] = {"TEST_BACKEND_KEY=sk-local-123", NULL};
    return mlfx_launch(x, config, env);
}

static int teardown(void **state)
{
    assert_int_equal(mlfx_free(*state), 0);
    return 0;
}

static const char BODY[] = "{\"model\":\"local\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"hi\"}]}";

/* The result posts of task id as JSON values; caller frees each. */
static json_t *result(struct mlfx *x, const char *id, int i)
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

static void wait_results(struct mlfx *x, const char *id, int n)
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
    struct mlfx *x = *state;
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

/* The streamed result of task id once its body has ended; caller frees. */
static struct fake_mcpd_req *streamed(struct mlfx *x, const char *id)
{
    char path[256];
    fake_mcpd_result_path(id, path, sizeof path);
    if (fake_mcpd_wait_count(x->fm, path, 1, WAIT_MS) != 0 ||
        fake_mcpd_wait_complete(x->fm, path, WAIT_MS) != 0) {
        proc_dump(x->p);
        fail_msg("task %s: no complete streamed result", id);
    }
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, -1);
    assert_non_null(r);
    assert_true(r->streamed);
    assert_string_equal(r->session, "sess-1");
    assert_string_equal(r->ctype, "text/event-stream");
    return r;
}

static void push_path(struct mlfx *x, const char *id, const char *path, bool streaming,
                      const char *body)
{
    char data[2048];
    snprintf(data, sizeof data,
             "{\"kind\":\"infer\",\"taskId\":\"%s\",\"llmName\":\"local\",\"path\":\"%s\","
             "\"streaming\":%s,\"body\":%s}",
             id, path, streaming ? "true" : "false", body);
    assert_int_equal(fake_mcpd_push(x->fm, "task", id, data), 0);
}

static const char SBODY[] = "{\"model\":\"local\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                            "\"content\":\"hi\"}]}";

/* One streamed request per streaming task: the backend's bytes verbatim,
 * in order, the first event at mcpd before the backend sent its last. */
static void test_streamed_result(void **state)
{
    struct mlfx *x = *state;
    const int n = 5;
    fake_backend_set_stream(x->fb, n, 150);
    fake_backend_set_stream_named(x->fb, true);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "s1", "local", true, SBODY), 0);
    struct fake_mcpd_req *r = streamed(x, "s1");
    assert_int_equal(r->status, 200);
    char *sent = fake_backend_stream_bytes(x->fb);
    assert_string_equal(r->body, sent);
    free(sent);
    assert_non_null(strstr(r->body, "event: delta\ndata: {"));
    assert_non_null(strstr(r->body, "data: [DONE]\n\n"));
    int64_t last = fake_backend_chunk_sent_ms(x->fb, n - 1);
    if (r->first_at <= 0 || r->first_at > last)
        fail_msg("first piece at %lld, last chunk left the backend at %lld", (long long)r->first_at,
                 (long long)last);
    assert_true(r->pieces >= n);
    fake_mcpd_req_free(r);
    /* One request for the whole task. */
    assert_int_equal(fake_mcpd_count(x->fm, "/api/v1/llms/_provider-task/s1/"), 1);
    char *up = fake_backend_last_body(x->fb, "/v1/chat/completions");
    assert_non_null(strstr(up, "\"stream\":true"));
    free(up);
}

/* A backend far faster than mcpd: every byte arrives once, in order. */
static void test_streamed_backpressure(void **state)
{
    struct mlfx *x = *state;
    const int n = 3000;
    fake_backend_set_stream(x->fb, n, 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "bp", "local", true, SBODY), 0);
    struct fake_mcpd_req *r = streamed(x, "bp");
    assert_int_equal(r->status, 200);
    char *sent = fake_backend_stream_bytes(x->fb);
    assert_string_equal(r->body, sent);
    free(sent);
    fake_mcpd_req_free(r);
}

/* mcpd without streamed results refuses the form at once: the task goes on
 * chunk by chunk, in order. */
static void test_fallback_to_chunks(void **state)
{
    struct mlfx *x = *state;
    const int n = 4;
    fake_backend_set_stream(x->fb, n, 50);
    fake_mcpd_set_streamed(x->fm, FAKE_MCPD_STREAMED_415);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "f1", "local", true, SBODY), 0);
    wait_results(x, "f1", n + 2); /* the refused streamed post, n chunks, done */
    char path[256];
    fake_mcpd_result_path("f1", path, sizeof path);
    struct fake_mcpd_req *first = fake_mcpd_get(x->fm, path, 0);
    assert_true(first->streamed);
    assert_int_equal(first->status, 415);
    fake_mcpd_req_free(first);
    for (int i = 0; i < n; i++) {
        json_t *r = result(x, "f1", i + 1);
        json_t *data = json_object_get(json_object_get(r, "chunk"), "data");
        json_t *delta =
            json_object_get(json_array_get(json_object_get(data, "choices"), 0), "delta");
        char tok[16];
        snprintf(tok, sizeof tok, "tok%d", i);
        assert_string_equal(json_string_value(json_object_get(delta, "content")), tok);
        json_decref(r);
    }
    json_t *last = result(x, "f1", n + 1);
    assert_true(json_is_true(json_object_get(json_object_get(last, "chunk"), "done")));
    json_decref(last);
    proc_expect(x->p, "mcpd does not take streamed results", 1, WAIT_MS);

    /* Later tasks on this connection post chunks straight away. */
    assert_int_equal(fake_mcpd_push_infer(x->fm, "f2", "local", true, SBODY), 0);
    wait_results(x, "f2", n + 1);
    json_t *r = result(x, "f2", 0);
    assert_non_null(json_object_get(r, "chunk"));
    json_decref(r);

    /* An mcpd that reads the whole stream before refusing it: every event
     * is still posted, once. */
    fake_mcpd_drop_streams(x->fm); /* a new connection forgets the refusal */
    assert_int_equal(fake_mcpd_wait_stream(x->fm, 2, WAIT_MS), 0);
    proc_expect(x->p, "stream up", 2, WAIT_MS);
    fake_mcpd_set_streamed(x->fm, FAKE_MCPD_STREAMED_400_AT_END);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "f3", "local", true, SBODY), 0);
    wait_results(x, "f3", n + 2);
    struct fake_mcpd_req *s = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-task/f3/", 0);
    assert_true(s->streamed);
    assert_int_equal(s->status, 400);
    fake_mcpd_req_free(s);
    for (int i = 0; i < n; i++) {
        json_t *c = result(x, "f3", i + 1);
        char *t = json_dumps(c, JSON_COMPACT);
        char tok[16];
        snprintf(tok, sizeof tok, "\"tok%d\"", i);
        if (!strstr(t, tok))
            fail_msg("f3 post %d: %s", i + 1, t);
        free(t);
        json_decref(c);
    }
}

static void expect_response(struct mlfx *x, const char *id, int status, const char *body_json)
{
    wait_results(x, id, 1);
    json_t *r = result(x, id, 0);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), status);
    json_t *want = json_loads(body_json, JSON_DECODE_ANY, NULL);
    if (!json_equal(json_object_get(r, "body"), want)) {
        char *got = json_dumps(r, JSON_COMPACT);
        fail_msg("task %s: result %s, want body %s", id, got, body_json);
    }
    json_decref(want);
    json_decref(r);
}

/* The backend's refusals reach mcpd as they are: status, error object,
 * Retry-After and x-ratelimit-*, streaming requests included. */
static void test_pass_through(void **state)
{
    struct mlfx *x = *state;
    const char *err429 = "{\"error\":{\"message\":\"Rate limit reached for requests\","
                         "\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}";
    const char *hdrs[] = {"Retry-After: 20", "x-ratelimit-limit-requests: 60",
                          "x-ratelimit-remaining-requests: 0", "Server: fake", NULL};
    fake_backend_set_reply(x->fb, 429, "application/json", err429, hdrs);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "p1", "local", false, BODY), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "p2", "local", true, SBODY), 0);
    expect_response(x, "p1", 429, err429);
    expect_response(x, "p2", 429, err429); /* streaming refused up front */
    json_t *r = result(x, "p2", 0);
    json_t *h = json_object_get(r, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "retry-after")), "20");
    assert_string_equal(json_string_value(json_object_get(h, "x-ratelimit-limit-requests")), "60");
    assert_string_equal(json_string_value(json_object_get(h, "x-ratelimit-remaining-requests")),
                        "0");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_null(json_object_get(h, "server"));
    json_decref(r);
    /* The body is spliced byte for byte. */
    struct fake_mcpd_req *raw = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-task/p1/", 0);
    assert_non_null(strstr(raw->body, err429));
    fake_mcpd_req_free(raw);

    const char *err400 = "{\"error\":{\"message\":\"This model's maximum context length is 8192 "
                         "tokens.\",\"type\":\"invalid_request_error\",\"param\":\"messages\","
                         "\"code\":\"context_length_exceeded\"}}";
    fake_backend_set_reply(x->fb, 400, "application/json", err400, NULL);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "p3", "local", true, SBODY), 0);
    expect_response(x, "p3", 400, err400);
    /* An Anthropic error object. */
    const char *anth = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                       "\"message\":\"Overloaded\"}}";
    fake_backend_set_reply(x->fb, 529, "application/json", anth, NULL);
    push_path(x, "p4", "/chat/completions", false, BODY);
    expect_response(x, "p4", 529, anth);
    /* Not JSON: a string, with its Content-Type. */
    fake_backend_set_reply(x->fb, 503, "text/html", "<html>down</html>", NULL);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "p5", "local", false, BODY), 0);
    expect_response(x, "p5", 503, "\"<html>down</html>\"");
    r = result(x, "p5", 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r, "headers"), "content-type")),
        "text/html");
    json_decref(r);
    fake_backend_set_reply(x->fb, 0, NULL, NULL, NULL);
}

/* A backend that fails mid-stream: the events so far, then one error event
 * in OpenAI's shape, and the streamed body ends normally. */
static void test_mid_stream_failure(void **state)
{
    struct mlfx *x = *state;
    fake_backend_set_stream(x->fb, 10, 20);
    fake_backend_set_cut_after(x->fb, 3);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "ms", "local", true, SBODY), 0);
    struct fake_mcpd_req *r = streamed(x, "ms");
    assert_int_equal(r->status, 200);
    char *sent = fake_backend_stream_bytes(x->fb);
    assert_true(strncmp(r->body, sent, strlen(sent)) == 0);
    const char *tail = r->body + strlen(sent);
    free(sent);
    if (strncmp(tail, "data: {\"error\":{\"message\":\"backend stream broke: ", 49) != 0 ||
        !strstr(tail, "\"type\":\"server_error\",\"code\":\"backend_error\"}}\n\n"))
        fail_msg("streamed body ends with '%s'", tail);
    assert_null(strstr(r->body, "tok3"));
    fake_mcpd_req_free(r);
    proc_expect(x->p, "task ms (local) failed: backend stream broke", 1, WAIT_MS);
}

/* Event streams labelled as something else are still relayed as streams. */
static void test_sse_with_wrong_content_type(void **state)
{
    struct mlfx *x = *state;
    fake_backend_set_stream(x->fb, 3, 10);
    fake_backend_set_stream_ctype(x->fb, "application/json");
    assert_int_equal(fake_mcpd_push_infer(x->fm, "ct", "local", true, SBODY), 0);
    struct fake_mcpd_req *r = streamed(x, "ct");
    assert_int_equal(r->status, 200);
    char *sent = fake_backend_stream_bytes(x->fb);
    assert_string_equal(r->body, sent);
    free(sent);
    assert_non_null(strstr(r->body, "tok2"));
    fake_mcpd_req_free(r);
}

/* Tasks for other routes: POSTed under the base URL, only the model
 * replaced; the answer passes through. */
static void test_path_tasks(void **state)
{
    struct mlfx *x = *state;
    const char *emb = "{\"model\":\"local\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"float\"}";
    push_path(x, "pa", "/embeddings", false, emb);
    wait_results(x, "pa", 1);
    json_t *r = result(x, "pa", 0);
    assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
    json_t *body = json_object_get(r, "body");
    assert_string_equal(json_string_value(json_object_get(body, "path")), "/v1/embeddings");
    assert_string_equal(json_string_value(json_object_get(body, "model")), "served-model");
    json_decref(r);
    char *up = fake_backend_last_body(x->fb, "/v1/embeddings");
    assert_string_equal(up, "{\"model\":\"served-model\",\"input\":[\"a\",\"b\"],"
                            "\"encoding_format\":\"float\"}");
    free(up);
    push_path(x, "pb", "/messages?beta=true", false,
              "{\"model\":\"local\",\"max_tokens\":5,\"messages\":[]}");
    wait_results(x, "pb", 1);
    assert_int_equal(fake_backend_count(x->fb, "/v1/messages"), 1);
    /* A path that would leave the base URL fails the task. */
    push_path(x, "pc", "/../admin", false, "{}");
    wait_results(x, "pc", 1);
    r = result(x, "pc", 0);
    assert_string_equal(error_of(r), "task frame with an invalid path");
    json_decref(r);
}

static void test_backend_errors(void **state)
{
    struct mlfx *x = *state;
    assert_int_equal(fake_mcpd_push_infer(x->fm, "e3", "down", false, BODY), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "e6", "down", true, SBODY), 0);
    wait_results(x, "e3", 1);
    json_t *r = result(x, "e3", 0);
    assert_string_equal(error_of(r), "backend unreachable: Couldn't connect to server");
    json_decref(r);
    wait_results(x, "e6", 1);
    r = result(x, "e6", 0);
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

static void test_cancel_aborts_both(void **state)
{
    struct mlfx *x = *state;
    fake_backend_set_stream(x->fb, 500, 20); /* 10 s if nobody stops it */
    assert_int_equal(fake_mcpd_push_infer(x->fm, "c1", "local", true, SBODY), 0);
    char path[256];
    fake_mcpd_result_path("c1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_body(x->fm, path, "tok1", WAIT_MS), 0);
    int64_t t0 = clock_mono_ms();
    assert_int_equal(fake_mcpd_push_cancel(x->fm, "c1"), 0);
    assert_int_equal(fake_backend_wait_aborted(x->fb, 1, 3000), 0);
    assert_true(clock_mono_ms() - t0 < 2000);
    proc_expect(x->p, "task c1 (local): cancelled by mcpd", 1, WAIT_MS);
    /* The streamed post was cut off, and nothing else is posted. */
    assert_int_equal(fake_mcpd_wait_complete(x->fm, path, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, -1);
    assert_int_equal(r->status, -1);
    fake_mcpd_req_free(r);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, 2, 300), -1);
    assert_int_equal(fake_backend_streams_completed(x->fb), 0);
}

static void test_410_aborts_upstream(void **state)
{
    struct mlfx *x = *state;
    fake_mcpd_set_result_status(x->fm, 410);
    fake_backend_set_stream(x->fb, 500, 20);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "g1", "local", true, SBODY), 0);
    assert_int_equal(fake_backend_wait_aborted(x->fb, 1, 3000), 0);
    proc_expect(x->p,
                "task g1 (local): mcpd answered 410 to the streamed result, the caller is gone", 1,
                WAIT_MS);
    char path[256];
    fake_mcpd_result_path("g1", path, sizeof path);
    assert_int_equal(fake_mcpd_count(x->fm, path), 1);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, 2, 300), -1);
    /* The same for a whole answer. */
    assert_int_equal(fake_mcpd_push_infer(x->fm, "g2", "local", false, BODY), 0);
    proc_expect(x->p, "task g2 (local): mcpd answered 410 to a result post", 1, WAIT_MS);
}

static void test_many_tasks_at_once(void **state)
{
    struct mlfx *x = *state;
    const int tasks = 6, chunks = 4;
    fake_backend_set_stream(x->fb, chunks, 100);
    int64_t t0 = clock_mono_ms();
    for (int i = 0; i < tasks; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        assert_int_equal(fake_mcpd_push_infer(x->fm, id, "local", i % 2 == 0, i % 2 ? BODY : SBODY),
                         0);
    }
    for (int i = 0; i < tasks; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        if (i % 2 == 0) {
            struct fake_mcpd_req *r = streamed(x, id);
            for (int k = 0; k < chunks; k++) {
                char tok[16];
                snprintf(tok, sizeof tok, "\"tok%d\"", k);
                assert_non_null(strstr(r->body, tok));
            }
            fake_mcpd_req_free(r);
        } else {
            wait_results(x, id, 1);
        }
    }
    /* Concurrent, not one after another (that would take >= 1.2 s). */
    int64_t took = clock_mono_ms() - t0;
    if (took > 1100)
        fail_msg("6 tasks took %lld ms", (long long)took);
}

/* SIGTERM: a task whose caller has nothing yet fails at once (mcpd can
 * give the call to another member of a pool); a stream already under way
 * finishes within the grace period; the control stream closes last. */
static void test_sigterm_fails_tasks_in_flight(void **state)
{
    struct mlfx *x = *state;
    fake_backend_set_stream(x->fb, 40, 20);
    fake_backend_set_answer_delay(x->fb, 5000);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "q1", "local", true, SBODY), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "q2", "local", false, BODY), 0);
    char path[256];
    fake_mcpd_result_path("q1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_body(x->fm, path, "tok1", WAIT_MS), 0);
    assert_int_equal(fake_backend_wait_count(x->fb, "/v1/chat/completions", 2, WAIT_MS), 0);
    proc_signal(x->p, SIGTERM);
    /* q2 waited for its backend: it fails now */
    wait_results(x, "q2", 1);
    json_t *r2 = result(x, "q2", 0);
    assert_string_equal(error_of(r2), "publisher shutting down");
    json_decref(r2);
    /* q1 had begun: it streams to its end, cleanly */
    assert_int_equal(proc_wait_exit(x->p, WAIT_MS), 0);
    char *log = proc_output(x->p);
    proc_free(x->p);
    x->p = NULL;
    assert_int_equal(fake_mcpd_wait_complete(x->fm, path, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, -1);
    assert_int_equal(r->status, 200);
    if (!strstr(r->body, "tok39") || !strstr(r->body, "data: [DONE]") || strstr(r->body, "error"))
        fail_msg("q1 body: %s", r->body);
    fake_mcpd_req_free(r);
    assert_int_equal(fake_mcpd_wait_no_stream(x->fm, WAIT_MS), 0);
    if (!strstr(log, "shutting down (2 tasks in flight)"))
        fail_msg("log:\n%s", log);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_non_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_to_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pass_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mid_stream_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sse_with_wrong_content_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_tasks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_aborts_both, setup, teardown),
        cmocka_unit_test_setup_teardown(test_410_aborts_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_tasks_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_fails_tasks_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
