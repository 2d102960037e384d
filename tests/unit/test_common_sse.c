/* SSE encoder and the incremental parser fed at every split point. */
#include "sse.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

struct seen {
    char log[4096];
    int events;
    int comments;
};

static int on_event(void *ud, const struct sse_event *ev)
{
    struct seen *s = ud;
    size_t n = strlen(s->log);
    snprintf(s->log + n, sizeof s->log - n, "[%s|%s|%s]", ev->event, ev->id, ev->data);
    s->events++;
    return 0;
}

static void on_comment(void *ud, const char *text, size_t len)
{
    struct seen *s = ud;
    size_t n = strlen(s->log);
    snprintf(s->log + n, sizeof s->log - n, "(%.*s)", (int)len, text);
    s->comments++;
}

static const char STREAM[] = "event: hello\ndata: {\"a\":1}\n\n"
                             ": ping\n\n"
                             "event: task\r\nid: t1\r\ndata: {\"kind\":\"infer\"}\r\n\r\n"
                             "data: line1\ndata: line2\n\n"
                             "event: cancel\rdata: {\"taskId\":\"t1\"}\r\r"
                             "retry: 10\nunknown: x\ndata:nospace\n\n"
                             "event: empty\n\n";

static const char EXPECTED[] = "[hello||{\"a\":1}](ping)[task|t1|{\"kind\":\"infer\"}]"
                               "[message||line1\nline2][cancel||{\"taskId\":\"t1\"}]"
                               "[message||nospace]";

static void feed_in_pieces(size_t piece)
{
    struct seen s = {0};
    struct sse_parser p;
    sse_parser_init(&p, 1024, 4096, on_event, on_comment, &s);
    size_t n = strlen(STREAM);
    for (size_t i = 0; i < n; i += piece) {
        size_t k = n - i < piece ? n - i : piece;
        assert_int_equal(sse_parser_feed(&p, STREAM + i, k), 0);
    }
    assert_string_equal(s.log, EXPECTED);
    sse_parser_release(&p);
}

static void test_parser_any_piece_size(void **state)
{
    (void)state;
    for (size_t piece = 1; piece <= strlen(STREAM); piece++)
        feed_in_pieces(piece);
}

static void test_parser_every_split_point(void **state)
{
    (void)state;
    size_t n = strlen(STREAM);
    for (size_t cut = 0; cut <= n; cut++) {
        struct seen s = {0};
        struct sse_parser p;
        sse_parser_init(&p, 1024, 4096, on_event, on_comment, &s);
        assert_int_equal(sse_parser_feed(&p, STREAM, cut), 0);
        assert_int_equal(sse_parser_feed(&p, STREAM + cut, n - cut), 0);
        assert_string_equal(s.log, EXPECTED);
        sse_parser_release(&p);
    }
}

static void test_parser_caps(void **state)
{
    (void)state;
    struct seen s = {0};
    struct sse_parser p;
    sse_parser_init(&p, 16, 25, on_event, NULL, &s);
    assert_int_equal(sse_parser_feed(&p, "data: 0123456789abcdef", 22), SSE_ERR_LINE_TOO_LONG);
    sse_parser_reset(&p);
    assert_int_equal(
        sse_parser_feed(&p, "data: 0123456789\ndata: 0123456789\ndata: 0123456789\n", 51),
        SSE_ERR_EVENT_TOO_LARGE);
    sse_parser_reset(&p);
    assert_int_equal(sse_parser_feed(&p, "data: ok\n\n", 10), 0);
    assert_string_equal(s.log, "[message||ok]");
    sse_parser_release(&p);
}

static void test_encoder(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(sse_encode_event(&b, "task", "t1", "{\"x\":1}", 7), 0);
    assert_string_equal(b.data, "event: task\nid: t1\ndata: {\"x\":1}\n\n");
    buf_reset(&b);
    assert_int_equal(sse_encode_event(&b, NULL, NULL, "a\nb\r\nc", 6), 0);
    assert_string_equal(b.data, "data: a\ndata: b\ndata: c\n\n");
    buf_reset(&b);
    assert_int_equal(sse_encode_comment(&b, "ping"), 0);
    assert_string_equal(b.data, ": ping\n\n");
    buf_release(&b);
    /* over the cap: nothing is appended */
    buf_init(&b, 10);
    assert_int_equal(sse_encode_event(&b, "task", NULL, "0123456789", 10), -1);
    assert_int_equal(b.len, 0);
    buf_release(&b);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4096);
    sse_encode_event(&b, "task", "id9", "multi\nline", 10);
    struct seen s = {0};
    struct sse_parser p;
    sse_parser_init(&p, 1024, 4096, on_event, NULL, &s);
    assert_int_equal(sse_parser_feed(&p, b.data, b.len), 0);
    assert_string_equal(s.log, "[task|id9|multi\nline]");
    sse_parser_release(&p);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_any_piece_size),
        cmocka_unit_test(test_parser_every_split_point),
        cmocka_unit_test(test_parser_caps),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
