/* The OpenAI-compatible provider against the fake backend: non-streaming,
 * streaming chunk by chunk, errors, availability checks, abort and pause. */
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
    char error[512];
    char detail[1024];
    int chunks;
    char chunk[16][256];
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

static void on_chunk(void *ud, const char *data, size_t len)
{
    struct run *r = ud;
    if (r->chunks < 16) {
        snprintf(r->chunk[r->chunks], sizeof r->chunk[0], "%.*s", (int)len, data);
        r->chunk_at[r->chunks] = clock_mono_ms();
    }
    r->chunks++;
    if (r->chunks == r->free_at) {
        openai_call_free(r->call);
        r->call = NULL;
        r->done = true;
    }
    if (r->chunks == r->pause_at)
        openai_call_pause(r->call);
}

static void on_done(void *ud, const struct openai_result *res)
{
    struct run *r = ud;
    r->done = true;
    r->outcome = res->outcome;
    r->status = res->status;
    if (res->body)
        snprintf(r->body, sizeof r->body, "%.*s", (int)res->body_len, res->body);
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

static void test_non_streaming(void **state)
{
    struct fixture *f = *state;
    setenv("TEST_PROVIDER_KEY", "sekrit", 1);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop};
    r.call = openai_infer(f->loop, &p, REQ, false, on_chunk, on_done, &r);
    assert_non_null(r.call);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_BODY);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "hello from fake"));
    assert_non_null(strstr(r.body, "\"model\":\"served-model\""));
    char *auth = fake_backend_last_header(f->fb, "/v1/chat/completions", "Authorization");
    assert_string_equal(auth, "Bearer sekrit");
    free(auth);
}

static void test_streaming_chunk_by_chunk(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_stream(f->fb, 4, 150);
    struct provider_cfg p = provider(fake_backend_url(f->fb));
    struct run r = {.loop = f->loop};
    r.call = openai_infer(f->loop, &p, SREQ, true, on_chunk, on_done, &r);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_STREAMED);
    assert_int_equal(r.chunks, 4);
    for (int i = 0; i < 4; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "\"tok%d\"", i);
        assert_non_null(strstr(r.chunk[i], tok));
        assert_non_null(strstr(r.chunk[i], "chat.completion.chunk"));
    }
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
    for (int streaming = 0; streaming < 2; streaming++) {
        fake_backend_set_fail(f->fb, 500);
        struct run r = {.loop = f->loop};
        r.call =
            openai_infer(f->loop, &p, streaming ? SREQ : REQ, streaming, on_chunk, on_done, &r);
        assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
        assert_int_equal(r.outcome, OPENAI_FAILED);
        assert_string_equal(r.error, "backend answered 500: fake failure");
        fake_backend_set_fail(f->fb, 0);
    }

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", closed_port());
    struct provider_cfg down = provider(url);
    struct run r = {.loop = f->loop};
    r.call = openai_infer(f->loop, &down, REQ, false, on_chunk, on_done, &r);
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
    r.call = openai_infer(f->loop, &p, SREQ, true, on_chunk, on_done, &r);
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
    r.call = openai_infer(f->loop, &p, SREQ, true, on_chunk, on_done, &r);
    int64_t end = clock_mono_ms() + 400;
    while (clock_mono_ms() < end)
        loop_run_once(f->loop, 20);
    assert_int_equal(r.chunks, 1); /* paused: nothing more is taken */
    assert_false(r.done);
    openai_call_resume(r.call);
    assert_int_equal(run_until(f->loop, &r.done, 5000), 0);
    assert_int_equal(r.outcome, OPENAI_STREAMED);
    assert_int_equal(r.chunks, 5);
    for (int i = 0; i < 5; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "\"tok%d\"", i);
        assert_non_null(strstr(r.chunk[i], tok));
    }
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_non_streaming, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_chunk_by_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_availability, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
