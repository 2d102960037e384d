/* Unit tests for cli/credentials.c: precedence, the file, login writes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_support.h"
#include "credentials.h"
#include "tmpdir.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *file_json =
    "{\"mcpdUrl\": \"http://file.example:1\", \"token\": \"file-token\", \"other\": 42}";

static const struct {
    const char *what;
    const char *flag_url, *env_url, *flag_token, *env_token;
    const char *file; /* NULL: no file */
    const char *want_url, *want_url_from, *want_token, *want_token_from;
} cases[] = {
    {"flags win over env and file", "http://flag:1", "http://env:1", "flag-token", "env-token",
     NULL, "http://flag:1", "--server", "flag-token", "--token"},
    {"env wins over file", NULL, "http://env:1", NULL, "env-token", NULL, "http://env:1",
     "MCPCTL_URL", "env-token", "MCPCTL_TOKEN"},
    {"file alone", NULL, NULL, NULL, NULL, NULL, "http://file.example:1", "the credentials file",
     "file-token", "the credentials file"},
    {"empty env counts as unset", NULL, "", NULL, "", NULL, "http://file.example:1",
     "the credentials file", "file-token", "the credentials file"},
    {"each value on its own: flag url, env token", "http://flag:1", NULL, NULL, "env-token", NULL,
     "http://flag:1", "--server", "env-token", "MCPCTL_TOKEN"},
    {"each value on its own: env url, file token", NULL, "http://env:1", NULL, NULL, NULL,
     "http://env:1", "MCPCTL_URL", "file-token", "the credentials file"},
    {"flags need no file, even a broken one", "http://flag:1", NULL, "t", NULL, "{not json",
     "http://flag:1", "--server", "t", "--token"},
    {"trailing slashes are dropped", "http://flag:1///", NULL, "t", NULL, NULL, "http://flag:1",
     "--server", "t", "--token"},
};

static void test_precedence_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = tmpdir_create("cli-creds");
        char *path = tmpdir_path(dir, "credentials");
        assert_int_equal(cli_t_write_file(path, cases[i].file ? cases[i].file : file_json), 0);
        struct creds_sources s = {
            .flag_url = cases[i].flag_url,
            .flag_token = cases[i].flag_token,
            .env_url = cases[i].env_url,
            .env_token = cases[i].env_token,
            .env_home = dir,
            .user_home = "/nonexistent",
        };
        struct creds c;
        struct cli_error err = {0};
        if (creds_resolve(&s, true, true, &c, &err) != 0)
            fail_msg("%s: %s", cases[i].what, err.msg);
        if (strcmp(c.url, cases[i].want_url) != 0 || strcmp(c.token, cases[i].want_token) != 0 ||
            strcmp(c.url_from, cases[i].want_url_from) != 0 ||
            strcmp(c.token_from, cases[i].want_token_from) != 0)
            fail_msg("%s: got %s (%s) %s (%s)", cases[i].what, c.url, c.url_from, c.token,
                     c.token_from);
        assert_string_equal(c.path, path);
        creds_release(&c);
        free(path);
        tmpdir_remove(dir);
    }
}

static int resolve_in(const char *dir, const char *file, struct creds *c, struct cli_error *err)
{
    if (file) {
        char *path = tmpdir_path(dir, "credentials");
        assert_int_equal(cli_t_write_file(path, file), 0);
        free(path);
    }
    struct creds_sources s = {.env_home = dir};
    return creds_resolve(&s, true, true, c, err);
}

static void test_missing_values_are_usage_errors(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        const char *needle;
    } bad[] = {
        {NULL, "no mcpd server configured"},
        {"{\"mcpdUrl\": \"http://x:1\"}", "no API token configured"},
        {"{\"token\": \"t\"}", "no mcpd server configured"},
        {"{\"mcpdUrl\": \"http://x:1\", \"token\": 5}", "'token' must be a string"},
        {"[1, 2]", "is not a JSON object"},
        {"{broken", "is not a JSON object"},
        {"{\"mcpdUrl\": \"localhost:8080\", \"token\": \"t\"}", "invalid server URL"},
        {"{\"mcpdUrl\": \"\", \"token\": \"t\"}", "no mcpd server configured"},
        {"{\"mcpdUrl\": \"http://x:1\", \"token\": \"a\\r\\nX-Evil: 1\"}",
         "the token from the credentials file contains spaces or control characters"},
        {"{\"mcpdUrl\": \"http://x:1\", \"token\": \"two words\"}", "contains spaces"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *dir = tmpdir_create("cli-creds");
        struct creds c;
        struct cli_error err = {0};
        assert_int_equal(resolve_in(dir, bad[i].file, &c, &err), -1);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].needle);
        assert_null(strchr(err.msg, '\n'));
        creds_release(&c);
        tmpdir_remove(dir);
    }
}

