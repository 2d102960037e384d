/*
 * mcpctl get llm / describe llm against the real mcpd, with a fake
 * publisher holding its control stream: the table, json and yaml that read
 * back to the API's objects, describe, and a publisher going away.
 */
#include "cli_support.h"
#include "http.h"
#include "mcpd_harness.h"
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
    "[{\"name\":\"vllm-local\",\"type\":\"openai\",\"model\":\"Qwen/Qwen2.5-7B-Instruct-AWQ\","
    "\"tier\":\"fast\",\"description\":\"laptop GPU\\nsecond line\","
    "\"extraConfig\":{\"ctx\":8192,\"quant\":\"awq\"}},"
    "{\"name\":\"pooled\",\"type\":\"openai\",\"model\":\"m-2\",\"poolName\":\"gpu-pool\"}]";

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

/* Runs mcpctl as alice; fails the test unless it exits with want. */
static void run(struct cli_t_result *r, int want, const char *const args[])
{
    cli_t_run_env_expect(&E, want, NULL, args, r);
}

/* The API's answer for path, as JSON. */
static json_t *api_get(const char *path)
{
    struct http_resp resp;
    test_call(E.env, "GET", path, E.env->mcpd.token, NULL, NULL, &resp);
    assert_int_equal(resp.status, 200);
    json_t *j = json_loads(resp.body, 0, NULL);
    assert_non_null(j);
    http_resp_free(&resp);
    return j;
}

/* Compares and releases both. Drops the fields that move on their own (heartbeats) before
 * comparing. */
static void drop_moving(json_t *v)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) drop_moving(x);
        return;
    }
    json_object_del(v, "lastHeartbeatAt");
    json_object_del(v, "updatedAt");
}

static void assert_same_objects(json_t *got, json_t *want)
{
    drop_moving(got);
    drop_moving(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_INDENT(1)), *w = json_dumps(want, JSON_INDENT(1));
        fail_msg("got\n%s\nwant\n%s", g, w);
    }
    json_decref(got);
    json_decref(want);
}

/* Splits line into whitespace-separated words; returns the count. */
static int words(char *line, char *out[], int max)
{
    int n = 0;
    for (char *tok = strtok(line, " "); tok && n < max; tok = strtok(NULL, " "))
        out[n++] = tok;
    return n;
}

static void test_table(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "llm", NULL});
    assert_string_equal(r.err, "");
    /* One header line, then the rows sorted by name. */
    char *lines[8];
    int n = 0;
    for (char *l = strtok(r.out, "\n"); l && n < 8; l = strtok(NULL, "\n"))
        lines[n++] = l;
    assert_int_equal(n, 3);
    /* Left-aligned: every column starts at the same offset on every line. */
    const char *cols[] = {"NAME", "KIND", "STATUS", "TYPE", "MODEL", "TIER", "POOL", "AGE"};
    size_t off[8];
    for (int c = 0; c < 8; c++) {
        char *p = strstr(lines[0], cols[c]);
        assert_non_null(p);
        off[c] = (size_t)(p - lines[0]);
        if (c > 0)
            assert_true(off[c] > off[c - 1]);
    }
    for (int l = 1; l < 3; l++)
        for (int c = 0; c < 8; c++) {
            assert_true(strlen(lines[l]) > off[c]);
            assert_true(lines[l][off[c]] != ' ');
            if (off[c] > 0)
                assert_int_equal(lines[l][off[c] - 1], ' ');
        }
    char *w[16];
    assert_int_equal(words(lines[0], w, 16), 8);
    for (int c = 0; c < 8; c++)
        assert_string_equal(w[c], cols[c]);
    assert_int_equal(words(lines[1], w, 16), 8);
    const char *pooled[] = {"pooled", "virtual", "active", "openai", "m-2", "-", "gpu-pool"};
    for (int c = 0; c < 7; c++)
        assert_string_equal(w[c], pooled[c]);
    assert_int_equal(words(lines[2], w, 16), 8);
    const char *vllm[] = {
        "vllm-local", "virtual", "active", "openai", "Qwen/Qwen2.5-7B-Instruct-AWQ", "fast", "-"};
    for (int c = 0; c < 7; c++)
        assert_string_equal(w[c], vllm[c]);
    /* Just published: an age in seconds. */
    assert_true(w[7][strlen(w[7]) - 1] == 's');
    cli_t_result_free(&r);
}

