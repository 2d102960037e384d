/* Unit tests for cli/chat.c: request bodies and streamed-answer handling. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "chat.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *body_of(const struct chat *c, const char *msg)
{
    char *text = chat_request_body(c, msg);
    assert_non_null(text);
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    free(text);
    return j;
}

static void test_request_minimal(void **state)
{
    (void)state;
    struct chat c;
    struct chat_opts o = {.stream = true};
    struct cli_error err = {0};
    assert_int_equal(chat_init(&c, &o, &err), 0);
    json_t *j = body_of(&c, "hi");
    json_t *want = json_loads(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", 0, NULL);
    assert_true(json_equal(j, want));
    json_decref(want);
    json_decref(j);
    assert_int_equal(chat_history_len(&c), 0); /* building a body changes nothing */
    chat_release(&c);
}

static void test_request_options(void **state)
{
    (void)state;
    struct chat c;
    struct chat_opts o = {.system = "be brief",
                          .stream = false,
                          .has_temperature = true,
                          .temperature = 0.7,
                          .has_max_tokens = true,
                          .max_tokens = 64};
    struct cli_error err = {0};
    assert_int_equal(chat_init(&c, &o, &err), 0);
    assert_int_equal(chat_history_len(&c), 1);
    char *text = chat_request_body(&c, "q\n\"quoted\"");
    assert_non_null(strstr(text, "\"temperature\":0.7,")); /* not 0.69999999999999996 */
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    json_t *want = json_loads("{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                              "{\"role\":\"user\",\"content\":\"q\\n\\\"quoted\\\"\"}],"
                              "\"stream\":false,\"temperature\":0.7,\"max_tokens\":64}",
                              0, NULL);
    assert_true(json_equal(j, want));
    json_decref(want);
    json_decref(j);
    chat_release(&c);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    struct chat c;
    struct chat_opts o = {.system = "bad \xff"};
    struct cli_error err = {0};
    assert_int_equal(chat_init(&c, &o, &err), -1);
    assert_int_equal(err.code, CLI_EXIT_USAGE);
    o.system = NULL;
    assert_int_equal(chat_init(&c, &o, &err), 0);
    assert_null(chat_request_body(&c, "bad \xc3"));
    chat_release(&c);
}

/* ---- streamed answers ---- */

struct feed {
    struct chat_stream s;
    char *out;
    size_t len;
    FILE *f;
};

static void feed_init(struct feed *fd)
{
    fd->out = NULL;
    fd->f = open_memstream(&fd->out, &fd->len);
    chat_stream_init(&fd->s, fd->f, "m1");
}

static int feed(struct feed *fd, const char *event, const char *data, struct cli_error *err)
{
    struct sse_event ev = {
        .event = event ? event : "message", .id = "", .data = data, .data_len = strlen(data)};
    return chat_stream_event(&fd->s, &ev, err);
}

static void feed_done(struct feed *fd)
{
    chat_stream_release(&fd->s);
    fclose(fd->f);
    free(fd->out);
}

static const char *chunk(const char *content)
{
    static char buf[512];
    snprintf(buf, sizeof buf,
             "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
             "\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}",
             content);
    return buf;
}

static void test_stream_tokens(void **state)
{
    (void)state;
    struct feed fd;
    struct cli_error err = {0};
    feed_init(&fd);
    assert_int_equal(feed(&fd, NULL, "{\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}", &err),
                     0);
    assert_int_equal(feed(&fd, NULL, chunk("Hel"), &err), 0);
    fflush(fd.f);
    assert_string_equal(fd.out, "Hel"); /* written at once, not at the end */
    assert_int_equal(feed(&fd, NULL, chunk("lo \\u00e9"), &err), 0);
    assert_int_equal(feed(&fd, "ping", "{}", &err), 0); /* unknown events are skipped */
    assert_int_equal(
        feed(&fd, NULL, "{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}", &err), 0);
    assert_false(fd.s.done);
    assert_int_equal(feed(&fd, NULL, "[DONE]", &err), 0);
    assert_true(fd.s.done);
    fflush(fd.f);
    assert_string_equal(fd.out, "Hello \xc3\xa9");
    assert_int_equal(fd.s.answer.len, strlen("Hello \xc3\xa9"));
    assert_memory_equal(fd.s.answer.data, "Hello \xc3\xa9", fd.s.answer.len);
    feed_done(&fd);
}

static void test_stream_errors(void **state)
{
    (void)state;
    static const struct {
        const char *event, *data;
        int code;
        const char *needle;
    } cases[] = {
        {"error", "{\"error\":\"publisher disconnected\"}", CLI_EXIT_INFER,
         "Llm 'm1' failed during the answer: publisher disconnected"},
        {"error", "not json", CLI_EXIT_INFER, "no reason given"},
        {NULL, "{\"error\":{\"message\":\"model overloaded\",\"type\":\"x\"}}", CLI_EXIT_INFER,
         "model overloaded"},
        {NULL, "{\"choices\":", CLI_EXIT_ERROR, "not JSON"},
        {NULL, "[1,2]", CLI_EXIT_ERROR, "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct feed fd;
        struct cli_error err = {0};
        feed_init(&fd);
        assert_int_equal(feed(&fd, NULL, chunk("partial"), &err), 0);
        assert_int_equal(feed(&fd, cases[i].event, cases[i].data, &err), 1);
        assert_int_equal(err.code, cases[i].code);
        if (!strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: '%s'", i, err.msg);
        feed_done(&fd);
    }
}

static void test_answer_text(void **state)
{
    (void)state;
    json_t *a = json_loads("{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"hi "
                           "there\"}}]}",
                           0, NULL);
    assert_string_equal(chat_answer_text(a), "hi there");
    json_decref(a);
    a = json_loads("{\"choices\":[]}", 0, NULL);
    assert_null(chat_answer_text(a));
    json_decref(a);
    assert_null(chat_answer_text(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_minimal), cmocka_unit_test(test_request_options),
        cmocka_unit_test(test_invalid_utf8),    cmocka_unit_test(test_stream_tokens),
        cmocka_unit_test(test_stream_errors),   cmocka_unit_test(test_answer_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
