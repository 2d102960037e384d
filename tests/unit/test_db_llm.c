/* The register upsert rules, heartbeat revival, stream-close deactivation
 * and GC decisions at their boundaries, with time passed in; pool names
 * and pool routing reads. */
#include "db.h"
#include "db_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static int setup(void **state)
{
    *state = db_fixture_open("db-llm");
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    db_fixture_close(*state);
    return 0;
}

static struct provider_input P(const char *name) {
    return (struct provider_input){
        .name = name, .type = "openai", .model = "m", .initial_status = "active"};
}

static int
reg(struct db_fixture *f, const char *owner, const char *sid_in, struct provider_input *in,
    size_t n, int64_t now, char sid[DB_SESSION_ID_LEN], char *conflict)
{
    return db_register(f->db, owner, sid_in, in, n, now, sid, conflict, 128);
}

static char *status_of(struct db_fixture *f, const char *name)
{
    static char buf[32];
    struct llm_row row;
    if (db_llm_get(f->db, name, &row) != DB_OK)
        return NULL;
    snprintf(buf, sizeof buf, "%s", row.status);
    llm_row_release(&row);
    return buf;
}

static void test_rule1_insert_and_rule2_update(void **state)
{
    struct db_fixture *f = *state;
    char sid[DB_SESSION_ID_LEN], c[128];
    struct provider_input p = P("a");
    p.initial_status = "hibernating";
    assert_int_equal(reg(f, "alice", NULL, &p, 1, 1000, sid, c), DB_OK);
    struct llm_row row;
    assert_int_equal(db_llm_get(f->db, "a", &row), DB_OK);
    assert_string_equal(row.kind, "virtual");
    assert_string_equal(row.status, "hibernating");
    assert_string_equal(row.owner, "alice");
    assert_string_equal(row.provider_session_id, sid);
    assert_int_equal(row.created_at, 1000);
    assert_int_equal(row.last_heartbeat_at, 1000);
    char *id = strdup(row.id);
    llm_row_release(&row);

    /* rule 2: same session updates fields and status */
    char sid2[DB_SESSION_ID_LEN];
    p.model = "m2";
    p.initial_status = "active";
    assert_int_equal(reg(f, "alice", sid, &p, 1, 2000, sid2, c), DB_OK);
    assert_string_equal(sid, sid2);
    assert_int_equal(db_llm_get(f->db, "a", &row), DB_OK);
    assert_string_equal(row.model, "m2");
    assert_string_equal(row.status, "active");
    assert_string_equal(row.id, id);
    assert_int_equal(row.created_at, 1000);
    assert_int_equal(row.updated_at, 2000);
    llm_row_release(&row);
    free(id);
}

static void test_rule3_adopt_and_rule4_refusals(void **state)
{
    struct db_fixture *f = *state;
    char s1[DB_SESSION_ID_LEN], s2[DB_SESSION_ID_LEN], s3[DB_SESSION_ID_LEN], c[128] = "";
    struct provider_input p = P("x");
    assert_int_equal(reg(f, "alice", NULL, &p, 1, 1000, s1, c), DB_OK);
    /* another live session of the same owner: refused */
    assert_int_equal(reg(f, "alice", NULL, &p, 1, 1100, s2, c), DB_CONFLICT);
    assert_string_equal(c, "x");
    /* another owner: refused */
    assert_int_equal(reg(f, "bob", NULL, &p, 1, 1100, s2, c), DB_CONFLICT);
    /* inactive → the same owner's new session adopts it */
    int changed = 0;
    assert_int_equal(db_session_deactivate(f->db, s1, 1200, &changed), DB_OK);
    assert_int_equal(changed, 1);
    assert_int_equal(reg(f, "bob", NULL, &p, 1, 1300, s2, c), DB_CONFLICT); /* still bob's no */
    assert_int_equal(reg(f, "alice", NULL, &p, 1, 1300, s3, c), DB_OK);
    assert_string_not_equal(s1, s3);
    struct llm_row row;
    assert_int_equal(db_llm_get(f->db, "x", &row), DB_OK);
    assert_string_equal(row.provider_session_id, s3);
    assert_string_equal(row.status, "active");
    assert_int_equal(row.inactive_since, 0);
    llm_row_release(&row);
    /* a foreign session id → not found */
    assert_int_equal(reg(f, "bob", s3, &p, 1, 1400, s2, c), DB_NOT_FOUND);
}

