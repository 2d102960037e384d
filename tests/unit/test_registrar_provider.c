/* The OpenAI-compatible provider against the fake backend: whole answers
 * passed on with their status, headers and body; event streams relayed
 * byte for byte as they arrive (whatever their Content-Type says); other
 * routes; failures; availability checks, abort and pause. */
#include "clock.h"
#include "config.h"
#include "fake_backend.h"
#include "loop.h"
#include "provider_openai.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

struct run {
    struct loop *loop;
    struct openai_call *call;
    bool done;
    enum openai_outcome outcome;
    long status;
    char body[4096];
    char headers[1024]; /* "name: value\n" for every header passed on */
    char error[512];
    char detail[1024];
    bool mid_stream;
    bool started;
    long start_status;
    char bytes[65536]; /* the event stream as relayed */
    size_t nbytes;
    int chunks; /* "data:" lines seen so far */
    int64_t chunk_at[16];
    int free_at;  /* free the call when this chunk arrives (0: never) */
    int pause_at; /* pause when this chunk arrives (0: never) */
    bool avail;
};

static int run_until(struct loop *l, const bool *flag, int timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;
    while (!*flag && clock_mono_ms() < end)
        loop_run_once(l, 20);
    return *flag ? 0 : -1;
}

static void on_start(void *ud, long status)
{
    struct run *r = ud;
    r->started = true;
    r->start_status = status;
}

static void on_bytes(void *ud, const char *data, size_t len)
{
    struct run *r = ud;
    if (r->nbytes + len < sizeof r->bytes) {
        memcpy(r->bytes + r->nbytes, data, len);
        r->nbytes += len;
        r->bytes[r->nbytes] = '\0';
    }
    int seen = 0;
    for (const char *p = r->bytes; (p = strstr(p, "data: {")) != NULL; p++)
        seen++;
    while (r->chunks < seen) {
        if (r->chunks < 16)
            r->chunk_at[r->chunks] = clock_mono_ms();
        r->chunks++;
        if (r->chunks == r->free_at) {
            openai_call_free(r->call);
            r->call = NULL;
            r->done = true;
            return;
        }
        if (r->chunks == r->pause_at)
            openai_call_pause(r->call);
    }
}

static const struct openai_stream_fns FNS = {.on_start = on_start, .on_bytes = on_bytes};

static void on_done(void *ud, const struct openai_result *res)
{
    struct run *r = ud;
    r->done = true;
    r->outcome = res->outcome;
    r->status = res->status;
    r->mid_stream = res->mid_stream;
    if (res->body)
        snprintf(r->body, sizeof r->body, "%.*s", (int)res->body_len, res->body);
    size_t off = 0;
    for (size_t i = 0; i < res->n_headers && off < sizeof r->headers; i++)
        off += (size_t)snprintf(r->headers + off, sizeof r->headers - off, "%s: %s\n",
                                res->header_names[i], res->header_values[i]);
    if (res->error)
        snprintf(r->error, sizeof r->error, "%s", res->error);
    if (res->detail)
        snprintf(r->detail, sizeof r->detail, "%s", res->detail);
    openai_call_free(r->call); /* freeing inside on_done */
    r->call = NULL;
}

static void on_check(void *ud, bool available, const char *reason)
{
    struct run *r = ud;
    r->done = true;
    r->avail = available;
    snprintf(r->error, sizeof r->error, "%s", reason ? reason : "");
    openai_call_free(r->call);
    r->call = NULL;
}

static struct provider_cfg provider(const char *url)
{
    struct provider_cfg p = {.name = "local",
                             .type = "openai",
                             .model = "served-model",
                             .url = (char *)url,
                             .api_key_env = "TEST_PROVIDER_KEY"};
    return p;
}

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

struct fixture {
    struct fake_backend *fb;
    struct loop *loop;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->fb = fake_backend_start();
    f->loop = loop_new();
    *state = f;
    return f->fb && f->loop ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    loop_free(f->loop);
    fake_backend_stop(f->fb);
    free(f);
    unsetenv("TEST_PROVIDER_KEY");
    return 0;
}

static const char REQ[] = "{\"model\":\"served-model\",\"messages\":[{\"role\":\"user\","
                          "\"content\":\"hi\"}]}";
static const char SREQ[] = "{\"model\":\"served-model\",\"stream\":true,\"messages\":[]}";

static struct openai_call *infer(struct fixture *f, const struct provider_cfg *p, const char *path,
                                 const char *req, bool streaming, struct run *r)
{
    return openai_infer(f->loop, p, path, req, strlen(req), streaming, &FNS, on_done, r);
}

