/* Frames from mcpd and the bodies mcplocal builds: results, register,
 * the upstream request. */
#include "wire.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void assert_json_eq(char *got, const char *want)
{
    assert_non_null(got);
    json_t *a = json_loads(got, 0, NULL);
    json_t *b = json_loads(want, 0, NULL);
    if (!a || !b || !json_equal(a, b))
        fail_msg("got %s, want %s", got, want);
    json_decref(a);
    json_decref(b);
    free(got);
}

static void test_results(void **state)
{
    (void)state;
    assert_json_eq(wire_result_status(200, "{\"id\":\"x\",\"n\":[1,2]}", 20),
                   "{\"status\":200,\"body\":{\"id\":\"x\",\"n\":[1,2]}}");
    /* The body is spliced byte for byte, not re-serialised. */
    char *s = wire_result_status(201, "{\"a\": 1.50}", 11);
    assert_string_equal(s, "{\"status\":201,\"body\":{\"a\": 1.50}}");
    free(s);
    assert_null(wire_result_status(200, "{oops", 5));
    assert_null(wire_result_status(200, "", 0));

    const char *chunk = "{\"object\":\"chat.completion.chunk\",\"choices\":[]}";
    s = wire_result_chunk(chunk, strlen(chunk));
    char want[256];
    snprintf(want, sizeof want, "{\"chunk\":{\"data\":%s}}", chunk);
    assert_string_equal(s, want);
    free(s);
    /* Not a JSON object: sent as a string, quotes and controls escaped. */
    assert_json_eq(wire_result_chunk("tok \"x\"\n", 8),
                   "{\"chunk\":{\"data\":\"tok \\\"x\\\"\\n\"}}");
    assert_json_eq(wire_result_chunk("[1]", 3), "{\"chunk\":{\"data\":\"[1]\"}}");

    assert_json_eq(wire_result_done(), "{\"chunk\":{\"done\":true}}");
    assert_json_eq(wire_result_error("backend answered 500: \"boom\""),
                   "{\"error\":\"backend answered 500: \\\"boom\\\"\"}");
    assert_json_eq(wire_result_wake_ok(1234),
                   "{\"status\":200,\"body\":{\"ok\":true,\"ms\":1234}}");
}

static void test_hello(void **state)
{
    (void)state;
    struct hello_frame h;
    const char *d = "{\"providerSessionId\":\"s1\",\"heartbeatIntervalSeconds\":30,"
                    "\"pingIntervalSeconds\":20}";
    assert_int_equal(wire_parse_hello(d, strlen(d), &h), 0);
    assert_string_equal(h.session, "s1");
    assert_int_equal(h.heartbeat_ms, 30000);
    assert_int_equal(h.ping_ms, 20000);

    d = "{\"heartbeatIntervalSeconds\":0.25,\"pingIntervalSeconds\":0}";
    assert_int_equal(wire_parse_hello(d, strlen(d), &h), 0);
    assert_int_equal(h.heartbeat_ms, 250);
    assert_int_equal(h.ping_ms, 20000); /* non-positive: the default */

    /* The exact ms fields win over rounded-up seconds. */
    d = "{\"heartbeatIntervalSeconds\":1,\"pingIntervalSeconds\":1,"
        "\"heartbeatIntervalMs\":150,\"pingIntervalMs\":80}";
    assert_int_equal(wire_parse_hello(d, strlen(d), &h), 0);
    assert_int_equal(h.heartbeat_ms, 150);
    assert_int_equal(h.ping_ms, 80);

    assert_int_equal(wire_parse_hello("{}", 2, &h), 0);
    assert_int_equal(h.heartbeat_ms, 30000);
    assert_int_equal(wire_parse_hello("nope", 4, &h), -1);
}

static void test_tasks(void **state)
{
    (void)state;
    struct task_frame t;
    char err[256];
    const char *d = "{\"kind\":\"infer\",\"taskId\":\"t-1\",\"llmName\":\"vllm-local\","
                    "\"streaming\":true,\"body\":{\"model\":\"x\",\"messages\":[]}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TASK_INFER);
    assert_string_equal(t.task_id, "t-1");
    assert_string_equal(t.llm, "vllm-local");
    assert_true(t.streaming);
    assert_true(json_is_object(t.body));
    wire_task_release(&t);

    d = "{\"kind\":\"wake\",\"taskId\":\"w1\",\"llmName\":\"ollama\"}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TASK_WAKE);
    assert_null(t.body);
    wire_task_release(&t);

    static const struct {
        const char *data;
        const char *err;
        bool has_id;
    } bad[] = {
        {"[1]", "not a JSON object", false},
        {"{\"kind\":\"infer\",\"llmName\":\"a\"}", "without a valid taskId", false},
        {"{\"kind\":\"infer\",\"taskId\":\"../x\",\"llmName\":\"a\"}", "without a valid taskId",
         false},
        {"{\"kind\":\"infer\",\"taskId\":\"..\",\"llmName\":\"a\"}", "without a valid taskId",
         false},
        {"{\"kind\":\"dance\",\"taskId\":\"t\",\"llmName\":\"a\"}", "unknown task kind 'dance'",
         true},
        {"{\"kind\":\"wake\",\"taskId\":\"t\"}", "without a valid llmName", true},
        {"{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"body\":[]}",
         "without a request body", true},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(wire_parse_task(bad[i].data, strlen(bad[i].data), &t, err, sizeof err),
                         -1);
        if (!strstr(err, bad[i].err))
            fail_msg("case %zu: '%s'", i, err);
        assert_int_equal(t.task_id[0] != '\0', bad[i].has_id);
        wire_task_release(&t);
    }

    char id[TASK_ID_MAX + 1];
    assert_int_equal(wire_parse_cancel("{\"taskId\":\"t-9\"}", 16, id), 0);
    assert_string_equal(id, "t-9");
    assert_int_equal(wire_parse_cancel("{}", 2, id), -1);
}

