/* The bearer check: tokens of two owners on one thread, near-miss tokens,
 * revocation taking effect once the cached answer expires (fake clock),
 * unknown tokens remembered for a while, auth_forget() dropping what the
 * shared cache knows of a revoked token, an expired token refused at its
 * expiry's millisecond however it was cached, "last used" kept in memory
 * and written by auth_flush(), and the admin flag. */
#include "auth.h"
#include "clock.h"
#include "db.h"
#include "db_fixture.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct fx {
    struct db_fixture *d;
    struct db *db; /* d's */
    struct auth *auth;
    int64_t now;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    *state = f;
    if (!f || !(f->d = db_fixture_open("server-auth")))
        return -1;
    f->db = f->d->db;
    f->auth = auth_new(f->db);
    f->now = 1000000;
    clock_set_fake(&f->now);
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    clock_set_fake(NULL);
    auth_free(f->auth);
    db_fixture_close(f->d);
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
    assert_int_equal(auth_token_create(f->db, "alice", false, 0, alice, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "bob", false, 0, bob, &id), DB_OK);
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
    assert_int_equal(auth_token_create(f->db, "carol", false, 0, token, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "dave", false, 0, other, &other_id), DB_OK);
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

/* A token unknown to the database is remembered as unknown for
 * AUTH_NEGATIVE_TTL_MS: a client retrying a bad token costs no query. The
 * same token stored meanwhile is accepted once that answer expires. */
static void test_unknown_token_is_remembered_for_the_negative_ttl(void **state)
{
    struct fx *f = *state;
    static const char token[] =
        "mcp_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char owner[DB_OWNER_MAX];
    int64_t t0 = f->now;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    /* Stored directly, as `mcpd token create` in another process would. */
    char hash[AUTH_HASH_LEN];
    auth_hash(token, hash);
    int64_t id;
    assert_int_equal(db_token_insert(f->db, hash, "erin", false, clock_wall_ms(), 0, &id), DB_OK);
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    f->now = t0 + AUTH_NEGATIVE_TTL_MS - 1;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    f->now = t0 + AUTH_NEGATIVE_TTL_MS;
    assert_int_equal(check(f, token, owner), DB_OK);
    assert_string_equal(owner, "erin");
    /* and from then on it is known */
    f->now += 1;
    assert_int_equal(check(f, token, owner), DB_OK);
    assert_string_equal(owner, "erin");
}

struct other_thread {
    struct fx *f;
    const char *token;
    int rc;
    char owner[DB_OWNER_MAX];
};

static void *check_main(void *arg)
{
    struct other_thread *o = arg;
    o->rc = check(o->f, o->token, o->owner);
    return NULL;
}

/* Checks token on a new thread, whose per-thread memo is empty: the answer
 * comes from the shared cache or the database. */
static int check_on_new_thread(struct fx *f, const char *token)
{
    struct other_thread o = {.f = f, .token = token, .rc = -100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, check_main, &o), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    return o.rc;
}

/* auth_forget() (the revocation sweep calls it) drops the shared cache's
 * entry for a token: a thread that does not remember the token itself
 * refuses it at once, without waiting for the entry to expire; so does one
 * that remembered another token since. */
