/* mcplocal (the real binary) with a fake mcpd that offers a result stream:
 * whole answers go down one long request as lines instead of a post each;
 * keep-alive lines while idle; a refused stream falls back to posts with
 * nothing lost; a stream that breaks off makes mcplocal reconnect; SIGTERM
 * ends the stream's body cleanly after its last line. */
#include "fake_backend.h"
#include "fake_mcpd.h"
#include "mcplocal_fixture.h"
#include "proc.h"
#include "protocol.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS MLFX_WAIT_MS

static const char BODY[] = "{\"model\":\"local\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"hi\"}]}";

static int start(void **state, enum fake_mcpd_results mode)
{
    struct mlfx *x = mlfx_new("mcplocal-results");
    *state = x;
    if (!x)
        return -1;
    fake_mcpd_set_results(x->fm, mode);
    fake_mcpd_set_intervals(x->fm, 30000, 300);
    char config[1024];
    snprintf(config, sizeof config,
             "{\"llm\": {\"providers\": [\n"
             "  {\"name\": \"local\", \"type\": \"openai\", \"model\": \"served-model\",\n"
             "   \"url\": \"%s\", \"publish\": true}\n"
             "]}}\n",
             fake_backend_url(x->fb));
    return mlfx_launch(x, config, NULL);
}

static int setup_on(void **state)
{
    return start(state, FAKE_MCPD_RESULTS_ON);
}

static int setup_refuse(void **state)
{
    return start(state, FAKE_MCPD_RESULTS_REFUSE);
}

static int teardown(void **state)
{
    assert_int_equal(mlfx_free(*state), 0);
    return 0;
}

/* Waits for task id's line on the result stream and returns it parsed. */
static json_t *line_of(struct mlfx *x, const char *id)
{
    char needle[128];
    snprintf(needle, sizeof needle, "{\"taskId\":\"%s\",", id);
    if (fake_mcpd_wait_body(x->fm, MCP_ROUTE_RESULTS, needle, WAIT_MS) != 0) {
        proc_dump(x->p);
        fail_msg("no line for task %s on the result stream", id);
    }
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, MCP_ROUTE_RESULTS, -1);
    assert_non_null(r);
    assert_string_equal(r->session, "sess-1");
    assert_string_equal(r->ctype, "application/x-ndjson");
    const char *start = strstr(r->body, needle);
    const char *end = strchr(start, '\n');
    assert_non_null(end); /* every line ends with a newline */
    json_t *j = json_loadb(start, (size_t)(end - start), 0, NULL);
    if (!j)
        fail_msg("line of %s is not JSON: %.*s", id, (int)(end - start), start);
    fake_mcpd_req_free(r);
    return j;
}

static void test_results_go_down_the_stream(void **state)
{
    struct mlfx *x = *state;
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t1", "local", false, BODY), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t2", "local", false, BODY), 0);
    for (int i = 1; i <= 2; i++) {
        char id[8];
        snprintf(id, sizeof id, "t%d", i);
        json_t *j = line_of(x, id);
        assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
        json_t *body = json_object_get(j, "body");
        assert_string_equal(json_string_value(json_object_get(body, "object")), "chat.completion");
        json_decref(j);
    }
    /* the backend refusing is an answer like any other */
    fake_backend_set_fail(x->fb, 429);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t3", "local", false, BODY), 0);
    json_t *j = line_of(x, "t3");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 429);
    json_decref(j);
    /* no post of their own, and one stream for all */
    assert_int_equal(fake_mcpd_count(x->fm, MCP_ROUTE_TASK_PREFIX), 0);
    assert_int_equal(fake_mcpd_count(x->fm, MCP_ROUTE_RESULTS), 1);
}

/* A large answer goes out as a post of its own. */
static void test_large_answer_is_posted(void **state)
{
    struct mlfx *x = *state;
    size_t n = 100 * 1024;
    char *big = malloc(n + 64);
    int off = snprintf(big, n + 64, "{\"object\":\"chat.completion\",\"pad\":\"");
    memset(big + off, 'x', n);
    strcpy(big + off + n, "\"}");
    fake_backend_set_reply(x->fb, 200, "application/json", big, NULL);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "big", "local", false, BODY), 0);
    char path[256];
    fake_mcpd_result_path("big", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, 1, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, 0);
    assert_non_null(strstr(r->body, big));
    fake_mcpd_req_free(r);
    free(big);
    /* the next small one takes the stream again */
    fake_backend_set_reply(x->fb, 0, NULL, NULL, NULL);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "small", "local", false, BODY), 0);
    json_decref(line_of(x, "small"));
}

static void test_keepalive_lines(void **state)
{
    struct mlfx *x = *state;
    /* nothing to say for a few ping intervals: blank lines */
    assert_int_equal(fake_mcpd_wait_body(x->fm, MCP_ROUTE_RESULTS, "\n\n", WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, MCP_ROUTE_RESULTS, -1);
    for (const char *p = r->body; *p; p++)
        assert_int_equal(*p, '\n');
    fake_mcpd_req_free(r);
}

static void test_refused_stream_posts_each(void **state)
{
    struct mlfx *x = *state;
    assert_int_equal(proc_wait_for(x->p, "does not take a result stream", WAIT_MS), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t1", "local", false, BODY), 0);
    char path[256];
    fake_mcpd_result_path("t1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, 1, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, 0);
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->body, "\"status\":200"));
    assert_null(strstr(r->body, "taskId"));
    fake_mcpd_req_free(r);
    assert_int_equal(fake_mcpd_count(x->fm, MCP_ROUTE_RESULTS), 1);
}

static void test_broken_stream_reconnects(void **state)
{
    struct mlfx *x = *state;
    fake_mcpd_cut_results(x->fm);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t1", "local", false, BODY), 0);
    /* the line was lost with the connection: mcplocal starts again */
    if (proc_wait_for(x->p, "the result stream broke off", WAIT_MS) != 0) {
        proc_dump(x->p);
        fail();
    }
    assert_int_equal(fake_mcpd_wait_stream(x->fm, 2, WAIT_MS), 0);
    assert_int_equal(proc_wait_for(x->p, "stream up", WAIT_MS), 0);
    assert_int_equal(fake_mcpd_wait_count(x->fm, MCP_ROUTE_RESULTS, 2, WAIT_MS), 0);
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t2", "local", false, BODY), 0);
    json_t *j = line_of(x, "t2");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    json_decref(j);
}

static void test_sigterm_ends_the_stream(void **state)
{
    struct mlfx *x = *state;
    assert_int_equal(fake_mcpd_push_infer(x->fm, "t1", "local", false, BODY), 0);
    json_decref(line_of(x, "t1"));
    proc_signal(x->p, SIGTERM);
    assert_int_equal(proc_wait_exit(x->p, WAIT_MS), 0);
    proc_free(x->p);
    x->p = NULL;
    assert_int_equal(fake_mcpd_wait_complete(x->fm, MCP_ROUTE_RESULTS, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, MCP_ROUTE_RESULTS, -1);
    assert_int_equal(r->status, 200); /* the body ended, not cut */
    fake_mcpd_req_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_results_go_down_the_stream, setup_on, teardown),
        cmocka_unit_test_setup_teardown(test_large_answer_is_posted, setup_on, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_lines, setup_on, teardown),
        cmocka_unit_test_setup_teardown(test_refused_stream_posts_each, setup_refuse, teardown),
        cmocka_unit_test_setup_teardown(test_broken_stream_reconnects, setup_on, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_ends_the_stream, setup_on, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
