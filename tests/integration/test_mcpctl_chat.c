/*
 * mcpctl chat-llm against the real mcpd and a fake publisher: tokens
 * streamed as they arrive, --no-stream, conversations read from stdin with
 * their history, the request options, and failures during an answer.
 */
#include "cli_support.h"
#include "fake_publisher.h"
#include "proc.h"
#include "test_env.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *providers =
    "[{\"name\":\"vllm-local\",\"type\":\"openai\",\"model\":\"Qwen/Qwen2.5-7B-Instruct-AWQ\"}]";

static struct cli_t_env E;

static int setup(void **state)
{
    (void)state;
    return cli_t_env_start(&E, NULL, providers);
}

static int teardown(void **state)
{
    (void)state;
    return cli_t_env_stop(&E) == 0 ? 0 : -1;
}

/* Each test starts from the default script: answer at once, 3 chunks. */
static int reset_script(void **state)
{
    (void)state;
    struct fp_script s = {.mode = FP_ANSWER, .chunks = 3};
    fake_publisher_set_script(E.pub, &s);
    return 0;
}

static void run(struct cli_t_result *r, int want, const char *stdin_data, const char *const args[])
{
    cli_t_run_env_expect(&E, want, stdin_data, args, r);
}

/* The body of the n-th (1-based) infer task the publisher received. */
static json_t *task_body(int n)
{
    assert_int_equal(fake_publisher_wait(E.pub, "\"kind\":\"infer\"", n, 10000), 0);
    char *t = fake_publisher_transcript(E.pub);
    char *p = t;
    for (int i = 0; i < n; i++) {
        p = strstr(p, "\"kind\":\"infer\"");
        assert_non_null(p);
        if (i + 1 < n)
            p++;
    }
    char *start = p;
    while (start > t && strncmp(start, "data: ", 6) != 0)
        start--;
    char *end = strchr(start, '\n');
    assert_non_null(end);
    *end = '\0';
    json_t *frame = json_loads(start + 6, 0, NULL);
    assert_non_null(frame);
    json_t *body = json_incref(json_object_get(frame, "body"));
    json_decref(frame);
    free(t);
    return body;
}

static int infer_tasks_so_far(void)
{
    char *t = fake_publisher_transcript(E.pub);
    int n = 0;
    for (char *p = strstr(t, "\"kind\":\"infer\""); p; p = strstr(p + 1, "\"kind\":\"infer\""))
        n++;
    free(t);
    return n;
}

static void test_stream_one_message(void **state)
{
    (void)state;
    struct cli_t_result r;
    int before = infer_tasks_so_far();
    run(&r, 0, NULL, (const char *[]){"chat-llm", "vllm-local", "-m", "hello", NULL});
    assert_string_equal(r.out, "tok0 tok1 tok2 \n");
    assert_string_equal(r.err, "");
    cli_t_result_free(&r);
    json_t *body = task_body(before + 1);
    assert_true(json_is_true(json_object_get(body, "stream")));
    json_t *want = json_loads("[{\"role\":\"user\",\"content\":\"hello\"}]", 0, NULL);
    assert_true(json_equal(json_object_get(body, "messages"), want));
    json_decref(want);
    json_decref(body);
}

/* Tokens reach stdout while the answer is still being produced. */
static void test_stream_arrives_incrementally(void **state)
{
    (void)state;
    struct fp_script s = {.mode = FP_ANSWER, .chunks = 3, .delay_ms = 400};
    fake_publisher_set_script(E.pub, &s);
    char home_kv[1024];
    snprintf(home_kv, sizeof home_kv, "MCPCTL_HOME=%s", E.home);
    const char *env[] = {home_kv, E.url_kv, E.token_kv, NULL};
    const char *argv[] = {MCPCTL_BIN, "chat-llm", "vllm-local", "-m", "slowly", NULL};
    cli_t_cloexec_all();
    struct proc *p = proc_start(argv, env, NULL);
    assert_non_null(p);
    assert_int_equal(proc_wait_for(p, "tok0 ", 10000), 0);
    /* The other chunks are 400 ms and 800 ms away. */
    char *so_far = proc_output(p);
    assert_null(strstr(so_far, "tok2"));
    free(so_far);
    assert_int_equal(proc_wait_exit(p, 10000), 0);
    so_far = proc_output(p);
    assert_string_equal(so_far, "tok0 tok1 tok2 \n");
    free(so_far);
    proc_free(p);
}

static void test_no_stream(void **state)
{
    (void)state;
    struct cli_t_result r;
    int before = infer_tasks_so_far();
    run(&r, 0, NULL,
        (const char *[]){"chat-llm", "vllm-local", "-m", "hello there", "--no-stream", NULL});
    assert_string_equal(r.out, "echo: hello there\n");
    assert_string_equal(r.err, "");
    cli_t_result_free(&r);
    json_t *body = task_body(before + 1);
    assert_true(json_is_false(json_object_get(body, "stream")));
    json_decref(body);
}

