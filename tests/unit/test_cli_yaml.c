/* Unit tests for cli/yaml_out.c: YAML written by libyaml reads back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_support.h"
#include "yaml_out.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *to_yaml(const json_t *v)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(yaml_out_write(v, f), 0);
    fclose(f);
    return text;
}

static void round_trip(const char *json_text)
{
    json_error_t jerr;
    json_t *v = json_loads(json_text, JSON_DECODE_ANY, &jerr);
    if (!v)
        fail_msg("bad test JSON %s: %s", json_text, jerr.text);
    char *yaml = to_yaml(v);
    char err[256];
    json_t *back = cli_t_yaml_to_json(yaml, err, sizeof err);
    if (!back)
        fail_msg("%s\n--- yaml:\n%s", err, yaml);
    if (!json_equal(v, back)) {
        char *got = json_dumps(back, JSON_ENCODE_ANY);
        fail_msg("round trip of %s gave %s\n--- yaml:\n%s", json_text, got, yaml);
    }
    json_decref(back);
    json_decref(v);
    free(yaml);
}

static void test_llm_view_round_trip(void **state)
{
    (void)state;
    round_trip(
        "{\"id\":\"812c36aa\",\"name\":\"vllm-local\",\"kind\":\"virtual\",\"status\":\"active\","
        "\"type\":\"openai\",\"model\":\"Qwen/Qwen2.5-7B-Instruct-AWQ\",\"tier\":\"fast\","
        "\"description\":\"line1\\nline2\",\"extraConfig\":{\"a\":1,\"b\":\"x\",\"c\":[1,2.5]},"
        "\"poolName\":null,\"owner\":\"alice\",\"providerSessionId\":\"e4d4\","
        "\"lastHeartbeatAt\":\"2026-11-21T18:57:03.505Z\",\"inactiveSince\":null,"
        "\"createdAt\":\"2026-11-21T18:57:03.505Z\",\"updatedAt\":\"2026-11-21T18:57:03.505Z\"}");
}

static void test_list_round_trip(void **state)
{
    (void)state;
    round_trip("[{\"name\":\"a\"},{\"name\":\"b\",\"extraConfig\":{}}]");
    round_trip("[]");
    round_trip("{}");
}

/* Strings a YAML reader would take for something else must come back as strings. */
static const char *const tricky_strings[] = {
    "",
    "true",
    "False",
    "yes",
    "no",
    "on",
    "OFF",
    "y",
    "N",
    "null",
    "~",
    "42",
    "-7",
    "3.14",
    "1e5",
    ".inf",
    "-.Inf",
    ".nan",
    "0x1F",
    "0o17",
    "012",
    "+1",
    "1_000",
    "2026-01-02",
    "12:30:00",
    "<<",
    "=",
    "a: b",
    "# not a comment",
    "- item",
    "[1, 2]",
    "{x}",
    "*ref",
    "&anchor",
    "!tag",
    "%dir",
    "@at",
    "`tick",
    "'single'",
    "\"double\"",
    " lead",
    "trail ",
    "a\nb",
    "a\n\nb",
    "tab\there",
    "ctl\x01x",
    "caf\xc3\xa9",
    "\xe2\x9c\x93 ok",
    "--- ",
    "...",
    "?",
    "| block",
    "> folded",
    "key:",
    ":",
    "-",
    "?x",
};

static void test_tricky_strings_stay_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tricky_strings / sizeof tricky_strings[0]; i++) {
        json_t *obj = json_object();
        json_object_set_new(obj, "k", json_string(tricky_strings[i]));
        json_object_set_new(obj, tricky_strings[i], json_string("as key"));
        char *text = json_dumps(obj, 0);
        round_trip(text);
        free(text);
        json_t *arr = json_pack("[s]", tricky_strings[i]);
        text = json_dumps(arr, 0);
        round_trip(text);
        free(text);
        json_decref(arr);
        json_decref(obj);
    }
}

static void test_scalars(void **state)
{
    (void)state;
    round_trip("{\"i\":0,\"neg\":-12,\"big\":9007199254740993,\"r\":2.0,\"r2\":0.1,\"e\":1e300,"
               "\"t\":true,\"f\":false,\"n\":null,\"nested\":[[],[{}],[[1]]]}");
}

static void test_plain_where_safe(void **state)
{
    (void)state;
    assert_true(yaml_out_plain_safe("vllm-local"));
    assert_true(yaml_out_plain_safe("Qwen/Qwen2.5-7B"));
    assert_false(yaml_out_plain_safe(""));
    assert_false(yaml_out_plain_safe("true"));
    assert_false(yaml_out_plain_safe("2026-01-02T00:00:00Z"));
    assert_false(yaml_out_plain_safe("-"));
    /* Names stay readable: no quotes around ordinary words. */
    json_t *v = json_pack("{s:s,s:s}", "name", "vllm-local", "status", "active");
    char *yaml = to_yaml(v);
    assert_string_equal(yaml, "name: vllm-local\nstatus: active\n");
    free(yaml);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llm_view_round_trip),
        cmocka_unit_test(test_list_round_trip),
        cmocka_unit_test(test_tricky_strings_stay_strings),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_plain_where_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
