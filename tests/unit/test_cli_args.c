/* Unit tests for cli/args.c and the command line of cli/cli.c (no server:
 * every case here fails or finishes before any request). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "args.h"
#include "cli.h"
#include "errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { O_SERVER, O_OUT, O_FLAG, O_MSG };
static const struct cli_opt specs[] = {
    {"server", 0, true, O_SERVER},
    {"output", 'o', true, O_OUT},
    {"no-stream", 0, false, O_FLAG},
    {"message", 'm', true, O_MSG},
};

static int parse(struct cli_args *a, struct cli_error *err, bool stop, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, stop);
    for (char *s = va_arg(ap, char *); s; s = va_arg(ap, char *))
        argv[argc++] = s;
    va_end(ap);
    return cli_args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], "mcpctl t", stop, a,
                          err);
}

static void test_forms(void **state)
{
    (void)state;
    struct cli_args a;
    struct cli_error err = {0};
    assert_int_equal(parse(&a, &err, false, "llm", "--server", "http://s", "-o", "json", "name",
                           "--no-stream", "-mhello", "--message=x=y", NULL),
                     0);
    assert_int_equal(a.npos, 2);
    assert_string_equal(a.pos[0], "llm");
    assert_string_equal(a.pos[1], "name");
    assert_string_equal(cli_args_get(&a, O_SERVER), "http://s");
    assert_string_equal(cli_args_get(&a, O_OUT), "json");
    assert_true(cli_args_has(&a, O_FLAG));
    assert_null(cli_args_get(&a, O_FLAG));
    assert_string_equal(cli_args_get(&a, O_MSG), "x=y"); /* the last one wins */

    /* "--" ends options; "-" is an argument; a value may start with '-'. */
    assert_int_equal(parse(&a, &err, false, "-m", "-5", "-", "--", "--server", NULL), 0);
    assert_string_equal(cli_args_get(&a, O_MSG), "-5");
    assert_int_equal(a.npos, 2);
    assert_string_equal(a.pos[0], "-");
    assert_string_equal(a.pos[1], "--server");
    assert_false(cli_args_has(&a, O_SERVER));
}

static void test_stop_at_positional(void **state)
{
    (void)state;
    struct cli_args a;
    struct cli_error err = {0};
    assert_int_equal(parse(&a, &err, true, "--server", "u", "get", "--bogus", NULL), 0);
    assert_int_equal(a.stopped_at, 2);
    assert_int_equal(a.npos, 0);
    assert_string_equal(cli_args_get(&a, O_SERVER), "u");
    assert_int_equal(parse(&a, &err, true, "--no-stream", NULL), 0);
    assert_int_equal(a.stopped_at, 1);
}

static const struct {
    const char *args[4];
    const char *needle;
} bad[] = {
    {{"--bogus"}, "unknown option '--bogus'"},
    {{"-x"}, "unknown option '-x'"},
    {{"--server"}, "option '--server' needs a value"},
    {{"-o"}, "option '-o' needs a value"},
    {{"--no-stream=1"}, "option '--no-stream' takes no value"},
    {{"--serverx", "v"}, "unknown option '--serverx'"},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int argc = 0;
        while (argc < 4 && bad[i].args[argc])
            argc++;
        struct cli_args a;
        struct cli_error err = {0};
        assert_int_equal(cli_args_parse(argc, (char **)bad[i].args, specs,
                                        sizeof specs / sizeof specs[0], "mcpctl t", false, &a,
                                        &err),
                         -1);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
        if (!strstr(err.msg, bad[i].needle) || !strstr(err.msg, "run 'mcpctl t --help'"))
            fail_msg("case %zu: '%s'", i, err.msg);
    }
}

static void test_numbers(void **state)
{
    (void)state;
    double d;
    long l;
    assert_int_equal(cli_parse_double("0.7", &d), 0);
    assert_true(d > 0.69 && d < 0.71);
    assert_int_equal(cli_parse_double("1e-3", &d), 0);
    assert_int_equal(cli_parse_double("", &d), -1);
    assert_int_equal(cli_parse_double("abc", &d), -1);
    assert_int_equal(cli_parse_double("1.5x", &d), -1);
    assert_int_equal(cli_parse_double("inf", &d), -1);
    assert_int_equal(cli_parse_double("nan", &d), -1);
    assert_int_equal(cli_parse_long("128", 1, 1000, &l), 0);
    assert_int_equal(l, 128);
    assert_int_equal(cli_parse_long("0", 1, 1000, &l), -1);
    assert_int_equal(cli_parse_long("1001", 1, 1000, &l), -1);
    assert_int_equal(cli_parse_long("12k", 1, 1000, &l), -1);
    assert_int_equal(cli_parse_long("99999999999999999999", 1, 1000, &l), -1);
}

