/* Frames from mcpd and the bodies mcplocal builds: results, register,
 * the upstream request. */
#include "wire.h"

#include "jsonscan.h"

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

static void test_response_results(void **state)
{
    (void)state;
    /* JSON bodies are spliced verbatim, whatever the status. */
    const char *names[] = {"Retry-After", "X-RateLimit-Remaining-Requests", "Content-Type"};
    const char *values[] = {"7", "0", "application/json"};
    const char *err = "{\"error\": {\"message\": \"slow down\", \"type\": \"rate_limit\"}}";
    char *s = wire_result_response(429, names, values, 3, err, strlen(err));
    char want[512];
    snprintf(want, sizeof want,
             "{\"status\":429,\"headers\":{\"retry-after\":\"7\","
             "\"x-ratelimit-remaining-requests\":\"0\",\"content-type\":\"application/json\"},"
             "\"body\":%s}",
             err);
    assert_string_equal(s, want);
    free(s);
    /* No headers: no "headers" member. */
    s = wire_result_response(200, NULL, NULL, 0, "[1, 2]", 6);
    assert_string_equal(s, "{\"status\":200,\"body\":[1, 2]}");
    free(s);
    /* Not JSON: the bytes as a string. */
    const char *ct[] = {"content-type"};
    const char *html[] = {"text/html"};
    assert_json_eq(wire_result_response(502, ct, html, 1, "<h1>Bad \"gateway\"</h1>\n", 23),
                   "{\"status\":502,\"headers\":{\"content-type\":\"text/html\"},"
                   "\"body\":\"<h1>Bad \\\"gateway\\\"</h1>\\n\"}");
    assert_json_eq(wire_result_response(204, NULL, NULL, 0, "", 0),
                   "{\"status\":204,\"body\":\"\"}");
    assert_json_eq(wire_result_response(200, NULL, NULL, 0, "{oops", 5),
                   "{\"status\":200,\"body\":\"{oops\"}");
    /* Invalid UTF-8 is replaced, the rest kept. */
    assert_json_eq(wire_result_response(500, NULL, NULL, 0,
                                        "a\xff\xc3\xa9"
                                        "b",
                                        5),
                   "{\"status\":500,\"body\":\"a\\ufffd\\u00e9b\"}");

    assert_true(wire_header_passes("Retry-After"));
    assert_true(wire_header_passes("x-ratelimit-limit-tokens"));
    assert_true(wire_header_passes("X-Request-Id"));
    assert_true(wire_header_passes("content-type"));
    assert_false(wire_header_passes("Set-Cookie"));
    assert_false(wire_header_passes("Server"));
    assert_false(wire_header_passes("x-ratelimit"));

    assert_string_equal(
        (s = wire_sse_error("backend stream broke: \"x\"", "backend_error")),
        "data: {\"error\":{\"message\":\"backend stream broke: \\\"x\\\"\",\"type\":"
        "\"server_error\",\"code\":\"backend_error\"}}\n\n");
    free(s);
}

