/*
 * The whole path, as a user sees it: mcplocal (the real binary) publishes a
 * local OpenAI-compatible server (the fake backend) to the real mcpd, and
 * mcpctl, reading the same credentials file as mcplocal, lists it as
 * virtual/active and chats with it, streamed and not.
 */
#include "cli_support.h"
#include "fake_backend.h"
#include "proc.h"
#include "test_env.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#define WAIT_MS 10000

static struct test_env *env;
static struct fake_backend *fb;
static struct proc *mcplocal;
static char *home;

static int setup(void **state)
{
    (void)state;
    env = test_env_start(NULL);
    fb = fake_backend_start();
    if (!env || !fb)
        return -1;
    fake_backend_set_stream(fb, 3, 200);
    /* mcplocal's home: its config, and the credentials mcpctl shares. */
    home = tmpdir_path(env->dir, "home");
    if (mkdir(home, 0700) < 0)
        return -1;
    char *p = tmpdir_path(home, "credentials");
    char text[1024];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", env->mcpd.url,
             env->mcpd.token);
    if (cli_t_write_file(p, text) < 0)
        return -1;
    free(p);
    p = tmpdir_path(home, "config.json");
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"laptop-qwen\", \"type\": \"openai\", "
             "\"model\": \"Qwen/Qwen2.5-7B-Instruct-AWQ\", \"url\": \"%s\", \"tier\": \"fast\", "
             "\"publish\": true}]}}",
             fake_backend_url(fb));
    if (cli_t_write_file(p, text) < 0)
        return -1;
    free(p);
    const char *argv[] = {MCPLOCAL_BIN, "--home", home, NULL};
    cli_t_cloexec_all();
    mcplocal = proc_start(argv, NULL, env->dir);
    if (!mcplocal || proc_wait_for(mcplocal, "stream up", WAIT_MS) < 0) {
        proc_dump(mcplocal);
        return -1;
    }
    return test_wait_status(env, "laptop-qwen", "active", WAIT_MS);
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (mcplocal) {
        proc_signal(mcplocal, SIGTERM);
        if (proc_wait_exit(mcplocal, WAIT_MS) != 0) {
            proc_dump(mcplocal);
            rc = -1;
        }
        proc_free(mcplocal);
    }
    fake_backend_stop(fb);
    free(home);
    if (test_env_stop(env) != 0)
        rc = -1;
    return rc;
}

/* mcpctl with nothing but MCPCTL_HOME: mcplocal's credentials file. */
static void run(struct cli_t_result *r, const char *const args[])
{
    cli_t_run(home, NULL, NULL, args, r);
    if (r->code != 0)
        fail_msg("exit %d\nstdout: %s\nstderr: %s", r->code, r->out, r->err);
}

static void test_published_model_is_virtual_active(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, (const char *[]){"get", "llm", NULL});
    char *row = strchr(r.out, '\n') + 1;
    char name[64], kind[64], status[64], type[64], model[128], tier[64], pool[64];
    assert_int_equal(sscanf(row, "%63s %63s %63s %63s %127s %63s %63s", name, kind, status, type,
                            model, tier, pool),
                     7);
    assert_string_equal(name, "laptop-qwen");
    assert_string_equal(kind, "virtual");
    assert_string_equal(status, "active");
    assert_string_equal(model, "Qwen/Qwen2.5-7B-Instruct-AWQ");
    assert_string_equal(tier, "fast");
    assert_string_equal(pool, "-");
    cli_t_result_free(&r);
}

static void test_chat_streams_from_the_laptop(void **state)
{
    (void)state;
    char home_kv[1024];
    snprintf(home_kv, sizeof home_kv, "MCPCTL_HOME=%s", home);
    const char *penv[] = {home_kv, "MCPCTL_URL=", "MCPCTL_TOKEN=", NULL};
    const char *argv[] = {MCPCTL_BIN, "chat-llm", "laptop-qwen", "-m", "hi", NULL};
    cli_t_cloexec_all();
    struct proc *p = proc_start(argv, penv, NULL);
    assert_non_null(p);
    /* The first token shows before the backend has produced the last. */
    assert_int_equal(proc_wait_for(p, "tok0", WAIT_MS), 0);
    char *so_far = proc_output(p);
    assert_null(strstr(so_far, "tok2"));
    free(so_far);
    assert_int_equal(proc_wait_exit(p, WAIT_MS), 0);
    char *out = proc_output(p);
    assert_string_equal(out, "tok0tok1tok2\n");
    free(out);
    proc_free(p);
}

static void test_chat_whole_answer(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, (const char *[]){"chat-llm", "laptop-qwen", "--no-stream", "-m", "hi", NULL});
    assert_string_equal(r.out, "hello from fake\n");
    cli_t_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_model_is_virtual_active),
        cmocka_unit_test(test_chat_streams_from_the_laptop),
        cmocka_unit_test(test_chat_whole_answer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