static void test_empty_flags_are_rejected(void **state)
{
    (void)state;
    struct creds_sources s = {.flag_url = "", .flag_token = "t", .env_home = "/nonexistent"};
    struct creds c;
    struct cli_error err = {0};
    assert_int_equal(creds_resolve(&s, true, true, &c, &err), -1);
    assert_int_equal(err.code, CLI_EXIT_USAGE);
    creds_release(&c);
}

static void test_home_fallback_path(void **state)
{
    (void)state;
    struct creds_sources s = {.user_home = "/home/bob"};
    char *p = creds_file_path(&s);
    assert_string_equal(p, "/home/bob/.mcpctl/credentials");
    free(p);
    s.env_home = "";
    p = creds_file_path(&s);
    assert_string_equal(p, "/home/bob/.mcpctl/credentials");
    free(p);
    s.env_home = "/srv/mcp";
    p = creds_file_path(&s);
    assert_string_equal(p, "/srv/mcp/credentials");
    free(p);
    struct creds_sources none = {0};
    assert_null(creds_file_path(&none));
}

static void test_only_needed_values(void **state)
{
    (void)state;
    struct creds_sources s = {.flag_url = "https://a.example/", .env_home = "/nonexistent"};
    struct creds c;
    struct cli_error err = {0};
    assert_int_equal(creds_resolve(&s, true, false, &c, &err), 0);
    assert_string_equal(c.url, "https://a.example");
    assert_null(c.token);
    creds_release(&c);
}

static void test_normalize_url(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"http://h", "http://h"},
        {"http://h:8080/", "http://h:8080"},
        {"HTTPS://h.example//", "HTTPS://h.example"},
        {"http://h/prefix/", "http://h/prefix"},
    };
    static const char *const bad[] = {"",        "h:8080",    "ftp://h",
                                      "http://", "http:///x", "http://a b"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *out = NULL;
        struct cli_error err = {0};
        assert_int_equal(creds_normalize_url(ok[i].in, &out, &err), 0);
        assert_string_equal(out, ok[i].out);
        free(out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = NULL;
        struct cli_error err = {0};
        if (creds_normalize_url(bad[i], &out, &err) != -1)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
    }
}

static void test_save_new_file(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "deep/er/credentials");
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "http://h:1", "tok", &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *parent = tmpdir_path(dir, "deep/er");
    assert_int_equal(stat(parent, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    free(parent);
    json_t *j = json_load_file(path, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "mcpdUrl")), "http://h:1");
    assert_string_equal(json_string_value(json_object_get(j, "token")), "tok");
    assert_int_equal(json_object_size(j), 2);
    json_decref(j);
    free(path);
    tmpdir_remove(dir);
}

static void test_save_keeps_other_keys(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "credentials");
    assert_int_equal(cli_t_write_file(path, file_json), 0);
    chmod(path, 0644);
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "https://new.example", "new-token", &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    json_t *j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "mcpdUrl")), "https://new.example");
    assert_string_equal(json_string_value(json_object_get(j, "token")), "new-token");
    assert_int_equal(json_integer_value(json_object_get(j, "other")), 42);
    json_decref(j);

    /* And what was saved is what resolves. */
    struct creds c;
    assert_int_equal(resolve_in(dir, NULL, &c, &err), 0);
    assert_string_equal(c.url, "https://new.example");
    assert_string_equal(c.token, "new-token");
    creds_release(&c);
    free(path);
    tmpdir_remove(dir);
}

static void test_save_refuses_to_clobber_a_broken_file(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "credentials");
    assert_int_equal(cli_t_write_file(path, "not json"), 0);
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "http://h:1", "tok", &err), -1);
    assert_int_equal(err.code, CLI_EXIT_ERROR);
    assert_non_null(strstr(err.msg, "fix or remove it"));
    FILE *f = fopen(path, "r");
    char buf[64] = {0};
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "not json");
    free(path);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence_table),
        cmocka_unit_test(test_missing_values_are_usage_errors),
        cmocka_unit_test(test_empty_flags_are_rejected),
        cmocka_unit_test(test_home_fallback_path),
        cmocka_unit_test(test_only_needed_values),
        cmocka_unit_test(test_normalize_url),
        cmocka_unit_test(test_save_new_file),
        cmocka_unit_test(test_save_keeps_other_keys),
        cmocka_unit_test(test_save_refuses_to_clobber_a_broken_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
