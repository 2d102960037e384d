/* Unit tests for cli/usage_format.c: the usage table, wide, and json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "usage_format.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_json[] =
    "{\"usage\":[{\"day\":\"2026-12-07\",\"owner\":\"alice\",\"llm\":\"vllm-local\",\"requests\":"
    "12,\"errors\":1,\"promptTokens\":3400,\"completionTokens\":870},{\"day\":\"2026-12-08\","
    "\"owner\":\"bob\",\"llm\":\"m\",\"requests\":3,\"errors\":0,\"promptTokens\":30,"
    "\"completionTokens\":9}],\"totals\":{\"requests\":15,\"errors\":1,\"promptTokens\":3430,"
    "\"completionTokens\":879}}";

static char *render(enum llm_output fmt, const char *json)
{
    json_t *v = json_loads(json, 0, NULL);
    assert_non_null(v);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(usage_format_write(fmt, v, f), 0);
    fclose(f);
    json_decref(v);
    return text;
}

static void test_table(void **state)
{
    (void)state;
    char *text = render(LLM_OUTPUT_TABLE, usage_json);
    assert_string_equal(
        text,
        "DAY          OWNER   LLM          REQUESTS   ERRORS   PROMPT-TOKENS   COMPLETION-TOKENS\n"
        "2026-12-07   alice   vllm-local   12         1        3400            870\n"
        "2026-12-08   bob     m            3          0        30              9\n"
        "TOTAL                             15         1        3430            879\n");
    free(text);
}

static void test_wide(void **state)
{
    (void)state;
    char *text = render(LLM_OUTPUT_WIDE, usage_json);
    const char *header = "DAY          OWNER   LLM          REQUESTS   ERRORS   PROMPT-TOKENS   "
                         "COMPLETION-TOKENS   TOTAL-TOKENS\n";
    assert_int_equal(strncmp(text, header, strlen(header)), 0);
    assert_non_null(strstr(text, "   870                 4270\n"));
    assert_non_null(strstr(text, "   879                 4309\n"));
    free(text);
}

static void test_json_is_the_api_object(void **state)
{
    (void)state;
    char *text = render(LLM_OUTPUT_JSON, usage_json);
    json_t *got = json_loads(text, 0, NULL);
    json_t *want = json_loads(usage_json, 0, NULL);
    assert_true(json_equal(got, want));
    assert_non_null(strstr(text, "\n  \"usage\": [")); /* indented, in the API's order */
    assert_true(strstr(text, "\"usage\"") < strstr(text, "\"totals\""));
    json_decref(got);
    json_decref(want);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_wide),
        cmocka_unit_test(test_json_is_the_api_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
