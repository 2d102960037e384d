/*
 * Which database `mcpd token ...` uses: --db, else MCPD_DB, else the
 * server's default (MCPD_DEFAULT_DB), the same order as the server's; it
 * says which file it wrote to, and never creates the default one, which
 * belongs to the server.
 */
#include "proc.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void expect_contains(const char *what, const char *text, const char *needle)
{
    if (!text || !strstr(text, needle))
        fail_msg("%s: '%s' not found in '%s'", what, needle, text ? text : "(none)");
}

static void test_mcpd_db_names_the_database(void **state)
{
    (void)state;
    char *dir = tmpdir_create("token-db");
    char *env_db = tmpdir_path(dir, "env.db");
    char *flag_db = tmpdir_path(dir, "flag.db");
    char env_kv[4200];
    snprintf(env_kv, sizeof env_kv, "MCPD_DB=%s", env_db);
    const char *env[] = {env_kv, NULL};
    char *out = NULL, *err = NULL, want[4300];

    const char *create[] = {MCPD_BIN, "token", "create", "--owner", "ana", NULL};
    assert_int_equal(proc_run(create, env, NULL, &out, &err, 30000), 0);
    snprintf(want, sizeof want, "in database '%s'", env_db);
    expect_contains("token create with MCPD_DB", err, want);
    assert_int_equal(access(env_db, F_OK), 0);
    free(out);
    free(err);

    const char *list[] = {MCPD_BIN, "token", "list", NULL};
    assert_int_equal(proc_run(list, env, NULL, &out, &err, 30000), 0);
    expect_contains("token list with MCPD_DB", out, "ana");
    free(out);
    free(err);

    /* --db wins over MCPD_DB, as it does for the server. */
    const char *create_flag[] = {MCPD_BIN, "token", "create", "--owner",
                                 "bo",     "--db",  flag_db,  NULL};
    assert_int_equal(proc_run(create_flag, env, NULL, &out, &err, 30000), 0);
    snprintf(want, sizeof want, "in database '%s'", flag_db);
    expect_contains("token create with --db", err, want);
    free(out);
    free(err);
    assert_int_equal(proc_run(list, env, NULL, &out, &err, 30000), 0);
    if (strstr(out, "bo "))
        fail_msg("the token made with --db landed in MCPD_DB's database: %s", out);
    free(out);
    free(err);

    free(env_db);
    free(flag_db);
    tmpdir_remove(dir);
}

static void test_default_database_is_never_created(void **state)
{
    (void)state;
    if (access(MCPD_DEFAULT_DB, F_OK) == 0)
        skip(); /* mcpd is installed and ran here: its database is not ours to test with */
    char *saved = getenv("MCPD_DB") ? strdup(getenv("MCPD_DB")) : NULL;
    unsetenv("MCPD_DB");
    char *out = NULL, *err = NULL;
    const char *create[] = {MCPD_BIN, "token", "create", "--owner", "ana", NULL};
    assert_int_equal(proc_run(create, NULL, NULL, &out, &err, 30000), 1);
    expect_contains("token create without a database", err,
                    "no database at '" MCPD_DEFAULT_DB "' (the default)");
    assert_string_equal(out, "");
    assert_int_not_equal(access(MCPD_DEFAULT_DB, F_OK), 0);
    free(out);
    free(err);
    if (saved)
        setenv("MCPD_DB", saved, 1);
    free(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mcpd_db_names_the_database),
        cmocka_unit_test(test_default_database_is_never_created),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