/* ---- the whole command line through cli_main() ---- */

struct run {
    int code;
    char *out, *err;
};

static void run_cli(struct run *r, const char *stdin_text, ...)
{
    char *argv[32] = {"mcpctl"};
    int argc = 1;
    va_list ap;
    va_start(ap, stdin_text);
    for (char *s = va_arg(ap, char *); s; s = va_arg(ap, char *))
        argv[argc++] = s;
    va_end(ap);
    argv[argc] = NULL;
    size_t olen = 0, elen = 0;
    r->out = r->err = NULL;
    FILE *in = fmemopen((void *)(stdin_text ? stdin_text : ""),
                        strlen(stdin_text ? stdin_text : "") + 1, "r");
    FILE *out = open_memstream(&r->out, &olen);
    FILE *err = open_memstream(&r->err, &elen);
    r->code = cli_main(argc, argv, in, out, err);
    fclose(in);
    fclose(out);
    fclose(err);
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* One line on stderr, starting "mcpctl: ", nothing on stdout. */
static void assert_usage_error(struct run *r, const char *needle)
{
    if (r->code != CLI_EXIT_USAGE)
        fail_msg("exit %d, want %d; stderr: %s", r->code, CLI_EXIT_USAGE, r->err);
    assert_string_equal(r->out, "");
    assert_int_equal(strncmp(r->err, "mcpctl: ", 8), 0);
    char *nl = strchr(r->err, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    if (!strstr(r->err, needle))
        fail_msg("stderr '%s' lacks '%s'", r->err, needle);
}

static const struct {
    const char *args[8];
    const char *needle;
} usage_cases[] = {
    {{NULL}, "missing command"},
    {{"frobnicate"}, "unknown command 'frobnicate'"},
    {{"--bogus", "get"}, "unknown option '--bogus'"},
    {{"get"}, "missing the resource type"},
    {{"get", "pods"}, "unknown resource type 'pods'"},
    {{"get", "llm", "a", "b"}, "too many arguments"},
    {{"get", "llm", "-o", "xml"}, "unknown output format 'xml'"},
    {{"get", "llm", "-o"}, "option '-o' needs a value"},
    {{"get", "llm", "_provider-register"}, "invalid Llm name '_provider-register'"},
    {{"get", "llm", "--wide"}, "run 'mcpctl get --help'"},
    {{"describe", "llm"}, "missing the Llm's name"},
    {{"describe", "pods", "x"}, "unknown resource type"},
    {{"describe", "llm", "a/b"}, "invalid Llm name"},
    {{"describe", "llm", "m", "-o", "wide"}, "unknown output format 'wide' (use json or yaml)"},
    {{"describe", "llm", "m", "-o", "table"}, "unknown output format 'table'"},
    {{"describe", "llm", "m", "-o"}, "option '-o' needs a value"},
    {{"chat-llm"}, "missing the Llm's name"},
    {{"chat-llm", "m", "hello", "there"}, "too many arguments"},
    {{"chat-llm", "m", "-m", ""}, "needs a non-empty message"},
    {{"chat-llm", "m", "--temperature", "hot"}, "'--temperature' needs a number"},
    {{"chat-llm", "m", "--temperature", "-1"}, "'--temperature' needs a number"},
    {{"chat-llm", "m", "--max-tokens", "0"}, "'--max-tokens' needs a whole number"},
    {{"chat-llm", "m", "--max-tokens", "1.5"}, "'--max-tokens' needs a whole number"},
    {{"login"}, "needs both --server URL and --token TOKEN"},
    {{"login", "--server", "http://x"}, "needs both"},
    {{"login", "--server", "ftp://x", "--token", "t", "--no-verify"}, "invalid server URL"},
    {{"login", "extra"}, "takes no arguments"},
    {{"login", "--server", "http://x", "--token", "a b", "--no-verify"}, "control characters"},
    {{"help", "nope"}, "unknown command 'nope'"},
    {{"--server", "", "--token", "t", "get", "llm"}, "'--server' needs a URL"},
    {{"--server", "localhost:1", "--token", "t", "get", "llm"}, "invalid server URL"},
};

static void test_usage_errors(void **state)
{
    (void)state;
    setenv("MCPCTL_HOME", "/nonexistent/mcpctl-test", 1);
    unsetenv("MCPCTL_URL");
    unsetenv("MCPCTL_TOKEN");
    for (size_t i = 0; i < sizeof usage_cases / sizeof usage_cases[0]; i++) {
        const char *const *a = usage_cases[i].args;
        struct run r;
        run_cli(&r, NULL, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
        assert_usage_error(&r, usage_cases[i].needle);
        run_free(&r);
    }
}

static void test_missing_configuration(void **state)
{
    (void)state;
    setenv("MCPCTL_HOME", "/nonexistent/mcpctl-test", 1);
    unsetenv("MCPCTL_URL");
    unsetenv("MCPCTL_TOKEN");
    struct run r;
    run_cli(&r, NULL, "get", "llm", NULL);
    assert_usage_error(&r, "no mcpd server configured");
    assert_non_null(strstr(r.err, "mcpctl login --server URL --token TOKEN"));
    run_free(&r);
    run_cli(&r, NULL, "--server", "http://127.0.0.1:9", "describe", "llm", "x", NULL);
    assert_usage_error(&r, "no API token configured");
    run_free(&r);
}

static void test_help(void **state)
{
    (void)state;
    static const struct {
        const char *a, *b, *c;
        const char *needle;
    } cases[] = {
        {"--help", NULL, NULL, "Usage: mcpctl [--server URL] [--token TOKEN] COMMAND"},
        {"-h", NULL, NULL, "Exit codes:"},
        {"help", NULL, NULL, "Commands:"},
        {"help", "get", NULL, "Usage: mcpctl get llm [NAME] [-o table|wide|json|yaml]"},
        {"get", "--help", NULL, "Usage: mcpctl get llm"},
        {"get", "llm", "-h", "Usage: mcpctl get llm"},
        {"--help", "describe", NULL, "Usage: mcpctl describe llm NAME [-o json|yaml]"},
        {"chat-llm", "--help", NULL, "--no-stream"},
        {"login", "--help", NULL, "mode 0600"},
        {"get", "--help", "--bogus", "Usage: mcpctl get llm"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        run_cli(&r, NULL, cases[i].a, cases[i].b, cases[i].c, NULL);
        if (r.code != 0 || !strstr(r.out, cases[i].needle) || r.err[0])
            fail_msg("case %zu: exit %d, out '%s', err '%s'", i, r.code, r.out, r.err);
        run_free(&r);
    }
    struct run r;
    run_cli(&r, NULL, "--version", NULL);
    assert_int_equal(r.code, 0);
    assert_int_equal(strncmp(r.out, "mcpctl ", 7), 0);
    run_free(&r);
    run_cli(&r, NULL, "version", NULL);
    assert_int_equal(r.code, 0);
    assert_int_equal(strncmp(r.out, "mcpctl ", 7), 0);
    run_free(&r);
}

static void test_exit_names(void **state)
{
    (void)state;
    assert_string_equal(cli_exit_name(CLI_EXIT_USAGE), "usage");
    assert_string_equal(cli_exit_name(CLI_EXIT_UNAVAILABLE), "unavailable");
    assert_string_equal(cli_exit_name(99), "unknown");
    /* The codes are an interface: they never change. */
    assert_int_equal(CLI_EXIT_ERROR, 1);
    assert_int_equal(CLI_EXIT_USAGE, 2);
    assert_int_equal(CLI_EXIT_UNREACHABLE, 3);
    assert_int_equal(CLI_EXIT_AUTH, 4);
    assert_int_equal(CLI_EXIT_NOT_FOUND, 5);
    assert_int_equal(CLI_EXIT_UNAVAILABLE, 6);
    assert_int_equal(CLI_EXIT_INFER, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),        cmocka_unit_test(test_stop_at_positional),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_usage_errors), cmocka_unit_test(test_missing_configuration),
        cmocka_unit_test(test_help),         cmocka_unit_test(test_exit_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
