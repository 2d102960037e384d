/* Unit tests for `mcpctl describe llm`'s layout (cli/llm_format.c), pools
 * included. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_support.h"
#include "llm_format.h"
#include "clock.h"
#include "timefmt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *describe(const char *json, int64_t now)
{
    json_t *v = json_loads(json, 0, NULL);
    assert_non_null(v);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(llm_format_describe(v, now, f), 0);
    fclose(f);
    json_decref(v);
    return text;
}

static char *describe_as(enum llm_output fmt, const json_t *v, int64_t now)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(llm_format_describe_as(fmt, v, now, f), 0);
    fclose(f);
    return text;
}

static int64_t at(const char *ts)
{
    int64_t ms;
    assert_int_equal(clock_parse_rfc3339(ts, &ms), 0);
    return ms;
}

static void test_active_owned(void **state)
{
    (void)state;
    char *text = describe(
        "{\"id\":\"abc\",\"name\":\"vllm-local\",\"kind\":\"virtual\",\"status\":\"active\","
        "\"type\":\"openai\",\"model\":\"Qwen/Qwen2.5-7B\",\"tier\":\"fast\","
        "\"description\":\"first\\nsecond\",\"extraConfig\":{\"ctx\":8192,\"gpu\":\"a10\"},"
        "\"poolName\":null,\"owner\":\"alice\",\"providerSessionId\":\"s123\","
        "\"lastHeartbeatAt\":\"2026-01-02T03:04:00.000Z\",\"inactiveSince\":null,"
        "\"createdAt\":\"2026-01-02T00:04:05.000Z\",\"updatedAt\":\"2026-01-02T03:04:00.000Z\"}",
        at("2026-01-02T03:04:12.000Z"));
    assert_string_equal(text, "Name:             vllm-local\n"
                              "ID:               abc\n"
                              "Kind:             virtual\n"
                              "Status:           active\n"
                              "Type:             openai\n"
                              "Model:            Qwen/Qwen2.5-7B\n"
                              "Tier:             fast\n"
                              "Pool:             <none>\n"
                              "Description:      first\n"
                              "                  second\n"
                              "Owner:            alice\n"
                              "Session:          s123\n"
                              "Last heartbeat:   2026-01-02T03:04:00.000Z (12s ago)\n"
                              "Inactive since:   <none>\n"
                              "Created:          2026-01-02T00:04:05.000Z (3h ago)\n"
                              "Updated:          2026-01-02T03:04:00.000Z (12s ago)\n"
                              "Extra config:\n"
                              "  ctx: 8192\n"
                              "  gpu: a10\n");
    free(text);
}

static void test_inactive_not_owned_with_unknown_field(void **state)
{
    (void)state;
    char *text = describe("{\"name\":\"m\",\"kind\":\"virtual\",\"status\":\"inactive\","
                          "\"poolName\":\"gpu\",\"owner\":\"bob\","
                          "\"inactiveSince\":\"2026-01-02T03:00:00.000Z\",\"extraConfig\":{},"
                          "\"futureField\":[1,2]}",
                          at("2026-01-02T03:05:00.000Z"));
    /* No session line for someone else's Llm. */
    assert_null(strstr(text, "Session:"));
    assert_non_null(strstr(text, "Status:           inactive\n"));
    assert_non_null(strstr(text, "Pool:             gpu\n"));
    assert_non_null(strstr(text, "Inactive since:   2026-01-02T03:00:00.000Z (5m ago)\n"));
    assert_non_null(strstr(text, "Last heartbeat:   <none>\n"));
    assert_non_null(strstr(text, "Extra config:     <none>\n"));
    assert_non_null(strstr(text, "Tier:             <none>\n"));
    assert_non_null(strstr(text, "futureField:      [1,2]\n"));
    /* No line ends in a blank. */
    assert_null(strstr(text, " \n"));
    free(text);
}

static const char *view_json =
    "{\"id\":\"abc\",\"name\":\"vllm-local\",\"kind\":\"virtual\",\"status\":\"active\","
    "\"tier\":\"fast\",\"extraConfig\":{\"ctx\":8192},\"poolName\":null,\"owner\":\"alice\","
    "\"lastHeartbeatAt\":\"2026-01-02T03:04:00.000Z\",\"futureField\":[1,2]}";

