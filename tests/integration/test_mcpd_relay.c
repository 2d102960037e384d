/*
 * The inference relay end to end over HTTP, with the fake publisher: round
 * trips, true streaming, every error status, cancellation, result-post
 * rules, concurrency, and the OpenAI-compatible surface.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "test_env.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};
static const char PROVIDERS[] = "[{\"name\":\"llm1\",\"type\":\"openai\",\"model\":\"q\"}]";

static int start_with(void **state, const char *const args[])
{
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static int setup(void **state)
{
    const char *args[] = {"--max-inflight", "200", NULL};
    return start_with(state, args);
}

static int setup_timeouts(void **state)
{
    const char *args[] = {"--infer-timeout", "400ms", "--idle-timeout", "300ms", NULL};
    return start_with(state, args);
}

static int setup_small_cap(void **state)
{
    const char *args[] = {"--max-inflight", "2", NULL};
    return start_with(state, args);
}

static int teardown(void **state)
{
    assert_int_equal(fixture_stop(*state), 0);
    return 0;
}

static void script(struct fixture *f, enum fp_mode mode, int chunks, int delay_ms)
{
    struct fp_script s = {.mode = mode, .chunks = chunks, .delay_ms = delay_ms};
    fake_publisher_set_script(f->fp, &s);
}

static int infer(struct fixture *f, const char *body, struct http_resp *r)
{
    return test_call(f->env, "POST", "/api/v1/llms/llm1/infer", f->env->mcpd.token, JSON_HDR, body,
                     r);
}

static struct http_stream *infer_stream(struct fixture *f, const char *path, const char *body)
{
    char *url = mcpd_url(&f->env->mcpd, path);
    struct http_stream *s = http_stream_open("POST", url, f->env->mcpd.token, JSON_HDR, body);
    free(url);
    return s;
}

/* The id of the n-th (1-based) task frame the publisher received. */
static char *task_id(struct fixture *f, int n)
{
    char *t = fake_publisher_transcript(f->fp);
    char *p = t, *id = NULL;
    for (int i = 0; i < n && p; i++) {
        p = strstr(p, "event: task\nid: ");
        if (p && i < n - 1)
            p++;
    }
    if (p)
        id = strndup(p + strlen("event: task\nid: "), 32);
    free(t);
    return id;
}

static void test_round_trip_splices_body(void **state)
{
    struct fixture *f = *state;
    struct http_resp r;
    infer(f,
          "{\"messages\": [{\"role\": \"user\",\n \"content\": \"hello there\"}],\n"
          " \"temperature\": 0.5}",
          &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"content\":\"echo: hello there\""));
    http_resp_free(&r);
    char *t = fake_publisher_transcript(f->fp);
    /* the caller's bytes are relayed as sent, line breaks turned to spaces */
    assert_non_null(strstr(t, "\"streaming\":false,\"body\":{\"messages\": [{\"role\": \"user\",  "
                              "\"content\": \"hello there\"}],  \"temperature\": 0.5}}"));
    assert_non_null(strstr(t, "\"kind\":\"infer\""));
    assert_non_null(strstr(t, "\"llmName\":\"llm1\""));
    free(t);

    /* a body near the 1 MiB cap streams through the small connection pool */
    size_t n = 900 * 1024;
    char *big = malloc(n + 64);
    int k = snprintf(big, 64, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    memset(big + k, 'z', n);
    strcpy(big + k + n, "\"}]}");
    infer(f, big, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "echo: zzzz"));
    http_resp_free(&r);
    free(big);
}

static void test_streaming_is_incremental_and_ordered(void **state)
{
    struct fixture *f = *state;
    script(f, FP_ANSWER, 4, 150);
    struct http_stream *s =
        infer_stream(f, "/api/v1/llms/llm1/infer",
                     "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"go\"}]}");
    assert_int_equal(http_stream_wait_for(s, "tok0", 1, 5000), 0);
    /* the first token arrived before the publisher sent the last */
    char *early = http_stream_body(s);
    assert_null(strstr(early, "tok3"));
    assert_null(strstr(early, "[DONE]"));
    free(early);
    assert_int_equal(http_stream_wait_for(s, "data: [DONE]\n\n", 1, 5000), 0);
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    assert_int_equal(http_stream_status(s), 200);
    char *body = http_stream_body(s);
    char *p0 = strstr(body, "tok0"), *p1 = strstr(body, "tok1"), *p2 = strstr(body, "tok2"),
         *p3 = strstr(body, "tok3");
    assert_true(p0 && p1 && p2 && p3 && p0 < p1 && p1 < p2 && p2 < p3);
    assert_non_null(strstr(body, "data: {\"id\":\"chatcmpl-fake\""));
    free(body);
    http_stream_close(s);
}