static void test_non_streaming(void **state)
{
    struct fixture *f = *state;
    setenv("TEST_PROVIDER_KEY", "sekrit", 1);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop};
    r.call = infer(f, &p, "/chat/completions", REQ, false, &r);
    assert_non_null(r.call);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_RESPONSE);
    assert_int_equal(r.status, 200);
    assert_false(r.started);
    assert_non_null(strstr(r.headers, "Content-Type: application/json\n"));
    assert_non_null(strstr(r.body, "hello from fake"));
    assert_non_null(strstr(r.body, "\"model\":\"served-model\""));
    char *auth = fake_backend_last_header(f->fb, "/v1/chat/completions", "Authorization");
    assert_string_equal(auth, "Bearer sekrit");
    free(auth);
}

static void test_streaming_byte_for_byte(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_stream(f->fb, 4, 150);
    fake_backend_set_stream_named(f->fb, true);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop};
    r.call = infer(f, &p, "/chat/completions", SREQ, true, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_STREAMED);
    assert_true(r.started);
    assert_int_equal(r.start_status, 200);
    assert_int_equal(r.chunks, 4);
    /* Verbatim: event names, [DONE] and all. */
    char *sent = fake_backend_stream_bytes(f->fb);
    assert_string_equal(r.bytes, sent);
    free(sent);
    assert_non_null(strstr(r.bytes, "event: delta\ndata: {"));
    assert_non_null(strstr(r.bytes, "event: done\ndata: [DONE]\n\n"));
    /* Each chunk was delivered before the backend even produced the next:
     * nothing is collected first. */
    for (int i = 0; i < 3; i++) {
        int64_t next_sent = fake_backend_chunk_sent_ms(f->fb, i + 1);
        assert_true(next_sent > 0);
        if (r.chunk_at[i] > next_sent)
            fail_msg("chunk %d arrived at %lld, after chunk %d was sent at %lld", i,
                     (long long)r.chunk_at[i], i + 1, (long long)next_sent);
    }
    char *auth = fake_backend_last_header(f->fb, "/v1/chat/completions", "Authorization");
    assert_null(auth); /* apiKeyEnv set but the variable is not: no header */
}

static void test_backend_errors(void **state)
{
    struct fixture *f = *state;
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    /* Refusals pass on as they are, streaming requests included. */
    for (int streaming = 0; streaming < 2; streaming++) {
        fake_backend_set_fail(f->fb, 500);
        struct run r = {.loop = f->loop};
        r.call = infer(f, &p, "/chat/completions", streaming ? SREQ : REQ, streaming, &r);
        assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
        assert_int_equal(r.outcome, OPENAI_RESPONSE);
        assert_int_equal(r.status, 500);
        assert_false(r.started);
        assert_string_equal(r.body,
                            "{\"error\":{\"message\":\"fake failure\",\"type\":\"server_error\"}}");
        fake_backend_set_fail(f->fb, 0);
    }
    const char *hdrs[] = {"Retry-After: 7", "x-ratelimit-remaining-requests: 0",
                          "X-Request-Id: req-1", "Set-Cookie: no=1", NULL};
    const char *err429 = "{\"error\": {\"message\": \"Rate limit reached\", \"type\": "
                         "\"requests\", \"code\": \"rate_limit_exceeded\"}}";
    fake_backend_set_reply(f->fb, 429, "application/json", err429, hdrs);
    for (int streaming = 0; streaming < 2; streaming++) {
        struct run r = {.loop = f->loop};
        r.call = infer(f, &p, "/chat/completions", streaming ? SREQ : REQ, streaming, &r);
        assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
        assert_int_equal(r.outcome, OPENAI_RESPONSE);
        assert_int_equal(r.status, 429);
        assert_string_equal(r.body, err429);
        assert_non_null(strstr(r.headers, "Retry-After: 7\n"));
        assert_non_null(strstr(r.headers, "x-ratelimit-remaining-requests: 0\n"));
        assert_non_null(strstr(r.headers, "X-Request-Id: req-1\n"));
        assert_null(strstr(r.headers, "Set-Cookie"));
    }
    /* Not JSON: passed on too. */
    fake_backend_set_reply(f->fb, 502, "text/html", "<h1>Bad gateway</h1>", NULL);
    struct run h = {.loop = f->loop};
    h.call = infer(f, &p, "/chat/completions", REQ, false, &h);
    assert_int_equal(run_until(f->loop, &h.done, 5000), 0);
    assert_int_equal(h.outcome, OPENAI_RESPONSE);
    assert_int_equal(h.status, 502);
    assert_string_equal(h.body, "<h1>Bad gateway</h1>");
    assert_non_null(strstr(h.headers, "Content-Type: text/html\n"));
    fake_backend_set_reply(f->fb, 0, NULL, NULL, NULL);

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", closed_port());
    struct provider_cfg down = provider(url);
    struct run r = {.loop = f->loop};
    r.call = infer(f, &down, "/chat/completions", REQ, false, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_FAILED);
    assert_string_equal(r.error, "backend unreachable: Couldn't connect to server");
    assert_null(strstr(r.error, "127.0.0.1")); /* the local address stays local */
    assert_non_null(strstr(r.detail, "127.0.0.1"));
}