static void test_options_reach_the_publisher(void **state)
{
    (void)state;
    struct cli_t_result r;
    int before = infer_tasks_so_far();
    run(&r, 0, NULL,
        (const char *[]){"chat-llm", "vllm-local", "-m", "q", "--system", "be brief",
                         "--temperature", "0.5", "--max-tokens", "7", "--no-stream", NULL});
    assert_string_equal(r.out, "echo: q\n");
    cli_t_result_free(&r);
    json_t *body = task_body(before + 1);
    json_t *want = json_loads("{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                              "{\"role\":\"user\",\"content\":\"q\"}],"
                              "\"stream\":false,\"temperature\":0.5,\"max_tokens\":7}",
                              0, NULL);
    if (!json_equal(body, want)) {
        char *got = json_dumps(body, 0);
        fail_msg("task body %s", got);
    }
    json_decref(want);
    json_decref(body);
}

/* Without -m: one message per line, the history sent with every turn. */
static void test_conversation_keeps_history(void **state)
{
    (void)state;
    struct cli_t_result r;
    int before = infer_tasks_so_far();
    run(&r, 0, "first\n\nsecond\r\n/exit\nnever sent\n",
        (const char *[]){"chat-llm", "vllm-local", "--no-stream", "--system", "sys", NULL});
    assert_string_equal(r.out, "echo: first\necho: second\n");
    assert_string_equal(r.err, ""); /* no prompt when stdin is not a terminal */
    cli_t_result_free(&r);
    assert_int_equal(infer_tasks_so_far(), before + 2);
    json_t *body = task_body(before + 2);
    json_t *want = json_loads("[{\"role\":\"system\",\"content\":\"sys\"},"
                              "{\"role\":\"user\",\"content\":\"first\"},"
                              "{\"role\":\"assistant\",\"content\":\"echo: first\"},"
                              "{\"role\":\"user\",\"content\":\"second\"}]",
                              0, NULL);
    if (!json_equal(json_object_get(body, "messages"), want)) {
        char *got = json_dumps(body, 0);
        fail_msg("second turn sent %s", got);
    }
    json_decref(want);
    json_decref(body);
}

static void test_streamed_conversation(void **state)
{
    (void)state;
    struct cli_t_result r;
    int before = infer_tasks_so_far();
    run(&r, 0, "a\nb\n", (const char *[]){"chat-llm", "vllm-local", NULL});
    assert_string_equal(r.out, "tok0 tok1 tok2 \ntok0 tok1 tok2 \n");
    cli_t_result_free(&r);
    json_t *body = task_body(before + 2);
    json_t *want = json_loads("[{\"role\":\"user\",\"content\":\"a\"},"
                              "{\"role\":\"assistant\",\"content\":\"tok0 tok1 tok2 \"},"
                              "{\"role\":\"user\",\"content\":\"b\"}]",
                              0, NULL);
    assert_true(json_equal(json_object_get(body, "messages"), want));
    json_decref(want);
    json_decref(body);
}

/* The publisher fails: exit 7, one line; a conversation reports each failed
 * turn and goes on. */
static void test_publisher_error(void **state)
{
    (void)state;
    struct fp_script s = {.mode = FP_ERROR};
    fake_publisher_set_script(E.pub, &s);
    struct cli_t_result r;
    run(&r, 7, NULL, (const char *[]){"chat-llm", "vllm-local", "-m", "x", "--no-stream", NULL});
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "mcpctl: Llm 'vllm-local' failed (502): publisher error: backend "
                               "exploded; try again\n");
    cli_t_result_free(&r);
    run(&r, 7, NULL, (const char *[]){"chat-llm", "vllm-local", "-m", "x", NULL});
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "mcpctl: Llm 'vllm-local' failed"));
    assert_non_null(strstr(r.err, "backend exploded"));
    assert_string_equal(strchr(r.err, '\n'), "\n");
    cli_t_result_free(&r);
    run(&r, 7, "one\ntwo\n", (const char *[]){"chat-llm", "vllm-local", "--no-stream", NULL});
    char *second = strchr(r.err, '\n');
    assert_non_null(second);
    assert_non_null(strstr(second + 1, "backend exploded"));
    cli_t_result_free(&r);
}

/* The publisher vanishes after the first token: what arrived is printed,
 * then the failure (exit 7). Runs last: the stream is gone afterwards. */
static void test_publisher_drops_mid_answer(void **state)
{
    (void)state;
    struct fp_script s = {.mode = FP_DROP, .chunks = 3, .drop_after = 1, .delay_ms = 50};
    fake_publisher_set_script(E.pub, &s);
    struct cli_t_result r;
    run(&r, 7, NULL, (const char *[]){"chat-llm", "vllm-local", "-m", "x", NULL});
    assert_string_equal(r.out, "tok0 \n");
    assert_int_equal(strncmp(r.err, "mcpctl: Llm 'vllm-local' failed during the answer: ", 51), 0);
    assert_string_equal(strchr(r.err, '\n'), "\n");
    cli_t_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_stream_one_message, reset_script),
        cmocka_unit_test_setup(test_stream_arrives_incrementally, reset_script),
        cmocka_unit_test_setup(test_no_stream, reset_script),
        cmocka_unit_test_setup(test_options_reach_the_publisher, reset_script),
        cmocka_unit_test_setup(test_conversation_keeps_history, reset_script),
        cmocka_unit_test_setup(test_streamed_conversation, reset_script),
        cmocka_unit_test_setup(test_publisher_error, reset_script),
        cmocka_unit_test_setup(test_publisher_drops_mid_answer, reset_script),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