static void test_register_body(void **state)
{
    (void)state;
    struct provider_cfg a = {.name = "vllm-local",
                             .type = "openai",
                             .model = "Qwen",
                             .url = "http://127.0.0.1:8000/v1",
                             .api_key_env = "SECRET_ENV",
                             .tier = "fast",
                             .extra_config = "{\"ctx\":1}",
                             .wake = {.type = WAKE_HTTP, .url = "http://127.0.0.1:9/wake"}};
    struct provider_cfg b = {.name = "ollama",
                             .type = "openai",
                             .model = "llama3",
                             .url = "http://127.0.0.1:11434/v1",
                             .pool_name = "p"};
    const struct provider_cfg *ps[] = {&a, &b};
    const char *st[] = {"hibernating", "active"};
    char *body = wire_register_body("sess-1", ps, st, 2);
    assert_non_null(body);
    /* Nothing local leaves the machine. */
    assert_null(strstr(body, "127.0.0.1"));
    assert_null(strstr(body, "SECRET_ENV"));
    assert_null(strstr(body, "wake"));
    assert_json_eq(
        body, "{\"providerSessionId\":\"sess-1\",\"providers\":["
              "{\"name\":\"vllm-local\",\"type\":\"openai\",\"model\":\"Qwen\","
              "\"tier\":\"fast\",\"initialStatus\":\"hibernating\",\"extraConfig\":{\"ctx\":1}},"
              "{\"name\":\"ollama\",\"type\":\"openai\",\"model\":\"llama3\","
              "\"poolName\":\"p\",\"initialStatus\":\"active\"}]}");
    assert_json_eq(wire_register_body(NULL, ps, st, 1),
                   "{\"providers\":[{\"name\":\"vllm-local\",\"type\":\"openai\",\"model\":"
                   "\"Qwen\",\"tier\":\"fast\",\"initialStatus\":\"hibernating\","
                   "\"extraConfig\":{\"ctx\":1}}]}");
}

static void test_upstream_request(void **state)
{
    (void)state;
    json_t *body = json_loads("{\"model\":\"vllm-local\",\"messages\":[{\"role\":\"user\","
                              "\"content\":\"hi\"}],\"stream\":true,\"temperature\":0.5}",
                              0, NULL);
    assert_json_eq(wire_upstream_request(body, "Qwen/Qwen2.5", true),
                   "{\"model\":\"Qwen/Qwen2.5\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"hi\"}],\"stream\":true,\"temperature\":0.5}");
    json_decref(body);

    body = json_loads("{\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":"
                      "true}}",
                      0, NULL);
    assert_json_eq(wire_upstream_request(body, "m", false),
                   "{\"model\":\"m\",\"messages\":[],\"stream\":false}");
    json_decref(body);

    body = json_loads("{\"messages\":[]}", 0, NULL);
    assert_json_eq(wire_upstream_request(body, "m", true),
                   "{\"model\":\"m\",\"messages\":[],\"stream\":true}");
    json_decref(body);
}

static void test_backend_error(void **state)
{
    (void)state;
    char out[64];
    const char *b = "{\"error\":{\"message\":\"model not found\",\"type\":\"x\"}}";
    wire_backend_error(b, strlen(b), out, sizeof out);
    assert_string_equal(out, "model not found");
    b = "{\"object\":\"error\",\"message\":\"too long\"}";
    wire_backend_error(b, strlen(b), out, sizeof out);
    assert_string_equal(out, "too long");
    b = "{\"detail\":\"Not Found\"}";
    wire_backend_error(b, strlen(b), out, sizeof out);
    assert_string_equal(out, "Not Found");
    b = "{\"error\":\"asleep\"}";
    wire_backend_error(b, strlen(b), out, sizeof out);
    assert_string_equal(out, "asleep");
    b = "<html>\nBad Gateway</html>";
    wire_backend_error(b, strlen(b), out, sizeof out);
    assert_string_equal(out, "<html> Bad Gateway</html>");
    wire_backend_error("", 0, out, sizeof out);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results),
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_tasks),
        cmocka_unit_test(test_register_body),
        cmocka_unit_test(test_upstream_request),
        cmocka_unit_test(test_backend_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