static void test_task_paths(void **state)
{
    (void)state;
    struct task_frame t;
    char err[256];
    /* No path: chat completions. */
    const char *d = "{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"body\":{}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_string_equal(t.path, "/chat/completions");
    wire_task_release(&t);
    d = "{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"path\":\"/embeddings\","
        "\"body\":{\"model\":\"a\",\"input\":\"x\",\"stream\":true}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_string_equal(t.path, "/embeddings");
    /* Other routes: only the model changes. */
    char *s = wire_task_upstream(&t, "m", NULL);
    assert_string_equal(s, "{\"model\":\"m\",\"input\":\"x\",\"stream\":true}");
    free(s);
    wire_task_release(&t);
    /* The general path reads it too. */
    d = "{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"path\":\"/"
        "mess\\u0061ges?beta=true\","
        "\"streaming\":true,\"body\":{\"model\":\"a\",\"stream\":true}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_string_equal(t.path, "/messages?beta=true");
    wire_task_release(&t);

    static const struct {
        const char *path;
        bool ok;
    } cases[] = {
        {"/responses", true},
        {"/audio/speech", true},
        {"/messages?beta=true", true},
        {"/models/a%2Fb", true},
        {"", false},
        {"/", false},
        {"embeddings", false},
        {"/../admin", false},
        {"/a/./b", false},
        {"/a//b", false},
        {"/a/..", false},
        {"/a b", false},
        {"/a#frag", false},
        {"/a\\b", false},
        {"/a\nb", false},
        {"/ok?x=/../y", true}, /* the query is not a path */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (wire_task_path_valid(cases[i].path) != cases[i].ok)
            fail_msg("path '%s': want %s", cases[i].path, cases[i].ok ? "valid" : "invalid");
    d = "{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"path\":\"/../x\",\"body\":{}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), -1);
    assert_string_equal(err, "task frame with an invalid path");
    assert_string_equal(t.task_id, "t");
    wire_task_release(&t);
    d = "{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"path\":5,\"body\":{}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), -1);
    wire_task_release(&t);
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
    /* The body is located in the frame, not copied. */
    assert_ptr_equal(t.body, strstr(d, "{\"model\""));
    assert_int_equal(t.body_len, strlen("{\"model\":\"x\",\"messages\":[]}"));
    assert_null(t.body_owned);
    wire_task_release(&t);

    /* Escapes in keys or values take the general path; same result. */
    d = "{\"kind\":\"infer\",\"task\\u0049d\":\"t\\u002d2\",\"llmName\":\"vllm-local\","
        "\"body\": {\"messages\": []}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_string_equal(t.task_id, "t-2");
    assert_false(t.streaming);
    assert_non_null(t.body_owned);
    assert_json_eq(strndup(t.body, t.body_len), "{\"messages\":[]}");
    wire_task_release(&t);
    d = "{\"kind\":\"w\\u0061ke\",\"taskId\":\"w2\",\"llmName\":\"oll\\u0061ma\"}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_int_equal(t.kind, TASK_WAKE);
    assert_string_equal(t.llm, "ollama");
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
        {"{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\"}", "without a request body", true},
        {"{\"kind\":3,\"taskId\":\"t\",\"llmName\":\"a\"}", "unknown task kind '(none)'", true},
        {"{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a b\",\"body\":{}}",
         "without a valid llmName", true},
        {"{\"kind\":\"infer\",\"taskId\":7,\"llmName\":\"a\"}", "without a valid taskId", false},
        {"{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"body\":{}", "not a JSON object",
         false},
        {"{\"kind\":\"dance\",\"task\\u0049d\":\"t\",\"llmName\":\"a\"}",
         "unknown task kind 'dance'", true},
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
              "\"poolName\":\"p\",\"initialStatus\":\"active\"}],"
              "\"features\":[\"paths\",\"streamed-results\"]}");
    assert_json_eq(wire_register_body(NULL, ps, st, 1),
                   "{\"providers\":[{\"name\":\"vllm-local\",\"type\":\"openai\",\"model\":"
                   "\"Qwen\",\"tier\":\"fast\",\"initialStatus\":\"hibernating\","
                   "\"extraConfig\":{\"ctx\":1}}],\"features\":[\"paths\",\"streamed-results\"]}");
}

static char *upstream(const char *body, const char *model, bool streaming)
{
    size_t n = 0;
    char *s = wire_upstream_request(body, strlen(body), model, streaming, &n);
    if (s)
        assert_int_equal(n, strlen(s));
    return s;
}

