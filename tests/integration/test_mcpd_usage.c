/*
 * Usage accounting against the real mcpd with a fake publisher:
 *
 *   - the sums GET /api/v1/usage reports match the usage the caller saw in
 *     each relayed answer: whole answers, per-chunk streams whose last
 *     chunk carries OpenAI's usage, streamed posts whose last event does,
 *     Anthropic's message_start / message_delta events, and failures
 *     (counted as errors);
 *   - a token reads its own owner's rows, an admin token everyone's (the
 *     owner filter applies), another owner's needs an admin token (403);
 *   - the filters, and 400 for each kind of bad one;
 *   - counts written at shutdown are there after a restart.
 *
 * Rows are summed over every day, so a run across a UTC midnight counts
 * the same.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "test_env.h"
#include "usage_support.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS 15000
#define LLM "ledger"

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};
static const char PROVIDERS[] = "[{\"name\":\"" LLM "\",\"type\":\"openai\",\"model\":\"m\"}]";

/* Calls the Llm as token's owner and adds what the answer says to c. */
static void call(struct test_env *env, const char *token, bool stream, struct usage_t_counts *c)
{
    const char *body = stream ? "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
                                "\"count me\"}]}"
                              : "{\"messages\":[{\"role\":\"user\",\"content\":\"count me\"}]}";
    struct http_resp r;
    if (test_call(env, "POST", "/api/v1/llms/" LLM "/infer", token, JSON_HDR, body, &r) != 0) {
        proc_dump(env->mcpd.proc);
        fail_msg("%s call: no complete answer (status %ld): %s", stream ? "a streaming" : "a",
                 r.status, r.body);
    }
    usage_t_add_answer(c, r.status, r.body);
    http_resp_free(&r);
}

/* The usage of owner once it counts at least requests calls. */
static struct usage_t_counts read_usage(struct test_env *env, const char *token, const char *owner,
                                        int64_t requests)
{
    json_t *j = usage_t_wait(env, token, NULL, owner, LLM, requests);
    struct usage_t_counts c = usage_t_sum(j, owner, LLM);
    /* the totals are the rows' sums */
    usage_t_expect(
        "totals", usage_t_sum(j, NULL, NULL),
        (struct usage_t_counts){
            json_integer_value(json_object_get(json_object_get(j, "totals"), "requests")),
            json_integer_value(json_object_get(json_object_get(j, "totals"), "errors")),
            json_integer_value(json_object_get(json_object_get(j, "totals"), "promptTokens")),
            json_integer_value(json_object_get(json_object_get(j, "totals"), "completionTokens"))});
    json_decref(j);
    return c;
}

/* Every way a result reaches mcpd, and the usage it carries. */
static void test_sums_match_the_relayed_answers(void **state)
{
    (void)state;
    struct fixture *f = fixture_start(NULL, PROVIDERS);
    assert_non_null(f);
    struct test_env *env = f->env;
    const char *tok = env->mcpd.token;
    struct usage_t_counts want = {0};

    /* whole answers with OpenAI's usage */
    fake_publisher_set_script(f->fp,
                              &(struct fp_script){.prompt_tokens = 11, .completion_tokens = 7});
    for (int i = 0; i < 3; i++)
        call(env, tok, false, &want);
    assert_int_equal(want.prompt, 33); /* the answers did carry it */

    /* per-chunk posts, the usage in a last chunk of its own */
    fake_publisher_set_script(
        f->fp, &(struct fp_script){.chunks = 4, .prompt_tokens = 5, .completion_tokens = 4});
    call(env, tok, true, &want);
    call(env, tok, true, &want);

    /* a streamed post whose last event before [DONE] has the usage */
    fake_publisher_set_script(
        f->fp, &(struct fp_script){
                   .mode = FP_STREAMED, .chunks = 3, .prompt_tokens = 8, .completion_tokens = 3});
    call(env, tok, true, &want);

    /* Anthropic's events: input tokens at the start, output at the end */
    static const char *const anthropic[] = {
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
        "\"usage\":{\"input_tokens\":13,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"end_turn\"},\"usage\":{\"output_tokens\":29}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        NULL,
    };
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_STREAMED, .events = anthropic});
    call(env, tok, true, &want);

    /* answers without usage count as requests with no tokens */
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_ANSWER});
    call(env, tok, false, &want);
    call(env, tok, true, &want);

    /* failures: a publisher error, a backend's refusal, a broken stream */
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_ERROR});
    call(env, tok, false, &want);
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_STATUS, .status = 429});
    call(env, tok, false, &want);
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_STREAMED, .cut_after = 2});
    call(env, tok, true, &want);

    assert_int_equal(want.requests, 12);
    assert_int_equal(want.errors, 3);
    assert_int_equal(want.prompt, 3 * 11 + 2 * 5 + 8 + 13);
    assert_int_equal(want.completion, 3 * 7 + 2 * 4 + 3 + 29);
    /* The usage route writes what is counted first: no waiting needed. */
    usage_t_expect("alice's usage", read_usage(env, tok, "alice", want.requests), want);
    assert_int_equal(fixture_stop(f), 0);
}

