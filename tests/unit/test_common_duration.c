/* Duration and size parsing, table-driven. */
#include "duration.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        int64_t ms;
    } cases[] = {
        {"90s", 0, 90000},
        {"90", 0, 90000},
        {"250ms", 0, 250},
        {"5m", 0, 300000},
        {"4h", 0, 14400000},
        {"0", 0, 0},
        {"0ms", 0, 0},
        {"", -1, 0},
        {"s", -1, 0},
        {"-5s", -1, 0},
        {"1.5s", -1, 0},
        {"90d", 0, 90LL * 86400000},
        {"10w", -1, 0},
        {"10 s", -1, 0},
        {" 10s", -1, 0},
        {"10sx", -1, 0},
        {"abc", -1, 0},
        {"99999999999999999999s", -1, 0},
        {"9223372036854775807h", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = -7;
        int rc = duration_parse(cases[i].in, &ms);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0)
            assert_int_equal(ms, cases[i].ms);
    }
    int64_t ms;
    assert_int_equal(duration_parse(NULL, &ms), -1);
}

static void test_sizes(void **state)
{
    (void)state;
    int64_t b;
    assert_int_equal(size_parse("1M", &b), 0);
    assert_int_equal(b, 1 << 20);
    assert_int_equal(size_parse("64K", &b), 0);
    assert_int_equal(b, 64 << 10);
    assert_int_equal(size_parse("2048", &b), 0);
    assert_int_equal(b, 2048);
    assert_int_equal(size_parse("1MiB", &b), 0);
    assert_int_equal(b, 1 << 20);
    assert_int_equal(size_parse("1T", &b), -1);
    assert_int_equal(size_parse("-1", &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_durations),
                                       cmocka_unit_test(test_sizes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