static void test_upstream_request(void **state)
{
    (void)state;
    assert_json_eq(upstream("{\"model\":\"vllm-local\",\"messages\":[{\"role\":\"user\","
                            "\"content\":\"hi\"}],\"stream\":true,\"temperature\":0.5}",
                            "Qwen/Qwen2.5", true),
                   "{\"model\":\"Qwen/Qwen2.5\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"hi\"}],\"stream\":true,\"temperature\":0.5}");
    assert_json_eq(
        upstream("{\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":"
                 "true}}",
                 "m", false),
        "{\"model\":\"m\",\"messages\":[],\"stream\":false}");
    assert_json_eq(upstream("{\"messages\":[]}", "m", true),
                   "{\"model\":\"m\",\"messages\":[],\"stream\":true}");
    assert_json_eq(upstream("{\"messages\":[]}", "m", false), "{\"model\":\"m\",\"messages\":[]}");
    assert_json_eq(upstream("{}", "m", false), "{\"model\":\"m\"}");
    /* Streaming keeps stream_options. */
    assert_json_eq(upstream("{\"stream_options\":{\"include_usage\":true}}", "m", true),
                   "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    /* Not an object, or not JSON. */
    assert_null(upstream("[1]", "m", false));
    assert_null(upstream("{\"a\":", "m", false));
    assert_null(upstream("", "m", false));
}

static void test_upstream_splice(void **state)
{
    (void)state;
    char *s;
    /* Values are copied byte for byte: whitespace inside them, number
     * spellings and unicode escapes survive; "model" inside nested objects
     * is not touched. */
    s = upstream(
        "{ \"model\" : \"caller\",\n  \"messages\": [ {\"role\": \"user\",\n"
        "   \"content\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\n\", \"model\": \"x\"} ],\n"
        "\t\"temperature\": 1.50e0, \"tools\": {\"model\": {\"model\": 1}}, \"n\": -0 }\n",
        "served", false);
    assert_string_equal(s, "{\"model\":\"served\",\"messages\":[ {\"role\": \"user\",\n"
                           "   \"content\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\n\", "
                           "\"model\": \"x\"} ],\"temperature\":1.50e0,"
                           "\"tools\":{\"model\": {\"model\": 1}},\"n\":-0}");
    free(s);
    /* Raw UTF-8 passes through. */
    s = upstream("{\"messages\":[\"\xc3\xa9\xe2\x82\xac\"],\"model\":null}", "m", true);
    assert_string_equal(
        s, "{\"model\":\"m\",\"stream\":true,\"messages\":[\"\xc3\xa9\xe2\x82\xac\"]}");
    free(s);
    /* Every "model" and "stream" member is dropped, wherever it was. */
    s = upstream("{\"model\":\"a\",\"stream\":true,\"x\":1,\"model\":\"b\",\"stream\":false}", "m",
                 true);
    assert_string_equal(s, "{\"model\":\"m\",\"stream\":true,\"x\":1}");
    free(s);
    s = upstream("{\"stream\":true,\"stream_options\":{},\"x\":[]}", "m", false);
    assert_string_equal(s, "{\"model\":\"m\",\"stream\":false,\"x\":[]}");
    free(s);
    /* Keys that only look alike are kept. */
    s = upstream("{\"Model\":1,\"models\":2,\"mode\":3}", "m", false);
    assert_string_equal(s, "{\"model\":\"m\",\"Model\":1,\"models\":2,\"mode\":3}");
    free(s);
    /* The configured model is quoted. */
    s = upstream("{}", "a\"b\\c\td", false);
    assert_string_equal(s, "{\"model\":\"a\\\"b\\\\c\\u0009d\"}");
    free(s);
}

static void test_task_upstream(void **state)
{
    (void)state;
    /* Straight from a parsed frame: the body is not scanned again, and the
     * result is the same splice. */
    const char *d = "{\"kind\":\"infer\",\"taskId\":\"t\",\"llmName\":\"a\",\"streaming\":false,"
                    "\"body\":{ \"model\":\"a\", \"s\":\"\\\\\", \"e\":\"}\\\"{]\",\n"
                    "\"n\":[1,{\"model\":[]},\"]\"] ,\"t\":true,\"f\":-1.5E+3,\"z\":null,"
                    "\"stream\":true,\"stream_options\":{\"x\":{}}}}";
    struct task_frame t;
    char err[128];
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    size_t n = 0;
    char *s = wire_task_upstream(&t, "m", &n);
    assert_non_null(s);
    assert_int_equal(n, strlen(s));
    assert_string_equal(s, "{\"model\":\"m\",\"stream\":false,\"s\":\"\\\\\",\"e\":\"}\\\"{]\","
                           "\"n\":[1,{\"model\":[]},\"]\"],\"t\":true,\"f\":-1.5E+3,\"z\":null}");
    char *again = wire_upstream_request(t.body, t.body_len, "m", false, NULL);
    assert_string_equal(again, s);
    free(again);
    free(s);
    wire_task_release(&t);

    /* A frame that took the general path works the same. */
    d = "{\"kind\":\"infer\",\"task\\u0049d\":\"t\",\"llmName\":\"a\",\"streaming\":true,"
        "\"body\":{\"model\":\"a\",\"messages\":[]}}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_json_eq(wire_task_upstream(&t, "m", NULL),
                   "{\"model\":\"m\",\"stream\":true,\"messages\":[]}");
    wire_task_release(&t);

    /* Wake tasks have no body. */
    d = "{\"kind\":\"wake\",\"taskId\":\"w\",\"llmName\":\"a\"}";
    assert_int_equal(wire_parse_task(d, strlen(d), &t, err, sizeof err), 0);
    assert_null(wire_task_upstream(&t, "m", NULL));
    wire_task_release(&t);

    /* Whitespace around the object is fine. */
    s = upstream(" \n{\"a\" :1 }\n", "m", false);
    assert_string_equal(s, "{\"model\":\"m\",\"a\":1}");
    free(s);
}