static void test_all_or_nothing(void **state)
{
    struct db_fixture *f = *state;
    char s1[DB_SESSION_ID_LEN], s2[DB_SESSION_ID_LEN], c[128];
    struct provider_input held = P("held");
    assert_int_equal(reg(f, "alice", NULL, &held, 1, 1000, s1, c), DB_OK);
    struct provider_input two[] = {P("new1"), P("held")};
    assert_int_equal(reg(f, "bob", NULL, two, 2, 1100, s2, c), DB_CONFLICT);
    assert_null(status_of(f, "new1"));
    struct llm_row *rows;
    size_t n;
    assert_int_equal(db_llm_list(f->db, NULL, &rows, &n), DB_OK);
    assert_int_equal(n, 1);
    llm_rows_free(rows, n);
}

static void test_heartbeat_revives_not_hibernating(void **state)
{
    struct db_fixture *f = *state;
    char s[DB_SESSION_ID_LEN], c[128];
    struct provider_input in[] = {P("h1"), P("h2")};
    in[1].initial_status = "hibernating";
    assert_int_equal(reg(f, "alice", NULL, in, 2, 1000, s, c), DB_OK);
    int changed = 0, revived = -1;
    assert_int_equal(db_session_deactivate(f->db, s, 2000, &changed), DB_OK);
    assert_int_equal(changed, 2);
    assert_int_equal(db_heartbeat(f->db, s, "bob", 3000, true, &revived), DB_NOT_FOUND);
    assert_int_equal(db_heartbeat(f->db, "nope", "alice", 3000, true, &revived), DB_NOT_FOUND);
    assert_int_equal(db_heartbeat(f->db, s, "alice", 3000, true, &revived), DB_OK);
    assert_int_equal(revived, 2);
    assert_string_equal(status_of(f, "h1"), "active");
    /* a heartbeat never changes hibernating */
    assert_int_equal(db_llm_set_status(f->db, "h2", "hibernating", 3500), DB_OK);
    assert_int_equal(db_heartbeat(f->db, s, "alice", 4000, true, &revived), DB_OK);
    assert_int_equal(revived, 0);
    assert_string_equal(status_of(f, "h2"), "hibernating");
    struct llm_row row;
    db_llm_get(f->db, "h2", &row);
    assert_int_equal(row.last_heartbeat_at, 4000);
    llm_row_release(&row);
}

static void test_gc_boundaries(void **state)
{
    struct db_fixture *f = *state;
    char s[DB_SESSION_ID_LEN], c[128];
    struct provider_input in[] = {P("g1"), P("g2")};
    in[1].initial_status = "hibernating";
    assert_int_equal(reg(f, "alice", NULL, in, 2, 10000, s, c), DB_OK);
    int inact = -1, del = -1;
    const int64_t timeout = 90000, retention = 4 * 3600 * 1000LL;
    /* exactly at the timeout: not older than it yet */
    assert_int_equal(
        db_gc(f->db, 10000 + timeout, timeout, retention, 100, NULL, NULL, &inact, &del), DB_OK);
    assert_int_equal(inact, 0);
    assert_int_equal(del, 0);
    /* one ms later: both (active and hibernating) go inactive */
    assert_int_equal(
        db_gc(f->db, 10001 + timeout, timeout, retention, 100, NULL, NULL, &inact, &del), DB_OK);
    assert_int_equal(inact, 2);
    assert_string_equal(status_of(f, "g2"), "inactive");
    /* idempotent */
    assert_int_equal(
        db_gc(f->db, 10002 + timeout, timeout, retention, 100, NULL, NULL, &inact, &del), DB_OK);
    assert_int_equal(inact, 0);
    int64_t since = 10001 + timeout;
    assert_int_equal(
        db_gc(f->db, since + retention, timeout, retention, 100, NULL, NULL, &inact, &del), DB_OK);
    assert_int_equal(del, 0);
    /* bounded work per tick */
    assert_int_equal(
        db_gc(f->db, since + retention + 1, timeout, retention, 1, NULL, NULL, &inact, &del),
        DB_OK);
    assert_int_equal(del, 1);
    assert_int_equal(
        db_gc(f->db, since + retention + 1, timeout, retention, 1, NULL, NULL, &inact, &del),
        DB_OK);
    assert_int_equal(del, 1);
    assert_null(status_of(f, "g1"));
    assert_null(status_of(f, "g2"));
    /* the empty session is gone too: its id now mints a fresh one */
    char s2[DB_SESSION_ID_LEN];
    struct provider_input p = P("g3");
    assert_int_equal(
        db_gc(f->db, since + 2 * retention, timeout, retention, 100, NULL, NULL, &inact, &del),
        DB_OK);
    assert_int_equal(reg(f, "bob", s, &p, 1, since + 2 * retention, s2, c), DB_OK);
    assert_string_not_equal(s, s2);
}