/* Which rows a token reads, and the filters. */
static void test_owners_and_filters(void **state)
{
    (void)state;
    struct fixture *f = fixture_start(NULL, PROVIDERS);
    assert_non_null(f);
    struct test_env *env = f->env;
    char *bob = mcpd_create_token(env->mcpd.db, "bob");
    const char *admin_flags[] = {"--admin", NULL};
    char *root = mcpd_create_token_with(env->mcpd.db, "root", admin_flags, NULL);
    assert_non_null(bob);
    assert_non_null(root);
    fake_publisher_set_script(f->fp,
                              &(struct fp_script){.prompt_tokens = 2, .completion_tokens = 1});
    struct usage_t_counts alice_want = {0}, bob_want = {0};
    call(env, env->mcpd.token, false, &alice_want);
    call(env, bob, false, &bob_want);
    call(env, bob, true, &bob_want);
    json_decref(usage_t_wait(env, root, NULL, NULL, NULL, 3));

    long status;
    /* each owner sees its own rows only */
    json_t *j = usage_t_get(env, env->mcpd.token, NULL, &status);
    assert_int_equal(status, 200);
    usage_t_expect("alice's view", usage_t_sum(j, NULL, NULL), alice_want);
    json_decref(j);
    j = usage_t_get(env, bob, "owner=bob", &status);
    assert_int_equal(status, 200);
    usage_t_expect("bob's view", usage_t_sum(j, NULL, NULL), bob_want);
    json_decref(j);
    /* another owner's needs an admin token */
    j = usage_t_get(env, bob, "owner=alice", &status);
    assert_int_equal(status, 403);
    assert_true(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    /* an admin token sees everyone's, and may filter by owner */
    j = usage_t_get(env, root, NULL, &status);
    assert_int_equal(status, 200);
    usage_t_expect("admin: alice", usage_t_sum(j, "alice", LLM), alice_want);
    usage_t_expect("admin: bob", usage_t_sum(j, "bob", LLM), bob_want);
    usage_t_expect("admin: root", usage_t_sum(j, "root", NULL), (struct usage_t_counts){0});
    json_decref(j);
    j = usage_t_get(env, root, "owner=bob", &status);
    usage_t_expect("admin, owner=bob", usage_t_sum(j, NULL, NULL), bob_want);
    json_decref(j);

    /* filters that keep everything, and those that keep nothing */
    j = usage_t_get(env, root, "since=2000-01-01&until=2999-12-31&llm=" LLM, &status);
    assert_int_equal(status, 200);
    assert_int_equal(usage_t_sum(j, NULL, NULL).requests, 3);
    json_decref(j);
    j = usage_t_get(env, root, "since=2000-01-01T00:00:00Z&until=2999-12-31T23:59:59.999%2B02:00",
                    &status);
    assert_int_equal(status, 200);
    assert_int_equal(usage_t_sum(j, NULL, NULL).requests, 3);
    json_decref(j);
    static const char *const none[] = {"since=2999-01-01", "until=1970-01-02", "llm=other",
                                       "owner=nobody"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        j = usage_t_get(env, root, none[i], &status);
        assert_int_equal(status, 200);
        assert_int_equal(json_array_size(json_object_get(j, "usage")), 0);
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(j, "totals"), "requests")), 0);
        json_decref(j);
    }

    /* bad filters: 400 with the error shape */
    static const char *const bad[] = {
        "since=yesterday",
        "until=2026-02-30",
        "since=2026-1-5",
        "llm=no%20spaces",
        "owner=a&owner=b",
        "colour=blue",
        "since=",
        "llm",
        "since=2026-12-08&until=2026-12-07",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = usage_t_get(env, root, bad[i], &status);
        if (status != 400 || !json_is_string(json_object_get(j, "error")))
            fail_msg("?%s: status %ld, want 400 with an error", bad[i], status);
        json_decref(j);
    }
    /* no token, or an unknown one */
    struct http_resp r;
    test_call(env, "GET", "/api/v1/usage", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    free(bob);
    free(root);
    assert_int_equal(fixture_stop(f), 0);
}

/* mcpd writes what it counted when it stops: a restart finds it, though
 * nobody read the usage (which would have written it) before. */
static void test_counts_survive_a_restart(void **state)
{
    (void)state;
    struct fixture *f = fixture_start(NULL, PROVIDERS);
    assert_non_null(f);
    struct test_env *env = f->env;
    fake_publisher_set_script(f->fp,
                              &(struct fp_script){.prompt_tokens = 100, .completion_tokens = 10});
    struct usage_t_counts want = {0};
    for (int i = 0; i < 4; i++)
        call(env, env->mcpd.token, i % 2 == 1, &want);
    fake_publisher_stop(f->fp);
    f->fp = NULL;
    assert_int_equal(mcpd_stop(&env->mcpd), 0);
    assert_int_equal(mcpd_start(&env->mcpd, env->dir, NULL), 0);
    usage_t_expect("after the restart", read_usage(env, env->mcpd.token, "alice", want.requests),
                   want);
    assert_int_equal(fixture_stop(f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_match_the_relayed_answers),
        cmocka_unit_test(test_owners_and_filters),
        cmocka_unit_test(test_counts_survive_a_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
