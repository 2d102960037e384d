/* Unit tests for cli/timefmt.c: reading mcpd's timestamps, showing ages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "timefmt.h"

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
        int rc = timefmt_parse_rfc3339(parse_cases[i].in, &ms);
        if (parse_cases[i].ok) {
            if (rc != 0 || ms != parse_cases[i].ms)
                fail_msg("'%s': rc %d ms %lld, want %lld", parse_cases[i].in, rc, (long long)ms,
                         (long long)parse_cases[i].ms);
        } else if (rc != -1) {
            fail_msg("'%s' should not parse", parse_cases[i].in);
        }
    }
    int64_t ms;
    assert_int_equal(timefmt_parse_rfc3339(NULL, &ms), -1);
}

static const struct {
    int64_t age_ms;
    const char *want;
} age_cases[] = {
    {0, "0s"},           {999, "0s"},
    {12 * 1000, "12s"},  {59999, "59s"},
    {60 * 1000, "1m"},   {5 * 60000 + 59999, "5m"},
    {3600 * 1000, "1h"}, {3 * 3600000 + 1, "3h"},
    {86400000, "1d"},    {2 * 86400000LL + 5, "2d"},
    {-5000, "0s"}, /* clock skew */
};

static void test_age_table(void **state)
{
    (void)state;
    int64_t created;
    assert_int_equal(timefmt_parse_rfc3339("2026-01-02T03:04:05.678Z", &created), 0);
    for (size_t i = 0; i < sizeof age_cases / sizeof age_cases[0]; i++) {
        char out[TIMEFMT_AGE_MAX];
        timefmt_age("2026-01-02T03:04:05.678Z", created + age_cases[i].age_ms, out, sizeof out);
        if (strcmp(out, age_cases[i].want) != 0)
            fail_msg("age %lld ms: got '%s', want '%s'", (long long)age_cases[i].age_ms, out,
                     age_cases[i].want);
    }
}

static void test_age_unknown(void **state)
{
    (void)state;
    char out[TIMEFMT_AGE_MAX];
    timefmt_age(NULL, 0, out, sizeof out);
    assert_string_equal(out, "-");
    timefmt_age("", 0, out, sizeof out);
    assert_string_equal(out, "-");
    timefmt_age("garbage", 0, out, sizeof out);
    assert_string_equal(out, "-");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_age_table),
        cmocka_unit_test(test_age_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
