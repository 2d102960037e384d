/* jsonscan agrees with jansson on validity and finds top-level members. */
#include "jsonscan.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static const char *const DOCS[] = {
    "{}",
    "{\"a\":1}",
    " {\"messages\":[{\"role\":\"user\",\"content\":\"hi\\n\\u00e9\"}],\"stream\":true} ",
    "{\"a\":[1,2,{\"b\":null}],\"c\":-0.5e+10,\"d\":\"\\\"\"}",
    "{\"utf8\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
    "{\"a\":1,}",
    "{\"a\" 1}",
    "{\"a\":01}",
    "{\"a\":1.}",
    "{\"a\":-}",
    "{\"a\":\"\x01\"}",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"\\u12\"}",
    "{\"a\":tru}",
    "{\"a\":1}x",
    "[1,2]",
    "\"str\"",
    "{\"a\":\"\xc3\"}",
    "{\"a\":\"\xed\xa0\x80\"}",
    "{\"a\":\"\xc0\xaf\"}",
    "{\"a\":[}",
    "{\"a\":{\"b\":[1,2,]}}",
    "",
    "{",
};

static void test_agrees_with_jansson(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof DOCS / sizeof DOCS[0]; i++) {
        const char *d = DOCS[i];
        json_t *j = json_loadb(d, strlen(d), 0, NULL);
        int want = j && json_is_object(j) ? 0 : -1;
        json_decref(j);
        struct jsonscan js;
        assert_int_equal(jsonscan_parse(&js, d, strlen(d)), want);
    }
}

static void test_members(void **state)
{
    (void)state;
    const char *d = "{\"model\":\"m1\",\"messages\":[ {\"a\":1} ],\"stream\":false,"
                    "\"empty\":[ ],\"n\":42}";
    struct jsonscan js;
    assert_int_equal(jsonscan_parse(&js, d, strlen(d)), 0);
    assert_int_equal(js.n, 5);
    const struct json_field *f = jsonscan_find(&js, "messages");
    assert_non_null(f);
    assert_int_equal(f->kind, JSON_K_ARRAY);
    assert_true(jsonscan_array_nonempty(f));
    assert_int_equal(f->val_len, strlen("[ {\"a\":1} ]"));
    assert_memory_equal(f->val, "[ {\"a\":1} ]", f->val_len);
    assert_false(jsonscan_array_nonempty(jsonscan_find(&js, "empty")));
    assert_int_equal(jsonscan_find(&js, "stream")->kind, JSON_K_FALSE);
    assert_int_equal(jsonscan_find(&js, "model")->kind, JSON_K_STRING);
    assert_int_equal(jsonscan_find(&js, "n")->kind, JSON_K_NUMBER);
    assert_null(jsonscan_find(&js, "nope"));
}

static void test_depth_cap(void **state)
{
    (void)state;
    char deep[512];
    size_t n = 0;
    deep[n++] = '{';
    deep[n++] = '"';
    deep[n++] = 'a';
    deep[n++] = '"';
    deep[n++] = ':';
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    struct jsonscan js;
    assert_int_equal(jsonscan_parse(&js, deep, n), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_agrees_with_jansson),
                                       cmocka_unit_test(test_members),
                                       cmocka_unit_test(test_depth_cap)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
