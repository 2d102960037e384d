/* Unit tests for cli/table.c and the get table of cli/llm_format.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "llm_format.h"
#include "table.h"
#include "clock.h"
#include "timefmt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs fn into a memory stream and returns what it wrote (caller frees). */
static char *capture_table(const struct table *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(table_write(t, f), 0);
    fclose(f);
    return text;
}

static void test_columns_left_aligned(void **state)
{
    (void)state;
    const char *hdr[] = {"A", "LONGER", "C"};
    struct table *t = table_new(3, hdr);
    assert_non_null(t);
    const char *r1[] = {"xyz", "1", "last"};
    const char *r2[] = {"a", "22222222", NULL};
    assert_int_equal(table_add_row(t, r1), 0);
    assert_int_equal(table_add_row(t, r2), 0);
    assert_int_equal(table_rows(t), 2);
    char *text = capture_table(t);
    assert_string_equal(text, "A     LONGER     C\n"
                              "xyz   1          last\n"
                              "a     22222222   -\n");
    free(text);
    table_free(t);
}

static void test_no_trailing_blanks_and_one_line_rows(void **state)
{
    (void)state;
    const char *hdr[] = {"NAME", "NOTE"};
    struct table *t = table_new(2, hdr);
    const char *r1[] = {"multi\nline\tcell", ""};
    assert_int_equal(table_add_row(t, r1), 0);
    char *text = capture_table(t);
    assert_string_equal(text, "NAME              NOTE\n"
                              "multi line cell\n");
    free(text);
    table_free(t);
}

static void test_utf8_width(void **state)
{
    (void)state;
    assert_int_equal(table_text_width(""), 0);
    assert_int_equal(table_text_width("abc"), 3);
    assert_int_equal(table_text_width("h\xc3\xa9llo"), 5); /* é is 2 bytes */
    const char *hdr[] = {"X", "Y"};
    struct table *t = table_new(2, hdr);
    const char *r1[] = {"\xc3\xa9\xc3\xa9", "y"};
    assert_int_equal(table_add_row(t, r1), 0);
    char *text = capture_table(t);
    assert_string_equal(text, "X    Y\n\xc3\xa9\xc3\xa9   y\n");
    free(text);
    table_free(t);
}

static void test_free_null(void **state)
{
    (void)state;
    table_free(NULL);
}

static const char *llm_json =
    "{\"id\":\"1\",\"name\":\"vllm-local\",\"kind\":\"virtual\",\"status\":\"active\","
    "\"type\":\"openai\",\"model\":\"Qwen/Qwen2.5-7B\",\"tier\":\"fast\",\"poolName\":null,"
    "\"createdAt\":\"2026-01-02T03:00:00.000Z\"}";

static char *capture_llms(const json_t *v, int64_t now)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(llm_format_table(v, now, f), 0);
    fclose(f);
    return text;
}

static void test_llm_table_header_and_row(void **state)
{
    (void)state;
    int64_t created;
    assert_int_equal(clock_parse_rfc3339("2026-01-02T03:00:00.000Z", &created), 0);
    json_t *llm = json_loads(llm_json, 0, NULL);
    json_t *pooled = json_deep_copy(llm);
    json_object_set_new(pooled, "name", json_string("b"));
    json_object_set_new(pooled, "poolName", json_string("gpu-pool"));
    json_object_set_new(pooled, "tier", json_null());
    json_object_set_new(pooled, "createdAt", json_string("2026-01-01T03:00:00.000Z"));
    json_t *arr = json_pack("[OO]", llm, pooled);

    char *text = capture_llms(arr, created + 5 * 60 * 1000 + 1234);
    assert_string_equal(
        text, "NAME         KIND      STATUS   TYPE     MODEL             TIER   POOL       AGE\n"
              "vllm-local   virtual   active   openai   Qwen/Qwen2.5-7B   fast   -          5m\n"
              "b            virtual   active   openai   Qwen/Qwen2.5-7B   -      gpu-pool   1d\n");
    free(text);

    /* One object is a one-row table. */
    text = capture_llms(llm, created + 3 * 3600 * 1000);
    assert_non_null(strstr(text, "\nvllm-local "));
    assert_non_null(strstr(text, "   3h\n"));
    free(text);

    json_decref(arr);
    json_decref(pooled);
    json_decref(llm);
}

