/*
 * Where mcpctl finds mcpd and its token, against the real mcpd: the
 * credentials file, MCPCTL_URL/MCPCTL_TOKEN over it, flags over both, the
 * ~/.mcpctl fallback, and `mcpctl login`.
 */
#include "cli_support.h"
#include "tmpdir.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static const char *providers = "[{\"name\":\"m1\",\"type\":\"openai\",\"model\":\"m\"}]";

static struct cli_t_env E;
static char dead_url[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dead_url, sizeof dead_url, "http://127.0.0.1:%d", cli_t_closed_port());
    return cli_t_env_start(&E, NULL, providers);
}

static int teardown(void **state)
{
    (void)state;
    return cli_t_env_stop(&E) == 0 ? 0 : -1;
}

/* A fresh home holding a credentials file (NULL: no file). Caller frees
 * with tmpdir_remove(). */
static char *home_with(const char *url, const char *token)
{
    char *home = tmpdir_create("mcpctl-home");
    if (url) {
        char *path = tmpdir_path(home, "credentials");
        json_t *j = json_pack("{s:s,s:s,s:s}", "mcpdUrl", url, "token", token, "extra", "kept");
        char *text = json_dumps(j, 0);
        assert_int_equal(cli_t_write_file(path, text), 0);
        free(text);
        json_decref(j);
        free(path);
    }
    return home;
}

/* Runs `get llm -o json` and returns the exit code. */
static int get(const char *home, const char *const env[], const char *flag_url,
               const char *flag_token, char **err_out)
{
    const char *args[8];
    int n = 0;
    if (flag_url) {
        args[n++] = "--server";
        args[n++] = flag_url;
    }
    args[n++] = "get";
    args[n++] = "llm";
    if (flag_token) {
        args[n++] = "--token";
        args[n++] = flag_token;
    }
    args[n] = NULL;
    struct cli_t_result r;
    int code = cli_t_run(home, env, NULL, args, &r);
    if (code == 0)
        assert_non_null(strstr(r.out, "m1 "));
    if (err_out)
        *err_out = strdup(r.err);
    cli_t_result_free(&r);
    return code;
}

static void test_file_alone(void **state)
{
    (void)state;
    char *home = home_with(E.env->mcpd.url, E.env->mcpd.token);
    assert_int_equal(get(home, NULL, NULL, NULL, NULL), 0);
    tmpdir_remove(home);
}

static void test_precedence(void **state)
{
    (void)state;
    const char *good = E.env->mcpd.token;
    char good_url_kv[128], good_tok_kv[256];
    snprintf(good_url_kv, sizeof good_url_kv, "MCPCTL_URL=%s", E.env->mcpd.url);
    snprintf(good_tok_kv, sizeof good_tok_kv, "MCPCTL_TOKEN=%s", good);
    char dead_url_kv[128];
    snprintf(dead_url_kv, sizeof dead_url_kv, "MCPCTL_URL=%s", dead_url);
    const char *bad_tok_kv = "MCPCTL_TOKEN=mcp_bad";

    /* env over file */
    char *bad_file = home_with(dead_url, "mcp_bad");
    assert_int_equal(
        get(bad_file, (const char *[]){good_url_kv, good_tok_kv, NULL}, NULL, NULL, NULL), 0);
    char *good_file = home_with(E.env->mcpd.url, good);
    assert_int_equal(get(good_file, (const char *[]){bad_tok_kv, NULL}, NULL, NULL, NULL), 4);
    assert_int_equal(get(good_file, (const char *[]){dead_url_kv, NULL}, NULL, NULL, NULL), 3);

    /* flags over env (and file) */
    assert_int_equal(
        get(bad_file, (const char *[]){dead_url_kv, bad_tok_kv, NULL}, E.env->mcpd.url, good, NULL),
        0);
    char *err = NULL;
    assert_int_equal(
        get(good_file, (const char *[]){good_url_kv, good_tok_kv, NULL}, NULL, "mcp_bad", &err), 4);
    assert_non_null(strstr(err, "the token from --token"));
    free(err);
    assert_int_equal(
        get(good_file, (const char *[]){good_url_kv, good_tok_kv, NULL}, dead_url, NULL, NULL), 3);

    /* each value on its own: URL from a flag, token from the file */
    assert_int_equal(
        get(good_file, (const char *[]){dead_url_kv, NULL}, E.env->mcpd.url, NULL, NULL), 0);
    tmpdir_remove(bad_file);
    tmpdir_remove(good_file);
}