static void test_output_json(void **state)
{
    (void)state;
    json_t *v = json_loads(view_json, 0, NULL);
    char *text = describe_as(LLM_OUTPUT_JSON, v, 0);
    /* The object as mcpd returned it: indented, keys in the API's order, nulls
     * and unknown fields kept. */
    assert_string_equal(text, "{\n"
                              "  \"id\": \"abc\",\n"
                              "  \"name\": \"vllm-local\",\n"
                              "  \"kind\": \"virtual\",\n"
                              "  \"status\": \"active\",\n"
                              "  \"tier\": \"fast\",\n"
                              "  \"extraConfig\": {\n"
                              "    \"ctx\": 8192\n"
                              "  },\n"
                              "  \"poolName\": null,\n"
                              "  \"owner\": \"alice\",\n"
                              "  \"lastHeartbeatAt\": \"2026-01-02T03:04:00.000Z\",\n"
                              "  \"futureField\": [\n"
                              "    1,\n"
                              "    2\n"
                              "  ]\n"
                              "}\n");
    free(text);
    json_decref(v);
}

static void test_output_yaml(void **state)
{
    (void)state;
    json_t *v = json_loads(view_json, 0, NULL);
    char *text = describe_as(LLM_OUTPUT_YAML, v, 0);
    char err[256];
    json_t *back = cli_t_yaml_to_json(text, err, sizeof err);
    if (!back)
        fail_msg("%s\n%s", err, text);
    assert_true(json_equal(back, v));
    /* The same object as YAML, keys in the API's order; a timestamp stays a string. */
    assert_string_equal(text, "id: abc\n"
                              "name: vllm-local\n"
                              "kind: virtual\n"
                              "status: active\n"
                              "tier: fast\n"
                              "extraConfig:\n"
                              "  ctx: 8192\n"
                              "poolName: null\n"
                              "owner: alice\n"
                              "lastHeartbeatAt: '2026-01-02T03:04:00.000Z'\n"
                              "futureField:\n"
                              "- 1\n"
                              "- 2\n");
    free(text);
    json_decref(back);
    json_decref(v);
}

static void test_output_default_is_the_description(void **state)
{
    (void)state;
    json_t *v = json_loads(view_json, 0, NULL);
    char *text = describe_as(LLM_OUTPUT_TABLE, v, at("2026-01-02T03:04:12.000Z"));
    char *plain = describe(view_json, at("2026-01-02T03:04:12.000Z"));
    assert_string_equal(text, plain);
    assert_non_null(strstr(text, "Last heartbeat:   2026-01-02T03:04:00.000Z (12s ago)\n"));
    free(plain);
    free(text);
    json_decref(v);
}

static char *pool_text(const char *json, const char *self, int64_t now)
{
    json_t *v = json_loads(json, 0, NULL);
    assert_non_null(v);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(llm_format_pool(v, self, now, f), 0);
    fclose(f);
    json_decref(v);
    return text;
}

static const char pool_json[] = "{\"pool\":\"qwen\",\"size\":3,\"activeCount\":2,\"members\":["
                                "{\"name\":\"qwen-a\",\"status\":\"active\",\"owner\":\"alice\","
                                "\"lastHeartbeatAt\":\"2026-01-02T03:04:10.000Z\"},"
                                "{\"name\":\"qwen-b\",\"status\":\"active\",\"owner\":\"bob\","
                                "\"lastHeartbeatAt\":\"2026-01-02T03:04:00.000Z\"},"
                                "{\"name\":\"qwen-c\",\"status\":\"inactive\",\"owner\":\"bob\","
                                "\"lastHeartbeatAt\":null}]}";

/* A member's description ends with its siblings; a pool's lists them all. */
static void test_pool(void **state)
{
    (void)state;
    int64_t now = at("2026-01-02T03:04:12.000Z");
    char *text = pool_text(pool_json, "qwen-a", now);
    assert_string_equal(text, "Siblings:         2 in pool 'qwen', 1 active\n"
                              "  NAME     STATUS     OWNER   LAST-HEARTBEAT\n"
                              "  qwen-b   active     bob     12s\n"
                              "  qwen-c   inactive   bob     -\n");
    free(text);
    text = pool_text(pool_json, NULL, now);
    assert_string_equal(text, "Pool:             qwen\n"
                              "Members:          3, 2 active\n"
                              "  NAME     STATUS     OWNER   LAST-HEARTBEAT\n"
                              "  qwen-a   active     alice   2s\n"
                              "  qwen-b   active     bob     12s\n"
                              "  qwen-c   inactive   bob     -\n");
    free(text);
    text = pool_text("{\"pool\":\"solo\",\"members\":[{\"name\":\"only\"}]}", "only", now);
    assert_string_equal(text, "Siblings:         <none>\n");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_active_owned),
        cmocka_unit_test(test_inactive_not_owned_with_unknown_field),
        cmocka_unit_test(test_output_json),
        cmocka_unit_test(test_output_yaml),
        cmocka_unit_test(test_output_default_is_the_description),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
