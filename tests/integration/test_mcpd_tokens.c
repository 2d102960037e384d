/*
 * Tokens against the real mcpd: an expired token gets 401 like a revoked
 * one, its control stream is closed and its in-flight task fails; "last
 * used" reaches the database within seconds without a write per request,
 * and at shutdown; `token create` with --admin and --expires, and what
 * `token list` shows.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "test_env.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define WAIT_MS 15000

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long get_status(struct test_env *env, const char *path, const char *token)
{
    struct http_resp r;
    test_call(env, "GET", path, token, NULL, NULL, &r);
    long st = r.status;
    http_resp_free(&r);
    return st;
}

/* `mcpd token list` of the database db: its stdout, a new string. */
static char *token_list(const char *db)
{
    const char *argv[] = {MCPD_BIN, "token", "list", "--db", db, NULL};
    char *out = NULL;
    assert_int_equal(proc_run(argv, NULL, NULL, &out, NULL, 30000), 0);
    return out;
}

/* The line of `token list` for token id, split into its columns: ID OWNER
 * ADMIN STATUS CREATED LAST-USED EXPIRES REVOKED. 0, or -1 when absent. */
static int token_row(const char *db, long long id, char cols[8][64])
{
    char *out = token_list(db);
    int rc = -1;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        long long got;
        if (sscanf(line, "%lld", &got) == 1 && got == id &&
            sscanf(line, "%63s %63s %63s %63s %63s %63s %63s %63s", cols[0], cols[1], cols[2],
                   cols[3], cols[4], cols[5], cols[6], cols[7]) == 8) {
            rc = 0;
            break;
        }
    }
    free(out);
    return rc;
}

/* Waits until token id's LAST-USED column is set; its value, or "-". */
static void wait_last_used(struct test_env *env, long long id, int timeout_ms, char out[64])
{
    int64_t end = mono_ms() + timeout_ms;
    char cols[8][64];
    do {
        assert_int_equal(token_row(env->mcpd.db, id, cols), 0);
        if (strcmp(cols[5], "-") != 0)
            break;
        struct timespec pause = {0, 50 * 1000000L}; /* between polls of the database */
        nanosleep(&pause, NULL);
    } while (mono_ms() < end);
    snprintf(out, 64, "%s", cols[5]);
}

/* A publisher whose token expires: from then on its calls get 401, its
 * control stream is closed, the task it holds fails (502 to the caller)
 * and its row goes inactive; another owner's token goes on working. */
static void test_expired_token_is_cut_off(void **state)
{
    (void)state;
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    long long id;
    const char *flags[] = {"--expires", "3s", NULL};
    int64_t created = mono_ms(); /* the token expires 3 s after this at the earliest */
    char *pub = mcpd_create_token_with(env->mcpd.db, "pat", flags, &id);
    assert_non_null(pub);
    struct fake_publisher *fp = fake_publisher_start(
        env->mcpd.url, pub, "[{\"name\":\"ex1\",\"type\":\"openai\",\"model\":\"q\"}]", NULL);
    assert_non_null(fp);
    fake_publisher_set_script(fp, &(struct fp_script){.mode = FP_SILENT});
    char *sid = strdup(fake_publisher_session(fp));
    assert_int_equal(get_status(env, "/api/v1/llms", pub), 200);

    /* alice's caller waits on a task the publisher holds */
    char url[256];
    snprintf(url, sizeof url, "%s/api/v1/llms/ex1/infer", env->mcpd.url);
    struct http_stream *caller =
        http_stream_open("POST", url, env->mcpd.token, JSON_HDR,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"wait\"}]}");
    assert_int_equal(fake_publisher_wait(fp, "event: task", 1, WAIT_MS), 0);
    if (mono_ms() - created >= 3000)
        fail_msg("the setup took longer than the token's life; the machine is too slow");

    /* The stream closes by itself: its wait for a frame that never comes
     * ends when the stream does. */
    fake_publisher_wait(fp, "\n(never sent)\n", 1, WAIT_MS);
    int64_t closed_after = mono_ms() - created;
    assert_int_equal(http_stream_wait_done(caller, WAIT_MS), 0);
    long cst = http_stream_status(caller);
    if (cst != 502 || closed_after < 3000 || closed_after > 3000 + 8000) {
        proc_dump(env->mcpd.proc);
        fail_msg("stream closed %lld ms after the token was made (it expires at 3000), caller "
                 "got %ld; want the close within 8 s of the expiry and 502",
                 (long long)closed_after, cst);
    }
    http_stream_close(caller);
    assert_int_equal(test_wait_status(env, "ex1", "inactive", WAIT_MS), 0);

    /* 401 everywhere, exactly as a revoked token gets */
    char hdr[128];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    const char *sh[] = {hdr, NULL};
    struct http_resp r;
    test_call(env, "GET", "/api/v1/llms", pub, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    assert_non_null(strstr(r.body, "\"error\""));
    http_resp_free(&r);
    assert_int_equal(get_status(env, "/api/v1/llms/_provider-stream", pub), 401);
    test_call(env, "GET", "/api/v1/llms/_provider-stream", pub, sh, NULL, &r);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    test_call(env, "POST", "/v1/chat/completions", pub, JSON_HDR,
              "{\"model\":\"ex1\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);
    assert_int_equal(get_status(env, "/api/v1/llms", env->mcpd.token), 200);

    char cols[8][64];
    assert_int_equal(token_row(env->mcpd.db, id, cols), 0);
    assert_string_equal(cols[1], "pat");
    assert_string_equal(cols[3], "expired");
    assert_string_not_equal(cols[6], "-");
    assert_string_equal(cols[7], "-");
    fake_publisher_stop(fp);
    free(sid);
    free(pub);
    assert_int_equal(test_env_stop(env), 0);
}

/* "Last used" is written every few seconds while mcpd runs, and at
 * shutdown for what was used since. */
static void test_last_used(void **state)
{
    (void)state;
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    long long bob_id, carol_id;
    char *bob = mcpd_create_token_with(env->mcpd.db, "bob", NULL, &bob_id);
    char *carol = mcpd_create_token_with(env->mcpd.db, "carol", NULL, &carol_id);
    assert_non_null(bob);
    assert_non_null(carol);
    char cols[8][64];
    assert_int_equal(token_row(env->mcpd.db, bob_id, cols), 0);
    assert_string_equal(cols[5], "-");

    assert_int_equal(get_status(env, "/api/v1/llms", bob), 200);
    char used[64];
    wait_last_used(env, bob_id, 10000, used);
    if (strcmp(used, "-") == 0) {
        proc_dump(env->mcpd.proc);
        fail_msg("bob's token was used but 'token list' has no last use 10 s later");
    }
    assert_int_equal(strlen(used), 24); /* an RFC 3339 time, like CREATED's */
    assert_int_equal(used[23], 'Z');

    /* Used right before a clean stop: written at shutdown. */
    assert_int_equal(get_status(env, "/api/v1/llms", carol), 200);
    char *db = strdup(env->mcpd.db);
    assert_int_equal(mcpd_stop(&env->mcpd), 0);
    assert_int_equal(token_row(db, carol_id, cols), 0);
    if (strcmp(cols[5], "-") == 0)
        fail_msg("carol's token was used before the shutdown, but has no last use");
    free(db);
    free(bob);
    free(carol);
    tmpdir_remove(env->dir); /* mcpd is stopped already */
    free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expired_token_is_cut_off),
        cmocka_unit_test(test_last_used),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