static void test_bad_requests(void **state)
{
    struct fixture *f = *state;
    struct http_resp r;
    infer(f, "{\"messages\":[]}", &r);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    infer(f, "{\"model\":\"x\"}", &r);
    assert_int_equal(r.status, 400);
    http_resp_free(&r);
    infer(f, "{\"messages\":[{\"role\":\"user\"}]", &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"error\""));
    http_resp_free(&r);
    test_call(f->env, "POST", "/api/v1/llms/nope/infer", f->env->mcpd.token, JSON_HDR,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 404);
    http_resp_free(&r);
}

static void test_offline_publisher_gets_503_at_once(void **state)
{
    struct fixture *f = *state;
    struct http_resp ok;
    /* a first call routes (and caches the route as active) */
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &ok);
    assert_int_equal(ok.status, 200);
    http_resp_free(&ok);
    fake_publisher_drop(f->fp);
    assert_int_equal(test_wait_status(f->env, "llm1", "inactive", 5000), 0);
    struct http_resp r;
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 503);
    char *ra = http_resp_header(&r, "Retry-After");
    assert_non_null(ra);
    assert_true(atoi(ra) > 0);
    free(ra);
    http_resp_free(&r);
}

static void test_publisher_error_is_502(void **state)
{
    struct fixture *f = *state;
    script(f, FP_ERROR, 0, 0);
    struct http_resp r;
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(r.body, "backend exploded"));
    http_resp_free(&r);
    /* streaming, before any chunk: still a plain 502 */
    struct http_stream *s = infer_stream(f, "/api/v1/llms/llm1/infer",
                                         "{\"stream\":true,\"messages\":[{\"role\":\"user\"}]}");
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    assert_int_equal(http_stream_status(s), 502);
    http_stream_close(s);
    /* a backend status is passed through as is */
    struct fp_script sc = {.mode = FP_STATUS, .status = 429};
    fake_publisher_set_script(f->fp, &sc);
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 429);
    http_resp_free(&r);
}

static void test_disconnect_mid_stream_ends_with_error_event(void **state)
{
    struct fixture *f = *state;
    struct fp_script sc = {.mode = FP_DROP, .chunks = 5, .drop_after = 2, .delay_ms = 20};
    fake_publisher_set_script(f->fp, &sc);
    struct http_stream *s = infer_stream(f, "/api/v1/llms/llm1/infer",
                                         "{\"stream\":true,\"messages\":[{\"role\":\"user\"}]}");
    assert_int_equal(http_stream_wait_for(s, "event: error\ndata: {\"error\":", 1, 5000), 0);
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    char *body = http_stream_body(s);
    assert_non_null(strstr(body, "tok1"));
    assert_null(strstr(body, "[DONE]"));
    free(body);
    http_stream_close(s);
}

static void test_disconnect_while_waiting_is_502_at_once(void **state)
{
    struct fixture *f = *state;
    script(f, FP_SILENT, 0, 0);
    struct http_stream *s = infer_stream(f, "/api/v1/llms/llm1/infer",
                                         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_int_equal(fake_publisher_wait(f->fp, "event: task", 1, 5000), 0);
    fake_publisher_drop(f->fp);
    /* well inside the 10 min inference timeout */
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    assert_int_equal(http_stream_status(s), 502);
    char *body = http_stream_body(s);
    assert_non_null(strstr(body, "publisher disconnected"));
    free(body);
    http_stream_close(s);
}

static void test_timeouts_are_504(void **state)
{
    struct fixture *f = *state;
    script(f, FP_SILENT, 0, 0);
    struct http_resp r;
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 504);
    http_resp_free(&r);
    /* the publisher is told to stop */
    assert_int_equal(fake_publisher_wait(f->fp, "event: cancel", 1, 5000), 0);
    /* idle timeout between chunks, inside the overall timeout */
    script(f, FP_ANSWER, 3, 350);
    struct http_stream *s = infer_stream(f, "/api/v1/llms/llm1/infer",
                                         "{\"stream\":true,\"messages\":[{\"role\":\"user\"}]}");
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    char *body = http_stream_body(s);
    long st = http_stream_status(s);
    /* either the first chunk came and the idle timeout ended the stream, or
     * the overall timeout passed first: both are 504s */
    assert_true(
        (st == 200 && strstr(body, "event: error") && strstr(body, "\"code\":\"timeout\"")) ||
        st == 504);
    free(body);
    http_stream_close(s);
}

