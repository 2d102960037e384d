/* Unit tests for common/clock.c: reading RFC 3339 times, UTC days. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "clock.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *in;
    int ok;
    int64_t ms;
} parse_cases[] = {
    {"1970-01-01T00:00:00Z", 1, 0},
    {"1970-01-01T00:00:00.000Z", 1, 0},
    {"2026-01-02T03:04:05.678Z", 1, 1767323045678LL},
    {"2026-01-02t03:04:05.678z", 1, 1767323045678LL},
    {"2026-01-02 03:04:05.678Z", 1, 1767323045678LL},
    {"2026-01-02T03:04:05.6Z", 1, 1767323045600LL},
    {"2026-01-02T03:04:05.678901Z", 1, 1767323045678LL},
    {"2026-01-02T03:04:05Z", 1, 1767323045000LL},
    {"2026-01-02T05:04:05.678+02:00", 1, 1767323045678LL},
    {"2026-01-01T22:04:05.678-05:00", 1, 1767323045678LL},
    {"2024-02-29T00:00:00Z", 1, 1709164800000LL},
    {"", 0, 0},
    {"2026-01-02", 0, 0},
    {"2026-01-02T03:04:05", 0, 0},      /* no zone */
    {"2026-01-02T03:04:05.Z", 0, 0},    /* empty fraction */
    {"2026-13-02T03:04:05Z", 0, 0},     /* month 13 */
    {"2026-01-02T24:04:05Z", 0, 0},     /* hour 24 */
    {"2026-01-02T03:04:05Zjunk", 0, 0}, /* trailing bytes */
    {"26-01-02T03:04:05Z", 0, 0},
    {"2026-01-02T03:04:05+0200", 0, 0},
    {"yesterday", 0, 0},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        int64_t ms = -1;
        int rc = clock_parse_rfc3339(parse_cases[i].in, &ms);
        if (parse_cases[i].ok) {
            if (rc != 0 || ms != parse_cases[i].ms)
                fail_msg("'%s': rc %d ms %lld, want %lld", parse_cases[i].in, rc, (long long)ms,
                         (long long)parse_cases[i].ms);
        } else if (rc != -1) {
            fail_msg("'%s' should not parse", parse_cases[i].in);
        }
    }
    int64_t ms;
    assert_int_equal(clock_parse_rfc3339(NULL, &ms), -1);
}

static void test_format_day(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *day;
    } cases[] = {
        {0, "1970-01-01"},
        {86400000LL - 1, "1970-01-01"},
        {86400000LL, "1970-01-02"},
        {1767323045678LL, "2026-01-02"},
        {1709164800000LL, "2024-02-29"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char day[CLOCK_DAY_LEN];
        clock_format_day(cases[i].ms, day);
        assert_string_equal(day, cases[i].day);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_format_day),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
