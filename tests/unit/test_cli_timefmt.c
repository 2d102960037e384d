/* Unit tests for cli/timefmt.c: showing mcpd's timestamps as ages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"
#include "timefmt.h"

#include <stdio.h>
#include <string.h>

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
    assert_int_equal(clock_parse_rfc3339("2026-01-02T03:04:05.678Z", &created), 0);
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
        cmocka_unit_test(test_age_table),
        cmocka_unit_test(test_age_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
