/* Usage rows: batches add to the stored counts (a new row starts at 0),
 * the listing is ordered by day, owner and Llm, and each filter (days
 * inclusive, owner, Llm) narrows it. */
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
    *state = db_fixture_open("db-usage");
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    db_fixture_close(*state);
    return 0;
}

static const char *listing(struct db_fixture *f, const char *since, const char *until,
                           const char *owner, const char *llm)
{
    struct db_usage_filter flt = {.since = since, .until = until, .owner = owner, .llm = llm};
    return db_fixture_usage_text(f->db, &flt);
}

static void test_batches_add_up(void **state)
{
    struct db_fixture *f = *state;
    const struct db_usage first[] = {
        {"2026-12-07", "alice", "m1", 2, 1, 30, 12},
        {"2026-12-07", "bob", "m1", 1, 0, 5, 5},
    };
    assert_int_equal(db_usage_add(f->db, first, 2), DB_OK);
    const struct db_usage second[] = {
        {"2026-12-07", "alice", "m1", 3, 0, 10, 8},
        {"2026-12-08", "alice", "m1", 1, 1, 0, 0},
    };
    assert_int_equal(db_usage_add(f->db, second, 2), DB_OK);
    assert_int_equal(db_usage_add(f->db, NULL, 0), DB_OK);
    assert_string_equal(listing(f, NULL, NULL, NULL, NULL), "2026-12-07 alice m1 5 1 40 20\n"
                                                            "2026-12-07 bob m1 1 0 5 5\n"
                                                            "2026-12-08 alice m1 1 1 0 0\n");
}

static void test_filters(void **state)
{
    struct db_fixture *f = *state;
    const struct db_usage rows[] = {
        {"2026-12-09", "bob", "m2", 1, 0, 1, 1},   {"2026-12-07", "alice", "m1", 1, 0, 2, 2},
        {"2026-12-08", "alice", "m2", 1, 0, 3, 3}, {"2026-12-08", "alice", "m1", 1, 0, 4, 4},
        {"2026-12-08", "bob", "m1", 1, 0, 5, 5},
    };
    assert_int_equal(db_usage_add(f->db, rows, 5), DB_OK);
    assert_string_equal(listing(f, NULL, NULL, NULL, NULL), "2026-12-07 alice m1 1 0 2 2\n"
                                                            "2026-12-08 alice m1 1 0 4 4\n"
                                                            "2026-12-08 alice m2 1 0 3 3\n"
                                                            "2026-12-08 bob m1 1 0 5 5\n"
                                                            "2026-12-09 bob m2 1 0 1 1\n");
    /* days are inclusive at both ends */
    assert_string_equal(listing(f, "2026-12-08", "2026-12-08", NULL, NULL),
                        "2026-12-08 alice m1 1 0 4 4\n"
                        "2026-12-08 alice m2 1 0 3 3\n"
                        "2026-12-08 bob m1 1 0 5 5\n");
    assert_string_equal(listing(f, "2026-12-09", NULL, NULL, NULL), "2026-12-09 bob m2 1 0 1 1\n");
    assert_string_equal(listing(f, NULL, "2026-12-07", NULL, NULL),
                        "2026-12-07 alice m1 1 0 2 2\n");
    assert_string_equal(listing(f, NULL, NULL, "bob", NULL), "2026-12-08 bob m1 1 0 5 5\n"
                                                             "2026-12-09 bob m2 1 0 1 1\n");
    assert_string_equal(listing(f, NULL, NULL, NULL, "m2"), "2026-12-08 alice m2 1 0 3 3\n"
                                                            "2026-12-09 bob m2 1 0 1 1\n");
    assert_string_equal(listing(f, "2026-12-08", NULL, "alice", "m1"),
                        "2026-12-08 alice m1 1 0 4 4\n");
    assert_string_equal(listing(f, "2027-01-01", NULL, NULL, NULL), "");
    assert_string_equal(listing(f, NULL, NULL, "carol", NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batches_add_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
