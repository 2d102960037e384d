/* Random and sequence ids: shape and uniqueness. */
#include "ids.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static int cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_sequence_ids_unique_hex(void **state)
{
    (void)state;
    enum { N = 20000 };
    char(*ids)[33] = malloc(sizeof *ids * N);
    for (int i = 0; i < N; i++) {
        id_sequence_hex(ids[i]);
        assert_int_equal(strlen(ids[i]), 32);
        assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
    }
    qsort(ids, N, sizeof *ids, cmp);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

static void test_random_hex(void **state)
{
    (void)state;
    char a[33], b[33];
    assert_int_equal(id_random_hex(a, 16), 0);
    assert_int_equal(id_random_hex(b, 16), 0);
    assert_int_equal(strlen(a), 32);
    assert_string_not_equal(a, b);
    char big[200];
    assert_int_equal(id_random_hex(big, 65), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sequence_ids_unique_hex),
                                       cmocka_unit_test(test_random_hex)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
