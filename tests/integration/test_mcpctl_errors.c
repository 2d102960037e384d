/*
 * Every class of mcpctl failure against the real mcpd, with its exit code:
 * one line on stderr saying what went wrong and what to do, nothing on
 * stdout, no libcurl wording.
 */
#include "cli_support.h"
#include "fake_publisher.h"
#include "http.h"
#include "test_env.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *providers = "[{\"name\":\"live\",\"type\":\"openai\",\"model\":\"m\"},"
                               "{\"name\":\"gone\",\"type\":\"openai\",\"model\":\"m\"}]";

static struct cli_t_env E;    /* publisher holds "live" */
static struct cli_t_env Gone; /* its publisher vanished: "gone" is inactive */

static int setup(void **state)
{
    (void)state;
    const char *args[] = {"--infer-timeout", "1s", "--max-body", "4K", NULL};
    if (cli_t_env_start(&E, args, providers) < 0)
        return -1;
    if (cli_t_env_start(&Gone, NULL, providers) < 0)
        return -1;
    fake_publisher_drop(Gone.pub);
    return test_wait_status(Gone.env, "gone", "inactive", 10000);
}

static int teardown(void **state)
{
    (void)state;
    int a = cli_t_env_stop(&E), b = cli_t_env_stop(&Gone);
    return a == 0 && b == 0 ? 0 : -1;
}

/* Checks the failure shape and that stderr holds needle. */
static void check_failure(struct cli_t_result *r, int code, const char *needle)
{
    if (r->code != code || !strstr(r->err, needle))
        fail_msg("exit %d (want %d), stderr '%s' (want '%s')", r->code, code, r->err, needle);
    assert_string_equal(r->out, "");
    assert_int_equal(strncmp(r->err, "mcpctl: ", 8), 0);
    assert_string_equal(strchr(r->err, '\n'), "\n");
    assert_null(strstr(r->err, "curl"));
    assert_null(strstr(r->err, "CURLE"));
}

static void test_unreachable(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", cli_t_closed_port());
    struct cli_t_result r;
    cli_t_run_env(&E, NULL, (const char *[]){"--server", url, "get", "llm", NULL}, &r);
    char want[160];
    snprintf(want, sizeof want, "cannot reach mcpd at '%s': connection refused", url);
    check_failure(&r, 3, want);
    assert_non_null(strstr(r.err, "check the server URL and that mcpd is running"));
    cli_t_result_free(&r);
    cli_t_run_env(&E, NULL, (const char *[]){"chat-llm", "live", "-m", "x", "--server", url, NULL},
                  &r);
    check_failure(&r, 3, "cannot reach mcpd");
    cli_t_result_free(&r);
    cli_t_run_env(&E, NULL,
                  (const char *[]){"--server", "http://no-such-host.invalid", "get", "llm", NULL},
                  &r);
    check_failure(&r, 3, "host not found");
    cli_t_result_free(&r);
}

static void test_token_rejected(void **state)
{
    (void)state;
    struct cli_t_result r;
    cli_t_run_env(&E, NULL, (const char *[]){"--token", "mcp_wrong", "get", "llm", NULL}, &r);
    check_failure(&r, 4, "token rejected by mcpd at");
    assert_non_null(strstr(r.err, "(401)"));
    assert_non_null(strstr(r.err, "the token from --token"));
    assert_non_null(strstr(r.err, "mcpctl login --server"));
    cli_t_result_free(&r);
    const char *env[] = {E.url_kv, "MCPCTL_TOKEN=mcp_wrong", NULL};
    cli_t_run(E.home, env, NULL, (const char *[]){"chat-llm", "live", "-m", "x", NULL}, &r);
    check_failure(&r, 4, "the token from MCPCTL_TOKEN");
    cli_t_result_free(&r);
}

