/*
 * mcpctl get usage against the real mcpd, after calls a fake publisher
 * answered with token counts: the table (rows and the TOTAL line match
 * the API's), wide, json and yaml that read back to the API's object, the
 * filters, another owner's usage refused, bad dates, and no usage at all.
 */
#include "cli_support.h"
#include "http.h"
#include "test_env.h"
#include "usage_support.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *providers = "[{\"name\":\"tally\",\"type\":\"openai\",\"model\":\"m\"},"
                               "{\"name\":\"other\",\"type\":\"openai\",\"model\":\"m\"}]";

static struct cli_t_env E;

static void infer(const char *llm, const char *body)
{
    static const char *const json_hdr[] = {"Content-Type: application/json", NULL};
    char path[128];
    snprintf(path, sizeof path, "/api/v1/llms/%s/infer", llm);
    struct http_resp r;
    test_call(E.env, "POST", path, E.env->mcpd.token, json_hdr, body, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
}

static int setup(void **state)
{
    (void)state;
    if (cli_t_env_start(&E, NULL, providers) < 0)
        return -1;
    fake_publisher_set_script(E.pub,
                              &(struct fp_script){.prompt_tokens = 120, .completion_tokens = 45});
    static const char once[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    static const char streamed[] =
        "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    infer("tally", once);
    infer("tally", streamed);
    infer("other", once);
    json_decref(usage_t_wait(E.env, E.env->mcpd.token, NULL, NULL, NULL, 3));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return cli_t_env_stop(&E) == 0 ? 0 : -1;
}

static void run(struct cli_t_result *r, int want, const char *const args[])
{
    cli_t_run_env_expect(&E, want, NULL, args, r);
}

static json_t *api_usage(const char *query)
{
    long status;
    json_t *j = usage_t_get(E.env, E.env->mcpd.token, query, &status);
    assert_int_equal(status, 200);
    return j;
}

static int words(char *line, char *out[], int max)
{
    int n = 0;
    for (char *tok = strtok(line, " "); tok && n < max; tok = strtok(NULL, " "))
        out[n++] = tok;
    return n;
}

static const char *num(const json_t *obj, const char *key, char buf[32])
{
    snprintf(buf, 32, "%lld", (long long)json_integer_value(json_object_get(obj, key)));
    return buf;
}

/* The table's lines, header first, match the API's rows and totals. */
static void expect_table(char *out, const json_t *api, bool wide)
{
    static const char *const cols[] = {
        "DAY",         "OWNER", "LLM", "REQUESTS", "ERRORS", "PROMPT-TOKENS", "COMPLETION-TOKENS",
        "TOTAL-TOKENS"};
    int ncols = wide ? 8 : 7;
    char *lines[16];
    int n = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l && n < 16;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    const json_t *rows = json_object_get(api, "usage");
    assert_int_equal(n, (int)json_array_size(rows) + 2); /* header, rows, TOTAL */
    char *w[16];
    assert_int_equal(words(lines[0], w, 16), ncols);
    for (int c = 0; c < ncols; c++)
        assert_string_equal(w[c], cols[c]);
    char b[4][32], total[32];
    for (size_t i = 0; i < json_array_size(rows); i++) {
        const json_t *row = json_array_get(rows, i);
        assert_int_equal(words(lines[i + 1], w, 16), ncols);
        assert_string_equal(w[0], json_string_value(json_object_get(row, "day")));
        assert_string_equal(w[1], json_string_value(json_object_get(row, "owner")));
        assert_string_equal(w[2], json_string_value(json_object_get(row, "llm")));
        assert_string_equal(w[3], num(row, "requests", b[0]));
        assert_string_equal(w[4], num(row, "errors", b[1]));
        assert_string_equal(w[5], num(row, "promptTokens", b[2]));
        assert_string_equal(w[6], num(row, "completionTokens", b[3]));
    }
    const json_t *totals = json_object_get(api, "totals");
    assert_int_equal(words(lines[n - 1], w, 16), ncols - 2); /* no owner, no Llm */
    assert_string_equal(w[0], "TOTAL");
    assert_string_equal(w[1], num(totals, "requests", b[0]));
    assert_string_equal(w[3], num(totals, "promptTokens", b[2]));
    assert_string_equal(w[4], num(totals, "completionTokens", b[3]));
    if (wide) {
        snprintf(total, sizeof total, "%lld",
                 (long long)(json_integer_value(json_object_get(totals, "promptTokens")) +
                             json_integer_value(json_object_get(totals, "completionTokens"))));
        assert_string_equal(w[5], total);
    }
}

static void test_table_and_wide(void **state)
{
    (void)state;
    json_t *api = api_usage(NULL);
    struct usage_t_counts all = usage_t_sum(api, "alice", NULL);
    usage_t_expect("the calls", all, (struct usage_t_counts){3, 0, 360, 135});
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "usage", NULL});
    assert_string_equal(r.err, "");
    expect_table(r.out, api, false);
    cli_t_result_free(&r);
    run(&r, 0, (const char *[]){"get", "usage", "-o", "wide", NULL});
    expect_table(r.out, api, true);
    cli_t_result_free(&r);
    json_decref(api);
}