/* Pool names: a pool may not be named like a row outside it, in either
 * order of registration or within one call; a member may carry its pool's
 * name. Routing resolves a pool's name and lists its members. */
static void test_pools(void **state)
{
    struct db_fixture *f = *state;
    char sid[DB_SESSION_ID_LEN], sid2[DB_SESSION_ID_LEN], c[128];
    struct provider_input m[3] = {P("qwen-a"), P("qwen-b"), P("qwen")};
    for (int i = 0; i < 3; i++)
        m[i].pool_name = "qwen";
    m[1].initial_status = "hibernating";
    assert_int_equal(reg(f, "alice", NULL, m, 3, 1000, sid, c), DB_OK);

    struct llm_route rt;
    assert_int_equal(db_llm_route(f->db, "qwen-a", &rt), DB_OK);
    assert_string_equal(rt.pool, "qwen");
    assert_string_equal(rt.session, sid);
    assert_int_equal(db_llm_route(f->db, "qwen", &rt), DB_OK); /* the member named like it */
    assert_string_equal(rt.pool, "qwen");

    /* another owner joins the pool */
    struct provider_input bob = P("qwen-bob");
    bob.pool_name = "qwen";
    assert_int_equal(reg(f, "bob", NULL, &bob, 1, 1000, sid2, c), DB_OK);
    struct pool_member *pm = NULL;
    size_t n = 0;
    assert_int_equal(db_pool_members(f->db, "qwen", &pm, &n), DB_OK);
    assert_int_equal(n, 4);
    static const char *const names[] = {"qwen", "qwen-a", "qwen-b", "qwen-bob"};
    for (size_t i = 0; i < n; i++)
        assert_string_equal(pm[i].name, names[i]);
    assert_string_equal(pm[2].route.status, "hibernating");
    assert_string_equal(pm[3].route.session, sid2);
    free(pm);
    struct llm_row *rows = NULL;
    assert_int_equal(db_llm_list_pool(f->db, "qwen", &rows, &n), DB_OK);
    assert_int_equal(n, 4);
    llm_rows_free(rows, n);
    assert_int_equal(db_pool_members(f->db, "nope", &pm, &n), DB_OK);
    assert_int_equal(n, 0);
    free(pm);

    /* a pool that has only a name, no row of that name */
    struct provider_input l = P("llama-1");
    l.pool_name = "llama";
    assert_int_equal(reg(f, "alice", sid, &l, 1, 1000, sid, c), DB_OK);
    assert_int_equal(db_llm_route(f->db, "llama", &rt), DB_OK);
    assert_string_equal(rt.pool, "llama");
    assert_string_equal(rt.session, "");
    assert_int_equal(db_llm_route(f->db, "llama-2", &rt), DB_NOT_FOUND);

    static const struct {
        const char *name, *pool, *conflict;
    } refused[] = {
        {"llama", NULL, "llama"},    /* a lone row named like a pool */
        {"llama", "other", "llama"}, /* ... or a row of another pool */
        {"x", "qwen-a", "qwen-a"},   /* a pool named like a row of another pool */
        {"llama-9", "solo", "solo"}, /* (registered below) a lone row */
    };
    struct provider_input solo = P("solo");
    assert_int_equal(reg(f, "alice", sid, &solo, 1, 1000, sid, c), DB_OK);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        struct provider_input p = P(refused[i].name);
        p.pool_name = refused[i].pool;
        c[0] = '\0';
        assert_int_equal(reg(f, "alice", sid, &p, 1, 2000, sid, c), DB_POOL_CONFLICT);
        assert_string_equal(c, refused[i].conflict);
        assert_null(status_of(f, refused[i].name)); /* nothing was written */
    }
    /* within one call: a pool and a row outside it of the same name */
    struct provider_input two[2] = {P("mix-1"), P("mix")};
    two[0].pool_name = "mix";
    assert_int_equal(reg(f, "alice", sid, two, 2, 2000, sid, c), DB_POOL_CONFLICT);
    assert_string_equal(c, "mix");
    assert_null(status_of(f, "mix-1")); /* nothing was written */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rule1_insert_and_rule2_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rule3_adopt_and_rule4_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_revives_not_hibernating, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_boundaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pools, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