static void test_caller_disconnect_sends_cancel_and_410(void **state)
{
    struct fixture *f = *state;
    script(f, FP_SILENT, 0, 0);
    struct http_stream *s = infer_stream(f, "/api/v1/llms/llm1/infer",
                                         "{\"stream\":true,\"messages\":[{\"role\":\"user\"}]}");
    assert_int_equal(fake_publisher_wait(f->fp, "event: task", 1, 5000), 0);
    char *id = task_id(f, 1);
    http_stream_close(s);
    char needle[128];
    snprintf(needle, sizeof needle, "event: cancel\ndata: {\"taskId\":\"%s\"}", id);
    assert_int_equal(fake_publisher_wait(f->fp, needle, 1, 5000), 0);
    assert_int_equal(fake_publisher_post_result(f->fp, id, "{\"chunk\":{\"data\":{\"a\":1}}}"),
                     410);
    free(id);
}

static void test_result_post_rules(void **state)
{
    struct fixture *f = *state;
    script(f, FP_SILENT, 0, 0);
    struct http_stream *s = infer_stream(f, "/api/v1/llms/llm1/infer",
                                         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_int_equal(fake_publisher_wait(f->fp, "event: task", 1, 5000), 0);
    char *id = task_id(f, 1);
    /* malformed posts */
    assert_int_equal(fake_publisher_post_result(f->fp, id, "{}"), 400);
    assert_int_equal(fake_publisher_post_result(f->fp, id, "{\"status\":200,\"error\":\"x\"}"),
                     400);
    assert_int_equal(fake_publisher_post_result(f->fp, id, "{\"status\":\"ok\",\"body\":{}}"), 400);
    assert_int_equal(fake_publisher_post_result(f->fp, id, "not json"), 400);
    /* not streaming: chunks are refused */
    assert_int_equal(fake_publisher_post_result(f->fp, id, "{\"chunk\":{\"data\":{}}}"), 400);
    /* unknown task */
    assert_int_equal(
        fake_publisher_post_result(f->fp, "0123456789abcdef0123456789abcdef", "{\"error\":\"x\"}"),
        404);
    /* another owner's session may not post for it */
    char *bob = mcpd_create_token(f->env->mcpd.db, "bob");
    struct fake_publisher *other = fake_publisher_start(
        f->env->mcpd.url, bob, "[{\"name\":\"bobs\",\"type\":\"openai\",\"model\":\"q\"}]", NULL);
    assert_non_null(other);
    assert_int_equal(fake_publisher_post_result(other, id, "{\"error\":\"x\"}"), 404);
    fake_publisher_stop(other);
    free(bob);
    /* a good post, then a stale one */
    assert_int_equal(
        fake_publisher_post_result(f->fp, id, "{\"status\":201,\"body\":{\"fine\":true}}"), 200);
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    assert_int_equal(http_stream_status(s), 201);
    char *body = http_stream_body(s);
    assert_string_equal(body, "{\"fine\":true}");
    free(body);
    http_stream_close(s);
    assert_int_equal(fake_publisher_post_result(f->fp, id, "{\"status\":200,\"body\":{}}"), 410);
    free(id);
}

/* Counts complete Content-Length responses at the start of buf; their
 * status codes go to codes. */
static int parse_responses(const char *buf, size_t n, long *codes, int max)
{
    int count = 0;
    size_t off = 0;
    while (count < max) {
        const char *end = memmem(buf + off, n - off, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t head = (size_t)(end + 4 - (buf + off)), cl = 0;
        const char *h = memmem(buf + off, head, "\r\nContent-Length:", 17);
        if (!h)
            h = memmem(buf + off, head, "\r\ncontent-length:", 17);
        if (h)
            cl = strtoul(h + 17, NULL, 10);
        if (n - off < head + cl)
            break;
        codes[count++] = strtol(buf + off + 9, NULL, 10);
        off += head + cl;
    }
    return count;
}

/* mcplocal pipelines final result posts: several on one connection, sent
 * with one write, answered in order. */
static void test_pipelined_result_posts(void **state)
{
    struct fixture *f = *state;
    script(f, FP_SILENT, 0, 0);
    enum { N = 3 };
    struct http_stream *s[N];
    for (int i = 0; i < N; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"p%d\"}]}", i);
        s[i] = infer_stream(f, "/api/v1/llms/llm1/infer", body);
        assert_int_equal(fake_publisher_wait(f->fp, "event: task", i + 1, 5000), 0);
    }
    char *id[N];
    for (int i = 0; i < N; i++)
        id[i] = task_id(f, i + 1);

    /* N results, then the first one again: 200s in order, then 410. */
    static char req[8192];
    size_t len = 0;
    for (int i = 0; i <= N; i++) {
        char body[64];
        int bl = snprintf(body, sizeof body, "{\"status\":200,\"body\":{\"n\":%d}}", i % N);
        len += (size_t)snprintf(req + len, sizeof req - len,
                                "POST /api/v1/llms/_provider-task/%s/result HTTP/1.1\r\n"
                                "Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                                "x-mcpctl-provider-session: %s\r\n"
                                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                                id[i % N], f->env->mcpd.token, fake_publisher_session(f->fp), bl,
                                body);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->env->mcpd.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    static char resp[16384];
    size_t got = 0;
    long codes[N + 1];
    int count = 0;
    while (count < N + 1 && got < sizeof resp) {
        ssize_t r = recv(fd, resp + got, sizeof resp - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        count = parse_responses(resp, got, codes, N + 1);
    }
    close(fd);
    assert_int_equal(count, N + 1);
    for (int i = 0; i < N; i++)
        assert_int_equal(codes[i], 200);
    assert_int_equal(codes[N], 410);

    for (int i = 0; i < N; i++) {
        assert_int_equal(http_stream_wait_done(s[i], 5000), 0);
        assert_int_equal(http_stream_status(s[i]), 200);
        char *body = http_stream_body(s[i]);
        char want[32];
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_string_equal(body, want);
        free(body);
        http_stream_close(s[i]);
        free(id[i]);
    }
}

struct caller {
    struct fixture *f;
    int i;
    long status;
    int matched;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    char body[128], want[64];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"caller-%d\"}]}",
             c->i);
    snprintf(want, sizeof want, "\"echo: caller-%d\"", c->i);
    struct http_resp r;
    infer(c->f, body, &r);
    c->status = r.status;
    c->matched = strstr(r.body, want) != NULL;
    http_resp_free(&r);
    return NULL;
}

static void test_concurrent_relays_match_callers(void **state)
{
    struct fixture *f = *state;
    script(f, FP_ANSWER, 0, 20);
    enum { N = 120 };
    struct caller callers[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        callers[i] = (struct caller){.f = f, .i = i};
        pthread_create(&threads[i], NULL, caller_main, &callers[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(callers[i].status, 200);
        assert_true(callers[i].matched);
    }
}

static void test_inflight_cap_is_503(void **state)
{
    struct fixture *f = *state;
    script(f, FP_SILENT, 0, 0);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    struct http_stream *a = infer_stream(f, "/api/v1/llms/llm1/infer", body);
    struct http_stream *b = infer_stream(f, "/api/v1/llms/llm1/infer", body);
    assert_int_equal(fake_publisher_wait(f->fp, "event: task", 2, 5000), 0);
    struct http_resp r;
    infer(f, body, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "in flight"));
    http_resp_free(&r);
    http_stream_close(a);
    http_stream_close(b);
    assert_int_equal(fake_publisher_wait(f->fp, "event: cancel", 2, 5000), 0);
}

static void test_openai_surface(void **state)
{
    struct fixture *f = *state;
    struct http_resp r;
    test_call(f->env, "POST", "/v1/chat/completions", f->env->mcpd.token, JSON_HDR,
              "{\"model\":\"llm1\",\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}]}", &r);
    assert_int_equal(r.status, 200);
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "echo: hey");
    json_decref(o);
    http_resp_free(&r);

    test_call(f->env, "POST", "/v1/chat/completions", f->env->mcpd.token, JSON_HDR,
              "{\"model\":\"missing\",\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}]}", &r);
    assert_int_equal(r.status, 404);
    o = json_loads(r.body, 0, NULL);
    json_t *err = json_object_get(o, "error");
    assert_true(json_is_object(err));
    assert_true(json_is_string(json_object_get(err, "message")));
    assert_true(json_is_string(json_object_get(err, "type")));
    assert_non_null(json_object_get(err, "code"));
    json_decref(o);
    http_resp_free(&r);

    test_call(f->env, "GET", "/v1/models", f->env->mcpd.token, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    o = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "list");
    json_t *m = json_array_get(json_object_get(o, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "id")), "llm1");
    assert_string_equal(json_string_value(json_object_get(m, "object")), "model");
    assert_string_equal(json_string_value(json_object_get(m, "owned_by")), "alice");
    json_decref(o);
    http_resp_free(&r);

    script(f, FP_ANSWER, 2, 0);
    struct http_stream *s = infer_stream(f, "/v1/chat/completions",
                                         "{\"model\":\"llm1\",\"stream\":true,\"messages\":[{"
                                         "\"role\":\"user\",\"content\":\"x\"}]}");
    assert_int_equal(http_stream_wait_for(s, "data: [DONE]\n\n", 1, 5000), 0);
    char *body = http_stream_body(s);
    assert_non_null(strstr(body, "chat.completion.chunk"));
    free(body);
    http_stream_close(s);

    /* inactive Llms are not listed */
    fake_publisher_drop(f->fp);
    assert_int_equal(test_wait_status(f->env, "llm1", "inactive", 5000), 0);
    test_call(f->env, "GET", "/v1/models", f->env->mcpd.token, NULL, NULL, &r);
    assert_null(strstr(r.body, "llm1"));
    http_resp_free(&r);
}

static const char STREAM_BODY[] =
    "{\"model\":\"llm1\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";

/* A streamed result post: the publisher's events reach the caller verbatim
 * (event names and all) as they arrive, and the caller's stream ends with
 * the post's body. */
static void test_streamed_result_is_relayed_verbatim(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {.mode = FP_STREAMED, .chunks = 3, .delay_ms = 300};
    fake_publisher_set_script(f->fp, &s);
    struct http_stream *st = infer_stream(f, "/v1/chat/completions", STREAM_BODY);
    assert_int_equal(http_stream_wait_for(st, "tok0", 1, 5000), 0);
    /* incremental: the first event is at the caller before the last is sent */
    assert_true(fake_publisher_events_sent(f->fp) < 3);
    assert_int_equal(http_stream_wait_done(st, 10000), 0);
    assert_int_equal(http_stream_status(st), 200);
    char *body = http_stream_body(st);
    char want[1024] = "";
    for (int i = 0; i < 3; i++) {
        char ev[256];
        snprintf(ev, sizeof ev,
                 "event: delta\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                 "\"tok%d \"}}]}\n\n",
                 i);
        strcat(want, ev);
    }
    strcat(want, "data: [DONE]\n\n");
    assert_string_equal(body, want);
    free(body);
    http_stream_close(st);
    for (int i = 0; i < 500 && fake_publisher_last_streamed_status(f->fp) == 0; i++)
        usleep(10000);
    assert_int_equal(fake_publisher_last_streamed_status(f->fp), 200);
}

/* A streamed post that breaks off: the caller's stream ends with an error
 * event in OpenAI's shape, after the events that came through. */
static void test_streamed_result_cut_off_ends_with_error(void **state)
{
    struct fixture *f = *state;
    struct fp_script s = {.mode = FP_STREAMED, .chunks = 3, .delay_ms = 20, .cut_after = 2};
    fake_publisher_set_script(f->fp, &s);
    struct http_stream *st = infer_stream(f, "/v1/chat/completions", STREAM_BODY);
    assert_int_equal(http_stream_wait_done(st, 10000), 0);
    char *body = http_stream_body(st);
    assert_non_null(strstr(body, "tok1"));
    assert_null(strstr(body, "[DONE]"));
    char *err = strstr(body, "event: error\ndata: ");
    assert_non_null(err);
    json_t *o = json_loads(err + strlen("event: error\ndata: "), JSON_DISABLE_EOF_CHECK, NULL);
    assert_true(json_is_string(json_object_get(json_object_get(o, "error"), "message")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "error"), "type")),
                        "server_error");
    json_decref(o);
    free(body);
    http_stream_close(st);
}