static void test_table_one(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "llm", "vllm-local", NULL});
    assert_int_equal(strncmp(r.out, "NAME ", 5), 0);
    char *row = strchr(r.out, '\n') + 1;
    assert_int_equal(strncmp(row, "vllm-local ", 11), 0);
    assert_string_equal(strchr(row, '\n'), "\n"); /* exactly one row */
    cli_t_result_free(&r);
}

static void test_table_wide(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "llm", "vllm-local", "-o", "wide", NULL});
    assert_string_equal(r.err, "");
    char *row = strchr(r.out, '\n');
    assert_non_null(row);
    *row++ = '\0';
    assert_string_equal(strchr(row, '\n'), "\n"); /* exactly one row */
    *strchr(row, '\n') = '\0';
    char *w[16];
    const char *cols[] = {"NAME", "KIND", "STATUS", "TYPE",  "MODEL",
                          "TIER", "POOL", "AGE",    "OWNER", "LAST-HEARTBEAT"};
    assert_int_equal(words(r.out, w, 16), 10);
    for (int c = 0; c < 10; c++)
        assert_string_equal(w[c], cols[c]);
    assert_int_equal(words(row, w, 16), 10);
    assert_string_equal(w[0], "vllm-local");
    json_t *api = api_get("/api/v1/llms/vllm-local");
    assert_string_equal(w[8], json_string_value(json_object_get(api, "owner")));
    json_decref(api);
    /* Heartbeating: an age in seconds. */
    assert_true(w[9][strlen(w[9]) - 1] == 's');
    cli_t_result_free(&r);
}

static void test_json(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "llm", "-o", "json", NULL});
    json_t *got = json_loads(r.out, 0, NULL);
    assert_non_null(got);
    assert_true(json_is_array(got));
    assert_int_equal(json_array_size(got), 2);
    assert_same_objects(got, api_get("/api/v1/llms"));
    cli_t_result_free(&r);

    run(&r, 0, (const char *[]){"get", "llm", "vllm-local", "--output=json", NULL});
    got = json_loads(r.out, 0, NULL);
    assert_true(json_is_object(got));
    assert_string_equal(json_string_value(json_object_get(got, "name")), "vllm-local");
    assert_same_objects(got, api_get("/api/v1/llms/vllm-local"));
    cli_t_result_free(&r);
}

static void test_yaml(void **state)
{
    (void)state;
    struct cli_t_result r;
    char err[256];
    run(&r, 0, (const char *[]){"get", "llm", "-o", "yaml", NULL});
    json_t *got = cli_t_yaml_to_json(r.out, err, sizeof err);
    if (!got)
        fail_msg("%s\n%s", err, r.out);
    assert_true(json_is_array(got));
    assert_same_objects(got, api_get("/api/v1/llms"));
    cli_t_result_free(&r);

    run(&r, 0, (const char *[]){"get", "llm", "pooled", "-oyaml", NULL});
    got = cli_t_yaml_to_json(r.out, err, sizeof err);
    assert_non_null(got);
    assert_same_objects(got, api_get("/api/v1/llms/pooled"));
    assert_non_null(strstr(r.out, "name: pooled\n"));
    cli_t_result_free(&r);
}

static void test_describe_json_yaml(void **state)
{
    (void)state;
    struct cli_t_result r;
    char err[256];
    run(&r, 0, (const char *[]){"describe", "llm", "vllm-local", "-o", "json", NULL});
    json_t *got = json_loads(r.out, 0, NULL);
    assert_true(json_is_object(got));
    assert_non_null(strstr(r.out, "\n  \"name\": \"vllm-local\",\n"));
    assert_same_objects(got, api_get("/api/v1/llms/vllm-local"));
    cli_t_result_free(&r);

    run(&r, 0, (const char *[]){"describe", "llm", "pooled", "--output=yaml", NULL});
    got = cli_t_yaml_to_json(r.out, err, sizeof err);
    if (!got)
        fail_msg("%s\n%s", err, r.out);
    assert_true(json_is_object(got));
    assert_same_objects(got, api_get("/api/v1/llms/pooled"));
    cli_t_result_free(&r);
}