/* Without MCPCTL_HOME: ~/.mcpctl/credentials. */
static void test_home_fallback(void **state)
{
    (void)state;
    char *home = tmpdir_create("mcpctl-user");
    char *dir = tmpdir_path(home, ".mcpctl");
    assert_int_equal(mkdir(dir, 0700), 0);
    char *path = tmpdir_path(dir, "credentials");
    char text[512];
    snprintf(text, sizeof text, "{\"mcpdUrl\":\"%s/\",\"token\":\"%s\"}", E.env->mcpd.url,
             E.env->mcpd.token);
    assert_int_equal(cli_t_write_file(path, text), 0);
    char home_kv[600];
    snprintf(home_kv, sizeof home_kv, "HOME=%s", home);
    assert_int_equal(get("", (const char *[]){home_kv, NULL}, NULL, NULL, NULL), 0);
    free(path);
    free(dir);
    tmpdir_remove(home);
}

static void test_broken_file(void **state)
{
    (void)state;
    char *home = tmpdir_create("mcpctl-home");
    char *path = tmpdir_path(home, "credentials");
    assert_int_equal(cli_t_write_file(path, "{\"mcpdUrl\": 42"), 0);
    char *err = NULL;
    assert_int_equal(get(home, NULL, NULL, NULL, &err), 2);
    assert_non_null(strstr(err, "is not a JSON object"));
    free(err);
    /* Flags do without it. */
    assert_int_equal(get(home, NULL, E.env->mcpd.url, E.env->mcpd.token, NULL), 0);
    free(path);
    tmpdir_remove(home);
}

static void test_login(void **state)
{
    (void)state;
    char *home = home_with("http://old.example", "old-token");
    char *path = tmpdir_path(home, "credentials");
    struct cli_t_result r;

    /* A rejected token is not saved. */
    cli_t_run(home, NULL, NULL,
              (const char *[]){"login", "--server", E.env->mcpd.url, "--token", "mcp_bad", NULL},
              &r);
    assert_int_equal(r.code, 4);
    cli_t_result_free(&r);
    json_t *j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "token")), "old-token");
    json_decref(j);

    /* An unreachable server is not saved either... */
    cli_t_run(home, NULL, NULL,
              (const char *[]){"login", "--server", dead_url, "--token", "t", NULL}, &r);
    assert_int_equal(r.code, 3);
    cli_t_result_free(&r);

    /* ...unless asked to. */
    cli_t_run(home, NULL, NULL,
              (const char *[]){"login", "--server", dead_url, "--token", "t", "--no-verify", NULL},
              &r);
    assert_int_equal(r.code, 0);
    cli_t_result_free(&r);

    cli_t_run(
        home, NULL, NULL,
        (const char *[]){"--server", E.env->mcpd.url, "login", "--token", E.env->mcpd.token, NULL},
        &r);
    if (r.code != 0)
        fail_msg("login: %s", r.err);
    assert_non_null(strstr(r.out, path));
    cli_t_result_free(&r);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "mcpdUrl")), E.env->mcpd.url);
    assert_string_equal(json_string_value(json_object_get(j, "token")), E.env->mcpd.token);
    assert_string_equal(json_string_value(json_object_get(j, "extra")), "kept");
    json_decref(j);

    /* And later commands need no flags. */
    assert_int_equal(get(home, NULL, NULL, NULL, NULL), 0);

    /* A fresh home gets its directory created. */
    char *fresh = tmpdir_path(home, "new/home");
    cli_t_run(
        fresh, NULL, NULL,
        (const char *[]){"login", "--server", E.env->mcpd.url, "--token", E.env->mcpd.token, NULL},
        &r);
    assert_int_equal(r.code, 0);
    cli_t_result_free(&r);
    assert_int_equal(get(fresh, NULL, NULL, NULL, NULL), 0);
    free(fresh);
    free(path);
    tmpdir_remove(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_alone),    cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_home_fallback), cmocka_unit_test(test_broken_file),
        cmocka_unit_test(test_login),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
