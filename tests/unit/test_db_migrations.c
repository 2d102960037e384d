/* Migrations: empty database → current schema; twice is a no-op; a newer
 * database is refused with a clear message. */
#include "db.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static void test_empty_to_current_and_twice(void **state)
{
    (void)state;
    char *dir = tmpdir_create("db-mig");
    char *path = tmpdir_path(dir, "m.db");
    struct db *db;
    char err[512];
    assert_int_equal(db_open(path, &db, err, sizeof err), DB_OK);
    assert_true(db_latest_version() >= 1);
    assert_int_equal(db_schema_version(db), db_latest_version());
    db_close(db);
    assert_int_equal(db_open(path, &db, err, sizeof err), DB_OK);
    assert_int_equal(db_schema_version(db), db_latest_version());
    db_close(db);

    /* the tables and indexes of the contract exist */
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    const char *names[] = {"Llm", "ApiToken", "ProviderSession", "llm_kind_status",
                           "llm_provider_session"};
    for (size_t i = 0; i < 5; i++) {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(raw, "SELECT count(*) FROM sqlite_master WHERE name = ?", -1, &st, NULL);
        sqlite3_bind_text(st, 1, names[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 1);
        sqlite3_finalize(st);
    }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(raw);
    free(path);
    tmpdir_remove(dir);
}

static void test_newer_database_refused(void **state)
{
    (void)state;
    char *dir = tmpdir_create("db-mig");
    char *path = tmpdir_path(dir, "m.db");
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", db_latest_version() + 1);
    assert_int_equal(sqlite3_exec(raw, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    struct db *db = NULL;
    char err[512] = "";
    assert_int_equal(db_open(path, &db, err, sizeof err), DB_TOO_NEW);
    assert_null(db);
    assert_non_null(strstr(err, "newer mcpd"));
    free(path);
    tmpdir_remove(dir);
}

static void test_new_database_is_private(void **state)
{
    (void)state;
    char *dir = tmpdir_create("db-perm");
    char *path = tmpdir_path(dir, "p.db");
    struct db *db = NULL;
    char err[512] = "";
    assert_int_equal(db_open(path, &db, err, sizeof err), DB_OK);
    int64_t id;
    assert_int_equal(db_token_insert(db, "h", "alice", false, 1, 0, &id), DB_OK);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    db_close(db);
    free(path);
    tmpdir_remove(dir);
}

static void test_unopenable_path(void **state)
{
    (void)state;
    struct db *db = NULL;
    char err[512] = "";
    assert_int_equal(db_open("/nonexistent-dir/x/m.db", &db, err, sizeof err), DB_ERROR);
    assert_non_null(strstr(err, "cannot open database '/nonexistent-dir/x/m.db'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_empty_to_current_and_twice),
                                       cmocka_unit_test(test_new_database_is_private),
                                       cmocka_unit_test(test_newer_database_refused),
                                       cmocka_unit_test(test_unopenable_path)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
