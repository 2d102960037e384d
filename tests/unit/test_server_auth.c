/* The bearer check: tokens of two owners on one thread, near-miss tokens,
 * and revocation taking effect once the cached answer expires (fake clock). */
#include "auth.h"
#include "clock.h"
#include "db.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct fx {
    char *dir;
    char *path;
    struct db *db;
    struct auth *auth;
    int64_t now;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->dir = tmpdir_create("server-auth");
    f->path = tmpdir_path(f->dir, "t.db");
    char err[256];
    if (db_open(f->path, &f->db, err, sizeof err) != DB_OK)
        return -1;
    f->auth = auth_new(f->db);
    f->now = 1000000;
    clock_set_fake(&f->now);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    clock_set_fake(NULL);
    auth_free(f->auth);
    db_close(f->db);
    free(f->path);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static int check(struct fx *f, const char *token, char owner[DB_OWNER_MAX])
{
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", token);
    return auth_check(f->auth, header, owner, NULL);
}

static void test_owners_and_near_misses(void **state)
{
    struct fx *f = *state;
    char alice[AUTH_TOKEN_LEN], bob[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    int64_t id;
    assert_int_equal(auth_token_create(f->db, "alice", alice, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "bob", bob, &id), DB_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(check(f, alice, owner), DB_OK);
        assert_string_equal(owner, "alice");
        assert_int_equal(check(f, bob, owner), DB_OK);
        assert_string_equal(owner, "bob");
    }
    /* Same length, one digit off: right after alice's token was accepted. */
    assert_int_equal(check(f, alice, owner), DB_OK);
    char wrong[AUTH_TOKEN_LEN];
    memcpy(wrong, alice, sizeof wrong);
    wrong[AUTH_TOKEN_LEN - 2] = wrong[AUTH_TOKEN_LEN - 2] == 'a' ? 'b' : 'a';
    assert_int_equal(check(f, wrong, owner), DB_NOT_FOUND);
    /* A prefix of it. */
    wrong[20] = '\0';
    memcpy(wrong, alice, 20);
    assert_int_equal(check(f, alice, owner), DB_OK);
    assert_int_equal(check(f, wrong, owner), DB_NOT_FOUND);
    assert_int_equal(auth_check(f->auth, "Basic abc", owner, NULL), DB_NOT_FOUND);
    assert_int_equal(auth_check(f->auth, NULL, owner, NULL), DB_NOT_FOUND);
}

static void test_revocation_takes_effect_when_the_cache_expires(void **state)
{
    struct fx *f = *state;
    char token[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    int64_t id;
    char other[AUTH_TOKEN_LEN];
    int64_t other_id;
    assert_int_equal(auth_token_create(f->db, "carol", token, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "dave", other, &other_id), DB_OK);
    int64_t t0 = f->now;
    assert_int_equal(check(f, token, owner), DB_OK);
    /* Another token in between, so the next check is answered from the
     * shared cache rather than from what this thread remembers. */
    f->now = t0 + 10;
    assert_int_equal(check(f, other, owner), DB_OK);
    assert_int_equal(check(f, token, owner), DB_OK);
    assert_int_equal(db_token_revoke(f->db, id, clock_wall_ms()), DB_OK);
    /* Cached: still accepted until the entry made at t0 expires... */
    f->now = t0 + AUTH_CACHE_TTL_MS - 1;
    assert_int_equal(check(f, token, owner), DB_OK);
    /* ...and refused from then on. */
    f->now = t0 + AUTH_CACHE_TTL_MS;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    f->now += 1;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_owners_and_near_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_takes_effect_when_the_cache_expires, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