/* The backend's answer passes through: status, body byte for byte, and
 * Retry-After and x-ratelimit-* (other headers stay behind). */
static void test_backend_status_and_headers_pass_through(void **state)
{
    struct fixture *f = *state;
    static const char err_body[] = "{\"error\": {\"message\": \"slow down\", \"type\": "
                                   "\"rate_limit_error\", \"code\": \"rate_limit_exceeded\"}}";
    char raw[512];
    snprintf(raw, sizeof raw,
             "{\"status\":429,\"headers\":{\"Retry-After\":\"7\","
             "\"x-ratelimit-remaining-requests\":\"0\",\"X-Backend-Secret\":\"z\"},"
             "\"body\":%s}",
             err_body);
    struct fp_script s = {.mode = FP_RAW, .raw = raw};
    fake_publisher_set_script(f->fp, &s);
    struct http_resp r;
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.body, err_body);
    char *v = http_resp_header(&r, "Retry-After");
    assert_non_null(v);
    assert_string_equal(v, "7");
    free(v);
    v = http_resp_header(&r, "x-ratelimit-remaining-requests");
    assert_non_null(v);
    assert_string_equal(v, "0");
    free(v);
    assert_null(http_resp_header(&r, "X-Backend-Secret"));
    http_resp_free(&r);

    /* a body that is not JSON comes as a string, with its Content-Type */
    s.raw = "{\"status\":200,\"headers\":{\"Content-Type\":\"text/plain\"},\"body\":\"plain "
            "words\"}";
    fake_publisher_set_script(f->fp, &s);
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "plain words");
    v = http_resp_header(&r, "Content-Type");
    assert_string_equal(v, "text/plain");
    free(v);
    http_resp_free(&r);
}