static void test_describe(void **state)
{
    (void)state;
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"describe", "llm", "vllm-local", NULL});
    const char *want[] = {
        "Name:             vllm-local\n",
        "Kind:             virtual\n",
        "Status:           active\n",
        "Type:             openai\n",
        "Model:            Qwen/Qwen2.5-7B-Instruct-AWQ\n",
        "Tier:             fast\n",
        "Pool:             <none>\n",
        "Description:      laptop GPU\n                  second line\n",
        "Owner:            alice\n",
        "Inactive since:   <none>\n",
        "Extra config:\n  ctx: 8192\n  quant: awq\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(r.out, want[i]))
            fail_msg("describe lacks '%s':\n%s", want[i], r.out);
    char session_line[128];
    snprintf(session_line, sizeof session_line, "Session:          %s\n",
             fake_publisher_session(E.pub));
    assert_non_null(strstr(r.out, session_line));
    /* Times carry their age. */
    char *hb = strstr(r.out, "Last heartbeat:   ");
    assert_non_null(hb);
    char *nl = strchr(hb, '\n');
    assert_true(nl - hb > 7 && strncmp(nl - 4, "ago)", 4) == 0);
    assert_non_null(strstr(r.out, "Created:          2"));
    cli_t_result_free(&r);
}

/* Someone else's Llm: no session line (the API hides it from other owners). */
static void test_describe_other_owner(void **state)
{
    (void)state;
    char *bob = mcpd_create_token(E.env->mcpd.db, "bob");
    assert_non_null(bob);
    char kv[256];
    snprintf(kv, sizeof kv, "MCPCTL_TOKEN=%s", bob);
    const char *env[] = {E.url_kv, kv, NULL};
    struct cli_t_result r;
    cli_t_run(E.home, env, NULL, (const char *[]){"describe", "llm", "pooled", NULL}, &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "Owner:            alice\n"));
    assert_null(strstr(r.out, "Session:"));
    cli_t_result_free(&r);
    free(bob);
}

/* Last: the publisher goes away, its rows turn inactive. */
static void test_publisher_gone(void **state)
{
    (void)state;
    fake_publisher_drop(E.pub);
    assert_int_equal(test_wait_status(E.env, "vllm-local", "inactive", 10000), 0);
    struct cli_t_result r;
    run(&r, 0, (const char *[]){"get", "llm", "vllm-local", NULL});
    assert_non_null(strstr(r.out, " inactive "));
    cli_t_result_free(&r);
    run(&r, 0, (const char *[]){"describe", "llm", "vllm-local", NULL});
    assert_non_null(strstr(r.out, "Status:           inactive\n"));
    char *since = strstr(r.out, "Inactive since:   2");
    assert_non_null(since);
    assert_non_null(strstr(since, "s ago)\n"));
    cli_t_result_free(&r);
}

static void test_empty_list(void **state)
{
    (void)state;
    struct cli_t_env empty;
    assert_int_equal(cli_t_env_start(&empty, NULL, NULL), 0);
    struct cli_t_result r;
    cli_t_run_env(&empty, NULL, (const char *[]){"get", "llm", NULL}, &r);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "no Llms found\n");
    cli_t_result_free(&r);
    cli_t_run_env(&empty, NULL, (const char *[]){"get", "llm", "-o", "json", NULL}, &r);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "[]\n");
    cli_t_result_free(&r);
    cli_t_run_env(&empty, NULL, (const char *[]){"get", "llm", "-o", "yaml", NULL}, &r);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "[]\n");
    cli_t_result_free(&r);
    assert_int_equal(cli_t_env_stop(&empty), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),          cmocka_unit_test(test_table_one),
        cmocka_unit_test(test_table_wide),     cmocka_unit_test(test_describe_json_yaml),
        cmocka_unit_test(test_json),           cmocka_unit_test(test_yaml),
        cmocka_unit_test(test_describe),       cmocka_unit_test(test_describe_other_owner),
        cmocka_unit_test(test_publisher_gone), cmocka_unit_test(test_empty_list),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
