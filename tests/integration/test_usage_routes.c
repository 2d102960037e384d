/*
 * Usage accounting end to end: the real mcpd, the real mcplocal and the
 * fake backend answering like the real APIs. Every relayed route, whole
 * and streamed, is counted with the tokens its backend reported:
 * chat completions (a stream's usage only when the caller asks for
 * stream_options.include_usage, which mcpd never adds itself),
 * completions, embeddings, the Responses API (response.completed) and
 * Anthropic's Messages API (message_start's input, message_delta's
 * output); a backend's failure is an error.
 */
#include "fake_backend.h"
#include "http.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "test_env.h"
#include "tmpdir.h"
#include "usage_support.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS 15000
#define CHUNKS 4

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

struct fx {
    struct test_env *env;
    struct fake_backend *fb;
    char *home;
    struct proc *p;
};

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    *state = x;
    x->env = test_env_start(NULL);
    x->fb = fake_backend_start();
    if (!x->env || !x->fb)
        return -1;
    fake_backend_set_realistic(x->fb, true);
    fake_backend_set_stream(x->fb, CHUNKS, 0);
    x->home = tmpdir_create("usage-routes");
    char text[2048];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", x->env->mcpd.url,
             x->env->mcpd.token);
    tmpdir_write(x->home, "credentials", text, 0600);
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"laptop\", \"type\": \"openai\",\n"
             "  \"model\": \"served-model\", \"url\": \"%s\", \"publish\": true}]}}\n",
             fake_backend_url(x->fb));
    tmpdir_write(x->home, "config.json", text, 0644);
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->home, NULL};
    x->p = proc_start(argv, NULL, x->home);
    if (!x->p || proc_wait_for(x->p, "stream up", WAIT_MS) != 0 ||
        test_wait_status(x->env, "laptop", "active", WAIT_MS) != 0) {
        if (x->p)
            proc_dump(x->p);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    int rc = proc_stop(x->p, WAIT_MS);
    fake_backend_stop(x->fb);
    rc |= test_env_stop(x->env);
    tmpdir_remove(x->home);
    free(x);
    return rc == 0 ? 0 : -1;
}

/* One relayed call; what its answer says is added to want. */
static void relay(struct fx *x, const char *path, const char *body, struct usage_t_counts *want)
{
    struct http_resp r;
    assert_int_equal(test_call(x->env, "POST", path, x->env->mcpd.token, JSON_HDR, body, &r), 0);
    usage_t_add_answer(want, r.status, r.body);
    http_resp_free(&r);
}

static void test_every_route_is_counted(void **state)
{
    struct fx *x = *state;
    struct usage_t_counts want = {0}, step;
    static const struct {
        const char *path;
        const char *body;
        int64_t prompt, completion; /* what the fake backend reports */
    } calls[] = {
        {"/v1/chat/completions",
         "{\"model\":\"laptop\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"hi\"}]}",
         1, 3},
        {"/v1/chat/completions",
         "{\"model\":\"laptop\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         1, CHUNKS},
        {"/v1/chat/completions",
         "{\"model\":\"laptop\",\"stream\":true,\"messages\":[{\"role\":"
         "\"user\",\"content\":\"no usage asked\"}]}",
         0, 0},
        {"/api/v1/llms/laptop/infer",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":"
         "\"user\",\"content\":\"hi\"}]}",
         1, CHUNKS},
        {"/v1/completions", "{\"model\":\"laptop\",\"prompt\":\"hi\"}", 1, 3},
        {"/v1/completions",
         "{\"model\":\"laptop\",\"prompt\":\"hi\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}",
         1, CHUNKS},
        {"/v1/embeddings", "{\"model\":\"laptop\",\"input\":[\"a\",\"b\"]}", 2, 0},
        {"/v1/responses", "{\"model\":\"laptop\",\"input\":\"hi\"}", 1, 3},
        {"/v1/responses", "{\"model\":\"laptop\",\"input\":\"hi\",\"stream\":true}", 1, 3},
        {"/v1/messages",
         "{\"model\":\"laptop\",\"max_tokens\":16,\"messages\":[{\"role\":"
         "\"user\",\"content\":\"hi\"}]}",
         1, 3},
        {"/v1/messages",
         "{\"model\":\"laptop\",\"max_tokens\":16,\"stream\":true,\"messages\":"
         "[{\"role\":\"user\",\"content\":\"hi\"}]}",
         1, CHUNKS},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        step = (struct usage_t_counts){0};
        relay(x, calls[i].path, calls[i].body, &step);
        char what[512];
        snprintf(what, sizeof what, "the answer to %s %s", calls[i].path, calls[i].body);
        usage_t_expect(what, step,
                       (struct usage_t_counts){1, 0, calls[i].prompt, calls[i].completion});
        want.requests += step.requests;
        want.prompt += step.prompt;
        want.completion += step.completion;
        /* mcpd leaves the caller's request as it is: no stream_options added */
        const char *upstream =
            strncmp(calls[i].path, "/api/", 5) == 0 ? "/v1/chat/completions" : calls[i].path;
        char *sent = fake_backend_last_body(x->fb, upstream);
        assert_non_null(sent);
        assert_true(!strstr(sent, "stream_options") == !strstr(calls[i].body, "stream_options"));
        free(sent);
    }

    /* a backend's failure reaches the caller as it is, and is an error */
    fake_backend_set_fail(x->fb, 500);
    relay(x, "/v1/chat/completions",
          "{\"model\":\"laptop\",\"messages\":[{\"role\":\"user\",\"content\":\"fail\"}]}", &want);
    fake_backend_set_fail(x->fb, 0);
    assert_int_equal(want.errors, 1);

    long status;
    json_t *j = usage_t_get(x->env, x->env->mcpd.token, "llm=laptop", &status);
    assert_int_equal(status, 200);
    usage_t_expect("GET /api/v1/usage", usage_t_sum(j, "alice", "laptop"), want);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_route_is_counted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