/* A publisher cannot make mcpd send invalid HTTP: an informational or
 * made-up status is a publisher error (502), and 204 goes out without a
 * body. */
static void test_publisher_cannot_break_http(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {"100", "101", "103", "99", "600"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char raw[128];
        snprintf(raw, sizeof raw, "{\"status\":%s,\"body\":{\"x\":1}}", bad[i]);
        struct fp_script s = {.mode = FP_RAW, .raw = raw};
        fake_publisher_set_script(f->fp, &s);
        struct http_resp r;
        infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
        assert_int_equal(r.status, 502);
        http_resp_free(&r);
        assert_int_equal(fake_publisher_wait_posts(f->fp, 400, (int)i + 1, 5000), 0);
    }
    struct fp_script s = {.mode = FP_RAW, .raw = "{\"status\":204,\"body\":{\"x\":1}}"};
    fake_publisher_set_script(f->fp, &s);
    struct http_resp r;
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    http_resp_free(&r);
    /* and the connection is still in step: the next call works */
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_ANSWER});
    infer(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"after\"}]}", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "echo: after"));
    http_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_splices_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_is_incremental_and_ordered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_publisher_gets_503_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_error_is_502, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_mid_stream_ends_with_error_event, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_while_waiting_is_502_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeouts_are_504, setup_timeouts, teardown),
        cmocka_unit_test_setup_teardown(test_caller_disconnect_sends_cancel_and_410, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_result_post_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_result_posts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_relays_match_callers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_cap_is_503, setup_small_cap, teardown),
        cmocka_unit_test_setup_teardown(test_openai_surface, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_result_is_relayed_verbatim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_result_cut_off_ends_with_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_backend_status_and_headers_pass_through, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_publisher_cannot_break_http, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