static void test_upstream_general_path(void **state)
{
    (void)state;
    /* An escaped key is still "model": replaced (through the tree). */
    assert_json_eq(upstream("{\"mod\\u0065l\":\"caller\",\"messages\":[]}", "m", false),
                   "{\"model\":\"m\",\"messages\":[]}");
    assert_json_eq(upstream("{\"str\\u0065am\":false}", "m", true),
                   "{\"model\":\"m\",\"stream\":true}");
    /* More members than jsonscan records, or than the splice takes (the
     * tree then): none is lost. */
    const int sizes[] = {JSONSCAN_MAX_FIELDS + 8, 100};
    for (size_t k = 0; k < 2; k++) {
        char body[4096], want[4096];
        size_t bo = 0, wo = 0;
        bo += (size_t)snprintf(body + bo, sizeof body - bo, "{");
        wo += (size_t)snprintf(want + wo, sizeof want - wo, "{\"model\":\"m\"");
        for (int i = 0; i < sizes[k]; i++) {
            bo += (size_t)snprintf(body + bo, sizeof body - bo, "%s\"k%d\":%d", i ? "," : "", i, i);
            wo += (size_t)snprintf(want + wo, sizeof want - wo, ",\"k%d\":%d", i, i);
        }
        snprintf(body + bo, sizeof body - bo, ",\"model\":\"caller\"}");
        snprintf(want + wo, sizeof want - wo, "}");
        assert_json_eq(upstream(body, "m", false), want);
    }
}

static void test_result_splice(void **state)
{
    (void)state;
    char *s;
    /* The backend's bytes are spliced as they are. */
    const char *b = "{\"id\": \"c\",\n \"choices\": [{\"message\": {\"content\": \"\\u00e9\"}}]}\n";
    s = wire_result_status(200, b, strlen(b));
    assert_non_null(s);
    char want[256];
    snprintf(want, sizeof want, "{\"status\":200,\"body\":%s}", b);
    assert_string_equal(s, want);
    free(s);
    /* Not JSON: refused, so the caller fails the task instead. */
    assert_null(wire_result_status(200, "{\"id\":", 6));
    assert_null(wire_result_status(200, "<html>", 6));
    assert_null(wire_result_status(200, "", 0));
    assert_null(wire_result_status(200, "{} {}", 5));
    /* Stream chunks: an object is spliced, anything else becomes a string. */
    s = wire_result_chunk("{\"choices\": [ ]}", 16);
    assert_string_equal(s, "{\"chunk\":{\"data\":{\"choices\": [ ]}}}");
    free(s);
    s = wire_result_chunk("not \"json\"", 10);
    assert_string_equal(s, "{\"chunk\":{\"data\":\"not \\\"json\\\"\"}}");
    free(s);
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
        cmocka_unit_test(test_response_results),
        cmocka_unit_test(test_task_paths),
        cmocka_unit_test(test_upstream_request),
        cmocka_unit_test(test_upstream_splice),
        cmocka_unit_test(test_task_upstream),
        cmocka_unit_test(test_upstream_general_path),
        cmocka_unit_test(test_result_splice),
        cmocka_unit_test(test_backend_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