static void test_json_yaml_and_filters(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "usage", "-o", "json", NULL});
    json_t *got = json_loads(r.out, 0, NULL);
    json_t *api = api_usage(NULL);
    assert_true(json_equal(got, api));
    json_decref(got);
    cli_t_result_free(&r);

    run(&r, 0, (const char *[]){"get", "usage", "-o", "yaml", NULL});
    char err[256];
    got = cli_t_yaml_to_json(r.out, err, sizeof err);
    assert_non_null(got);
    assert_true(json_equal(got, api));
    json_decref(got);
    json_decref(api);
    cli_t_result_free(&r);

    /* the filters are passed on as the API takes them */
    run(&r, 0,
        (const char *[]){"get", "usage", "--llm", "tally", "--owner", "alice", "--since",
                         "2000-01-01", "--until", "2999-12-31T00:00:00+02:00", "-o", "json", NULL});
    got = json_loads(r.out, 0, NULL);
    api = api_usage("llm=tally&owner=alice&since=2000-01-01&until=2999-12-31");
    assert_true(json_equal(got, api));
    usage_t_expect("tally's", usage_t_sum(got, NULL, NULL), (struct usage_t_counts){2, 0, 240, 90});
    json_decref(got);
    json_decref(api);
    cli_t_result_free(&r);
}

static void test_errors_and_nothing_found(void **state)
{
    (void)state;
    struct cli_t_result r;
    /* no usage in the range: said on stderr, nothing on stdout */
    run(&r, 0, (const char *[]){"get", "usage", "--since", "2999-01-01", NULL});
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "no usage found\n");
    cli_t_result_free(&r);
    /* another owner's usage needs an admin token */
    run(&r, 4, (const char *[]){"get", "usage", "--owner", "bob", NULL});
    assert_non_null(strstr(r.err, "403"));
    assert_non_null(strstr(r.err, "admin"));
    cli_t_result_free(&r);
    /* a date mcpd cannot read */
    run(&r, 1, (const char *[]){"get", "usage", "--since", "2026-02-30", NULL});
    assert_non_null(strstr(r.err, "400"));
    assert_non_null(strstr(r.err, "since"));
    cli_t_result_free(&r);
    /* usage filters on get llm, and a bad Llm name, are usage errors */
    run(&r, 2, (const char *[]){"get", "llm", "--since", "2026-01-01", NULL});
    assert_non_null(strstr(r.err, "get usage"));
    cli_t_result_free(&r);
    run(&r, 2, (const char *[]){"get", "usage", "--llm", "bad name", NULL});
    cli_t_result_free(&r);
    run(&r, 2, (const char *[]){"get", "usage", "extra", NULL});
    cli_t_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_and_wide),
        cmocka_unit_test(test_json_yaml_and_filters),
        cmocka_unit_test(test_errors_and_nothing_found),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