static void test_llm_table_wide(void **state)
{
    (void)state;
    int64_t created;
    assert_int_equal(clock_parse_rfc3339("2026-01-02T03:00:00.000Z", &created), 0);
    json_t *llm = json_loads(llm_json, 0, NULL);
    json_object_set_new(llm, "owner", json_string("alice"));
    json_object_set_new(llm, "lastHeartbeatAt", json_string("2026-01-02T03:04:50.000Z"));
    json_t *pooled = json_deep_copy(llm);
    json_object_set_new(pooled, "name", json_string("b"));
    json_object_set_new(pooled, "poolName", json_string("gpu-pool"));
    json_object_set_new(pooled, "owner", json_null());
    json_object_set_new(pooled, "lastHeartbeatAt", json_null());
    json_t *arr = json_pack("[OO]", llm, pooled);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(llm_format_write(LLM_OUTPUT_WIDE, arr, created + 5 * 60 * 1000, f), 0);
    fclose(f);
    /* POOL stays where the default table has it; OWNER and LAST-HEARTBEAT follow AGE. */
    assert_string_equal(text,
                        "NAME         KIND      STATUS   TYPE     MODEL             TIER   POOL    "
                        "   AGE   OWNER   LAST-HEARTBEAT\n"
                        "vllm-local   virtual   active   openai   Qwen/Qwen2.5-7B   fast   -       "
                        "   5m    alice   10s\n"
                        "b            virtual   active   openai   Qwen/Qwen2.5-7B   fast   gpu-pool"
                        "   5m    -       -\n");
    free(text);

    /* One object is a one-row table too. */
    text = NULL;
    f = open_memstream(&text, &len);
    assert_int_equal(llm_format_wide(llm, created + 2 * 3600 * 1000, f), 0);
    fclose(f);
    assert_string_equal(text,
                        "NAME         KIND      STATUS   TYPE     MODEL             TIER   POOL   "
                        "AGE   OWNER   LAST-HEARTBEAT\n"
                        "vllm-local   virtual   active   openai   Qwen/Qwen2.5-7B   fast   -      "
                        "2h    alice   1h\n");
    free(text);

    json_decref(arr);
    json_decref(pooled);
    json_decref(llm);
}

static void test_output_parse(void **state)
{
    (void)state;
    enum llm_output o;
    assert_int_equal(llm_output_parse("table", &o), 0);
    assert_int_equal(o, LLM_OUTPUT_TABLE);
    assert_int_equal(llm_output_parse("wide", &o), 0);
    assert_int_equal(o, LLM_OUTPUT_WIDE);
    assert_int_equal(llm_output_parse("json", &o), 0);
    assert_int_equal(o, LLM_OUTPUT_JSON);
    assert_int_equal(llm_output_parse("yaml", &o), 0);
    assert_int_equal(o, LLM_OUTPUT_YAML);
    assert_int_equal(llm_output_parse("xml", &o), -1);
    assert_int_equal(llm_output_parse("", &o), -1);
}

static void test_json_output_is_the_api_object(void **state)
{
    (void)state;
    json_t *llm = json_loads(llm_json, 0, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(llm_format_write(LLM_OUTPUT_JSON, llm, 0, f), 0);
    fclose(f);
    json_t *back = json_loads(text, 0, NULL);
    assert_non_null(back);
    assert_true(json_equal(back, llm));
    /* Keys keep the API's order. */
    assert_true(strstr(text, "\"id\"") < strstr(text, "\"name\""));
    assert_true(strstr(text, "\"name\"") < strstr(text, "\"createdAt\""));
    json_decref(back);
    json_decref(llm);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_columns_left_aligned),
        cmocka_unit_test(test_no_trailing_blanks_and_one_line_rows),
        cmocka_unit_test(test_utf8_width),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_llm_table_header_and_row),
        cmocka_unit_test(test_llm_table_wide),
        cmocka_unit_test(test_output_parse),
        cmocka_unit_test(test_json_output_is_the_api_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
