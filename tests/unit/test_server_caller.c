/* Which request lines the acceptor and the caller loops keep for caller.c:
 * the relay's three hot routes, exactly, and "cannot tell yet" for a prefix
 * of one; every other line goes to libmicrohttpd. */
#include "server.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static enum caller_line classify(const char *line)
{
    return caller_classify(line, strlen(line));
}

static void test_hot_routes_are_kept(void **state)
{
    (void)state;
    assert_int_equal(classify("POST /v1/chat/completions HTTP/1.1\r\n"), CALLER_YES);
    assert_int_equal(classify("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"), CALLER_YES);
    assert_int_equal(classify("POST /api/v1/llms/qwen-7b/infer HTTP/1.1\r\n"), CALLER_YES);
    assert_int_equal(
        classify("POST /api/v1/llms/_provider-task/0123456789abcdef0123456789abcdef/result "
                 "HTTP/1.1\r\n"),
        CALLER_YES);
}

static void test_other_routes_and_methods_go_elsewhere(void **state)
{
    (void)state;
    const char *lines[] = {
        "GET /v1/chat/completions HTTP/1.1\r\n",
        "POST /v1/chat/completionsx HTTP/1.1\r\n",
        "POST /v1/models HTTP/1.1\r\n",
        "GET /api/v1/llms/_provider-stream HTTP/1.1\r\n",
        "POST /api/v1/llms/_provider-register HTTP/1.1\r\n",
        "POST /api/v1/llms/_provider-heartbeat HTTP/1.1\r\n",
        "POST /api/v1/llms/qwen/infer/more HTTP/1.1\r\n",
        "POST /api/v1/llms/qwen/inferx HTTP/1.1\r\n",
        "POST /api/v1/llms//infer HTTP/1.1\r\n",
        "POST /api/v1/llms/_provider-task/abc/results HTTP/1.1\r\n",
        "POST /api/v1/llms/_provider-task//result HTTP/1.1\r\n",
        "POST /api/v1/llms/_provider-task/abc HTTP/1.1\r\n",
        "PUT /api/v1/llms/qwen/infer HTTP/1.1\r\n",
        "post /v1/chat/completions HTTP/1.1\r\n",
        "HELLO\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (classify(lines[i]) != CALLER_NO)
            fail_msg("kept: %s", lines[i]);
    }
}

static void test_prefixes_wait_for_more(void **state)
{
    (void)state;
    const char *full[] = {
        "POST /v1/chat/completions HTTP/1.1\r\n",
        "POST /api/v1/llms/qwen-7b/infer HTTP/1.1\r\n",
        "POST /api/v1/llms/_provider-task/0123abcd/result HTTP/1.1\r\n",
    };
    for (size_t i = 0; i < sizeof full / sizeof full[0]; i++) {
        size_t path_end = (size_t)(strchr(full[i] + 5, ' ') - full[i]);
        /* Every prefix up to and including the path's last byte is open. */
        for (size_t n = 1; n <= path_end; n++) {
            if (caller_classify(full[i], n) != CALLER_MORE)
                fail_msg("%.*s: not CALLER_MORE", (int)n, full[i]);
        }
        assert_int_equal(caller_classify(full[i], path_end + 1), CALLER_YES);
    }
}

static void test_overlong_names_are_not_waited_for(void **state)
{
    (void)state;
    char line[512] = "POST /api/v1/llms/";
    size_t n = strlen(line);
    memset(line + n, 'a', 300);
    line[n + 300] = '\0';
    assert_int_equal(classify(line), CALLER_NO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hot_routes_are_kept),
        cmocka_unit_test(test_other_routes_and_methods_go_elsewhere),
        cmocka_unit_test(test_prefixes_wait_for_more),
        cmocka_unit_test(test_overlong_names_are_not_waited_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