static void test_availability(void **state)
{
    struct fixture *f = *state;
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop};
    r.call = openai_check(f->loop, &p, 2000, on_check, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_true(r.avail);

    fake_backend_set_asleep(f->fb, true);
    struct run s = {.loop = f->loop};
    s.call = openai_check(f->loop, &p, 2000, on_check, &s);
    assert_int_equal(run_until(f->loop, &s.done, 5000), 0);
    assert_false(s.avail);
    assert_string_equal(s.error, "GET /models answered 503");
    fake_backend_set_asleep(f->fb, false);

    fake_backend_set_models_delay(f->fb, 1000);
    struct run t = {.loop = f->loop};
    int64_t start = clock_mono_ms();
    t.call = openai_check(f->loop, &p, 100, on_check, &t);
    assert_int_equal(run_until(f->loop, &t.done, 5000), 0);
    assert_false(t.avail);
    assert_true(clock_mono_ms() - start < 900);
    assert_string_equal(t.error, "GET /models got no answer within 100 ms");
    fake_backend_set_models_delay(f->fb, 0);
}

static void test_abort_mid_stream(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_stream(f->fb, 200, 20);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop, .free_at = 2};
    r.call = infer(f, &p, "/chat/completions", SREQ, true, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    /* The backend sees its client go away long before its 4 s answer ends. */
    assert_int_equal(fake_backend_wait_aborted(f->fb, 1, 2000), 0);
    assert_int_equal(r.chunks, 2);
}

static void test_pause_resume(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_stream(f->fb, 5, 10);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop, .pause_at = 1};
    r.call = infer(f, &p, "/chat/completions", SREQ, true, &r);
    int64_t end = clock_mono_ms() + 400;
    while (clock_mono_ms() < end)
        loop_run_once(f->loop, 20);
    assert_int_equal(r.chunks, 1); /* paused: nothing more is taken */
    assert_false(r.done);
    openai_call_resume(r.call);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_STREAMED);
    assert_int_equal(r.chunks, 5);
    char *sent = fake_backend_stream_bytes(f->fb);
    assert_string_equal(r.bytes, sent);
    free(sent);
}

static void test_sniffing(void **state)
{
    struct fixture *f = *state;
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    /* An event stream labelled as JSON is still an event stream. */
    fake_backend_set_stream(f->fb, 3, 5);
    fake_backend_set_stream_ctype(f->fb, "application/json");
    struct run r = {.loop = f->loop};
    r.call = infer(f, &p, "/chat/completions", SREQ, true, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_STREAMED);
    assert_true(r.started);
    assert_int_equal(r.chunks, 3);
    fake_backend_set_stream_ctype(f->fb, NULL);
    /* A streaming request answered with one JSON body: a whole answer. */
    const char *json = "{\"id\":\"x\",\"object\":\"chat.completion\"}";
    fake_backend_set_reply(f->fb, 200, "text/event-stream", json, NULL);
    struct run j = {.loop = f->loop};
    j.call = infer(f, &p, "/chat/completions", SREQ, true, &j);
    assert_int_equal(run_until(f->loop, &j.done, 5000), 0);
    assert_int_equal(j.outcome, OPENAI_RESPONSE);
    assert_false(j.started);
    assert_string_equal(j.body, json);
    fake_backend_set_reply(f->fb, 200, "text/plain", ": hi\ndata: {}\n\n", NULL);
    struct run c = {.loop = f->loop};
    c.call = infer(f, &p, "/chat/completions", SREQ, true, &c);
    assert_int_equal(run_until(f->loop, &c.done, 5000), 0);
    assert_int_equal(c.outcome, OPENAI_STREAMED);
    assert_string_equal(c.bytes, ": hi\ndata: {}\n\n");
    fake_backend_set_reply(f->fb, 0, NULL, NULL, NULL);
}

static void test_mid_stream_failure(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_stream(f->fb, 10, 5);
    fake_backend_set_cut_after(f->fb, 3);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop};
    r.call = infer(f, &p, "/chat/completions", SREQ, true, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_FAILED);
    assert_true(r.mid_stream);
    assert_int_equal(r.chunks, 3);
    assert_non_null(strstr(r.error, "backend stream broke: "));
}

static void test_other_routes(void **state)
{
    struct fixture *f = *state;
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    const char *req = "{\"model\":\"served-model\",\"input\":\"hello\"}";
    struct run r = {.loop = f->loop};
    r.call = infer(f, &p, "/embeddings", req, false, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_RESPONSE);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"path\":\"/v1/embeddings\""));
    char *body = fake_backend_last_body(f->fb, "/v1/embeddings");
    assert_string_equal(body, req);
    free(body);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_non_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_byte_for_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sniffing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mid_stream_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_availability, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
