/* Token rows: expiry at the exact millisecond, revocation, the admin flag,
 * "last used" written in batches and never moved back, the sweep's view
 * of tokens that ended, and migration 0003 making the tokens of the owner
 * "admin" admin tokens. */
#include "db.h"
#include "db_fixture.h"
#include "migrations.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define H3 "3333333333333333333333333333333333333333333333333333333333333333"

static int setup(void **state)
{
    *state = db_fixture_open("db-token");
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    db_fixture_close(*state);
    return 0;
}

#define MAX_TOKENS 8

struct listing {
    size_t n;
    struct db_token t[MAX_TOKENS];
};

static void collect(void *ud, const struct db_token *t)
{
    struct listing *l = ud;
    if (l->n < MAX_TOKENS)
        l->t[l->n++] = *t;
}

static struct listing list(struct db_fixture *f)
{
    struct listing l = {0};
    assert_int_equal(db_token_list(f->db, collect, &l), DB_OK);
    return l;
}

static void test_expiry_and_revocation(void **state)
{
    struct db_fixture *f = *state;
    int64_t id1, id2;
    assert_int_equal(db_token_insert(f->db, H1, "alice", false, 100, 5000, &id1), DB_OK);
    assert_int_equal(db_token_insert(f->db, H2, "root", true, 100, 0, &id2), DB_OK);
    struct db_token t;
    assert_int_equal(db_token_lookup(f->db, H1, 4999, &t), DB_OK);
    assert_string_equal(t.owner, "alice");
    assert_false(t.admin);
    assert_int_equal(t.expires_at, 5000);
    /* Expired from its expiry's millisecond on. */
    assert_int_equal(db_token_lookup(f->db, H1, 5000, &t), DB_NOT_FOUND);
    assert_int_equal(db_token_lookup(f->db, H1, 9999999, &t), DB_NOT_FOUND);
    /* A token without expiry never expires; the admin flag is kept. */
    assert_int_equal(db_token_lookup(f->db, H2, INT64_MAX, &t), DB_OK);
    assert_true(t.admin);
    assert_int_equal(t.expires_at, 0);
    assert_int_equal(db_token_revoke(f->db, id2, 200), DB_OK);
    assert_int_equal(db_token_lookup(f->db, H2, 201, &t), DB_NOT_FOUND);
    assert_int_equal(db_token_lookup(f->db, H3, 201, &t), DB_NOT_FOUND);

    struct listing l = list(f);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.t[0].id, id1);
    assert_int_equal(l.t[0].created_at, 100);
    assert_int_equal(l.t[0].expires_at, 5000);
    assert_int_equal(l.t[0].revoked_at, 0);
    assert_false(l.t[0].admin);
    assert_int_equal(l.t[1].revoked_at, 200);
    assert_true(l.t[1].admin);
}

static void test_last_used_in_batches(void **state)
{
    struct db_fixture *f = *state;
    int64_t id;
    assert_int_equal(db_token_insert(f->db, H1, "alice", false, 100, 0, &id), DB_OK);
    assert_int_equal(db_token_insert(f->db, H2, "bob", false, 100, 0, &id), DB_OK);
    assert_int_equal(list(f).t[0].last_used_at, 0);
    struct db_token_use uses[] = {{H1, 500}, {H2, 700}, {H3, 900}}; /* H3: no such token */
    assert_int_equal(db_token_touch(f->db, uses, 3), DB_OK);
    struct listing l = list(f);
    assert_int_equal(l.t[0].last_used_at, 500);
    assert_int_equal(l.t[1].last_used_at, 700);
    /* An older time (a flush that lost a race) never moves it back. */
    struct db_token_use older[] = {{H1, 400}, {H2, 800}};
    assert_int_equal(db_token_touch(f->db, older, 2), DB_OK);
    l = list(f);
    assert_int_equal(l.t[0].last_used_at, 500);
    assert_int_equal(l.t[1].last_used_at, 800);
    assert_int_equal(db_token_touch(f->db, NULL, 0), DB_OK);
    struct db_token t;
    assert_int_equal(db_token_lookup(f->db, H2, 900, &t), DB_OK);
    assert_int_equal(t.last_used_at, 800);
}

struct hashes {
    int n;
    char seen[4][65];
};

static void on_hash(void *ud, const char *hash)
{
    struct hashes *h = ud;
    if (h->n < 4)
        snprintf(h->seen[h->n++], sizeof h->seen[0], "%s", hash);
}

static struct hashes ended(struct db_fixture *f, int64_t since, int64_t now)
{
    struct hashes h = {0};
    assert_int_equal(db_token_ended_since(f->db, since, now, on_hash, &h), DB_OK);
    return h;
}

/* The sweep finds tokens revoked since, and tokens that expired between
 * since and now; a token that will expire later is not found yet. */
static void test_ended_since(void **state)
{
    struct db_fixture *f = *state;
    int64_t id1, id2, id3;
    assert_int_equal(db_token_insert(f->db, H1, "a", false, 0, 0, &id1), DB_OK);
    assert_int_equal(db_token_insert(f->db, H2, "b", false, 0, 2000, &id2), DB_OK);
    assert_int_equal(db_token_insert(f->db, H3, "c", false, 0, 0, &id3), DB_OK);
    assert_int_equal(db_token_revoke(f->db, id1, 1000), DB_OK);
    struct hashes h = ended(f, 500, 1500);
    assert_int_equal(h.n, 1);
    assert_string_equal(h.seen[0], H1);
    h = ended(f, 1500, 1999);
    assert_int_equal(h.n, 0);
    h = ended(f, 1500, 2000);
    assert_int_equal(h.n, 1);
    assert_string_equal(h.seen[0], H2);
    h = ended(f, 2001, 9000); /* both ended before since */
    assert_int_equal(h.n, 0);
}

/* A database of schema 2 whose tokens predate the admin flag: the owner
 * "admin"'s become admin tokens, the others do not. */
static void test_migration_makes_admin_tokens(void **state)
{
    (void)state;
    char *dir = tmpdir_create("db-token-mig");
    char *path = tmpdir_path(dir, "old.db");
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    for (int i = 0; i < db_migrations_count && db_migrations[i].version <= 2; i++)
        assert_int_equal(sqlite3_exec(raw, db_migrations[i].sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw,
                                  "PRAGMA user_version = 2;"
                                  "INSERT INTO ApiToken (hash, owner, created_at) VALUES "
                                  "('" H1 "', 'admin', 1), ('" H2 "', 'bob', 2);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);
    struct db *db;
    char err[256];
    assert_int_equal(db_open(path, &db, err, sizeof err), DB_OK);
    struct db_token t;
    assert_int_equal(db_token_lookup(db, H1, 100, &t), DB_OK);
    assert_true(t.admin);
    assert_int_equal(t.expires_at, 0);
    assert_int_equal(t.last_used_at, 0);
    assert_int_equal(db_token_lookup(db, H2, 100, &t), DB_OK);
    assert_false(t.admin);
    db_close(db);
    free(path);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expiry_and_revocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_used_in_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ended_since, setup, teardown),
        cmocka_unit_test(test_migration_makes_admin_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