static void test_forget_drops_a_cached_token_at_once(void **state)
{
    struct fx *f = *state;
    char token[AUTH_TOKEN_LEN], other[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    int64_t id, other_id;
    assert_int_equal(auth_token_create(f->db, "frank", false, 0, token, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "gina", false, 0, other, &other_id), DB_OK);
    int64_t t0 = f->now;
    assert_int_equal(check(f, token, owner), DB_OK);
    assert_int_equal(db_token_revoke(f->db, id, clock_wall_ms()), DB_OK);
    /* Still cached: another thread is answered from the shared cache. */
    assert_int_equal(check_on_new_thread(f, token), DB_OK);
    char hash[AUTH_HASH_LEN];
    auth_hash(token, hash);
    auth_forget(f->auth, hash);
    /* Forgotten: refused at once, at the same instant. */
    assert_int_equal(check_on_new_thread(f, token), DB_NOT_FOUND);
    assert_int_equal(check_on_new_thread(f, token), DB_NOT_FOUND);
    /* This thread's memo goes once it accepts another token. */
    assert_int_equal(check(f, other, owner), DB_OK);
    assert_string_equal(owner, "gina");
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    /* And by the end of the cache's lifetime it is refused everywhere. */
    f->now = t0 + AUTH_CACHE_TTL_MS;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    assert_int_equal(check_on_new_thread(f, token), DB_NOT_FOUND);
    /* Forgetting a token that is not cached is harmless. */
    auth_forget(f->auth, hash);
    auth_forget(f->auth, "0000000000000000000000000000000000000000000000000000000000000000");
    assert_int_equal(check(f, other, owner), DB_OK);
}

/* The thread that accepted a token last remembers it in its own memo,
 * which the shared cache's entry does not reach: auth_forget() must make
 * that memo stale too, or a revoked token keeps working on that worker
 * until AUTH_CACHE_TTL_MS after its lookup. */
static void test_forget_reaches_the_thread_that_accepted_it_last(void **state)
{
    struct fx *f = *state;
    char token[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    int64_t id;
    assert_int_equal(auth_token_create(f->db, "hank", false, 0, token, &id), DB_OK);
    int64_t t0 = f->now;
    assert_int_equal(check(f, token, owner), DB_OK);
    assert_int_equal(check(f, token, owner), DB_OK); /* from the memo */
    assert_int_equal(db_token_revoke(f->db, id, clock_wall_ms()), DB_OK);
    char hash[AUTH_HASH_LEN];
    auth_hash(token, hash);
    auth_forget(f->auth, hash);
    f->now = t0 + 1;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    /* Another thread agrees, and the refusal lasts. */
    assert_int_equal(check_on_new_thread(f, token), DB_NOT_FOUND);
    f->now = t0 + AUTH_CACHE_TTL_MS + AUTH_NEGATIVE_TTL_MS;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
}

/* A token that expires sooner than the cache's lifetime is refused from
 * its expiry on, by this thread's memo, by the shared cache and by
 * another thread alike. */
static void test_expired_token_refused_at_its_expiry(void **state)
{
    struct fx *f = *state;
    char token[AUTH_TOKEN_LEN], other[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    int64_t id;
    int64_t expiry = f->now + AUTH_CACHE_TTL_MS / 2;
    assert_int_equal(auth_token_create(f->db, "ivy", false, expiry, token, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "jay", false, 0, other, &id), DB_OK);
    assert_int_equal(check(f, token, owner), DB_OK); /* cached and remembered */
    assert_string_equal(owner, "ivy");
    f->now = expiry - 1;
    assert_int_equal(check(f, token, owner), DB_OK);        /* the memo */
    assert_int_equal(check_on_new_thread(f, token), DB_OK); /* the shared cache */
    f->now = expiry;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    assert_int_equal(check_on_new_thread(f, token), DB_NOT_FOUND);
    /* A token of the same cache that does not expire goes on. */
    assert_int_equal(check(f, other, owner), DB_OK);
    f->now += AUTH_CACHE_TTL_MS * 3;
    assert_int_equal(check(f, token, owner), DB_NOT_FOUND);
    assert_int_equal(check(f, other, owner), DB_OK);
}

struct last_used {
    int64_t by_owner[2]; /* ivy's, jay's */
};

static void collect_used(void *ud, const struct db_token *t)
{
    struct last_used *l = ud;
    l->by_owner[strcmp(t->owner, "ivy") == 0 ? 0 : 1] = t->last_used_at;
}

static struct last_used last_used(struct fx *f)
{
    struct last_used l = {{-1, -1}};
    assert_int_equal(db_token_list(f->db, collect_used, &l), DB_OK);
    return l;
}

/* "Last used" is written only by auth_flush(), with the time of the
 * latest use noted: each thread notes a token it remembers at most once
 * every AUTH_USED_EVERY_MS. */
static void test_last_used_written_by_flush(void **state)
{
    struct fx *f = *state;
    char ivy[AUTH_TOKEN_LEN], jay[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    int64_t id;
    assert_int_equal(auth_token_create(f->db, "ivy", false, 0, ivy, &id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "jay", true, 0, jay, &id), DB_OK);
    assert_int_equal(auth_flush(f->auth), DB_OK); /* nothing used yet */
    assert_int_equal(last_used(f).by_owner[0], 0);
    int64_t t0 = f->now;
    assert_int_equal(check(f, ivy, owner), DB_OK);
    assert_int_equal(last_used(f).by_owner[0], 0); /* not before a flush */
    assert_int_equal(auth_flush(f->auth), DB_OK);
    assert_int_equal(last_used(f).by_owner[0], t0);
    assert_int_equal(last_used(f).by_owner[1], 0);
    /* Uses from the memo within AUTH_USED_EVERY_MS are not noted again... */
    f->now = t0 + AUTH_USED_EVERY_MS - 1;
    assert_int_equal(check(f, ivy, owner), DB_OK);
    assert_int_equal(auth_flush(f->auth), DB_OK);
    assert_int_equal(last_used(f).by_owner[0], t0);
    /* ...one after it is. */
    f->now = t0 + AUTH_USED_EVERY_MS;
    assert_int_equal(check(f, ivy, owner), DB_OK);
    /* Answered from the shared cache: noted at once. */
    f->now += 10;
    assert_int_equal(check_on_new_thread(f, jay), DB_OK);
    assert_int_equal(auth_flush(f->auth), DB_OK);
    assert_int_equal(last_used(f).by_owner[0], t0 + AUTH_USED_EVERY_MS);
    assert_int_equal(last_used(f).by_owner[1], t0 + AUTH_USED_EVERY_MS + 10);
}

static void test_admin_flag(void **state)
{
    struct fx *f = *state;
    char ivy[AUTH_TOKEN_LEN], jay[AUTH_TOKEN_LEN], owner[DB_OWNER_MAX];
    char ivy_hash[AUTH_HASH_LEN], jay_hash[AUTH_HASH_LEN];
    int64_t ivy_id, jay_id;
    assert_int_equal(auth_token_create(f->db, "ivy", false, 0, ivy, &ivy_id), DB_OK);
    assert_int_equal(auth_token_create(f->db, "jay", true, 0, jay, &jay_id), DB_OK);
    auth_hash(ivy, ivy_hash);
    auth_hash(jay, jay_hash);
    bool admin = true;
    /* Not cached yet: from the database. */
    assert_int_equal(auth_admin(f->auth, jay_hash, &admin), DB_OK);
    assert_true(admin);
    assert_int_equal(check(f, ivy, owner), DB_OK);
    assert_int_equal(check(f, jay, owner), DB_OK);
    assert_int_equal(auth_admin(f->auth, ivy_hash, &admin), DB_OK);
    assert_false(admin);
    assert_int_equal(auth_admin(f->auth, jay_hash, &admin), DB_OK);
    assert_true(admin);
    assert_int_equal(db_token_revoke(f->db, jay_id, clock_wall_ms()), DB_OK);
    auth_forget(f->auth, jay_hash);
    assert_int_equal(auth_admin(f->auth, jay_hash, &admin), DB_NOT_FOUND);
    assert_false(admin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_owners_and_near_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_takes_effect_when_the_cache_expires, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_token_is_remembered_for_the_negative_ttl,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_drops_a_cached_token_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_reaches_the_thread_that_accepted_it_last, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_token_refused_at_its_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_used_written_by_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_flag, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