static void test_not_found(void **state)
{
    (void)state;
    static const char *const cmds[][6] = {
        {"get", "llm", "nope", NULL},
        {"describe", "llm", "nope", NULL},
        {"chat-llm", "nope", "-m", "x", NULL},
        {"chat-llm", "nope", "-m", "x", "--no-stream", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct cli_t_result r;
        cli_t_run_env(&E, NULL, cmds[i], &r);
        check_failure(&r, 5, "no Llm named 'nope'; run 'mcpctl get llm' to list the Llms");
        cli_t_result_free(&r);
    }
}

static void test_publisher_offline(void **state)
{
    (void)state;
    /* The Retry-After mcpd sends is what the message promises. */
    struct http_resp resp;
    test_call(Gone.env, "POST", "/api/v1/llms/gone/infer", Gone.env->mcpd.token, NULL,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &resp);
    assert_int_equal(resp.status, 503);
    char *retry = http_resp_header(&resp, "Retry-After");
    assert_non_null(retry);
    char want[64];
    snprintf(want, sizeof want, "; retry in %ld s\n", strtol(retry, NULL, 10));
    free(retry);
    http_resp_free(&resp);

    static const char *const cmds[][6] = {
        {"chat-llm", "gone", "-m", "x", NULL},
        {"chat-llm", "gone", "-m", "x", "--no-stream", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct cli_t_result r;
        cli_t_run_env(&Gone, NULL, cmds[i], &r);
        check_failure(&r, 6, "mcpctl: Llm 'gone' is unavailable (503): ");
        assert_non_null(strstr(r.err, want));
        cli_t_result_free(&r);
    }
}

static void test_inference_failed(void **state)
{
    (void)state;
    struct fp_script s = {.mode = FP_ERROR};
    fake_publisher_set_script(E.pub, &s);
    struct cli_t_result r;
    cli_t_run_env(&E, NULL, (const char *[]){"chat-llm", "live", "-m", "x", "--no-stream", NULL},
                  &r);
    check_failure(&r, 7, "Llm 'live' failed (502): ");
    assert_non_null(strstr(r.err, "backend exploded; try again\n"));
    cli_t_result_free(&r);

    /* Nothing within the inference timeout: 504. */
    s.mode = FP_SILENT;
    fake_publisher_set_script(E.pub, &s);
    cli_t_run_env(&E, NULL, (const char *[]){"chat-llm", "live", "-m", "x", "--no-stream", NULL},
                  &r);
    check_failure(&r, 7, "Llm 'live' did not answer in time (504");
    cli_t_result_free(&r);
    cli_t_run_env(&E, NULL, (const char *[]){"chat-llm", "live", "-m", "x", NULL}, &r);
    if (r.code != 7)
        fail_msg("exit %d, stderr %s", r.code, r.err);
    assert_non_null(strstr(r.err, "Llm 'live'"));
    cli_t_result_free(&r);
    s.mode = FP_ANSWER;
    fake_publisher_set_script(E.pub, &s);
}

/* Anything else: exit 1 (here mcpd refuses a body over its cap). */
static void test_other_error(void **state)
{
    (void)state;
    char big[6000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct cli_t_result r;
    cli_t_run_env(&E, NULL, (const char *[]){"chat-llm", "live", "-m", big, NULL}, &r);
    check_failure(&r, 1, "mcpd refused the request (413");
    cli_t_result_free(&r);
}

static void test_usage(void **state)
{
    (void)state;
    static const char *const cmds[][6] = {
        {"get", "llm", "-o", "xml", NULL},
        {"get", "things", NULL},
        {"chat-llm", "live", "--temperature", "warm", NULL},
        {"explode", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct cli_t_result r;
        cli_t_run_env(&E, NULL, cmds[i], &r);
        check_failure(&r, 2, "--help' for usage");
        cli_t_result_free(&r);
    }
    /* Nothing configured at all. */
    struct cli_t_result r;
    const char *env[] = {"HOME=/nonexistent", NULL};
    cli_t_run(E.home, env, NULL, (const char *[]){"get", "llm", NULL}, &r);
    check_failure(&r, 2, "no mcpd server configured");
    cli_t_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_token_rejected),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_publisher_offline),
        cmocka_unit_test(test_inference_failed),
        cmocka_unit_test(test_other_error),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
