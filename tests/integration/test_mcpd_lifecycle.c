/*
 * The lifecycle of rows, streams and connections against the real mcpd:
 * a quick reconnect keeps the rows active, a revoked token's stream is cut
 * off, a frozen publisher's stream is closed by the GC, a restart leaves
 * every row inactive until its publisher binds a stream again, the
 * connection cap refuses what is past it, idle connections are closed but
 * control streams and waiting callers are not, and the database files are
 * private.
 */
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "raw_http.h"
#include "test_env.h"
#include "tmpdir.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};
static const char INFER_BODY[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"ping me\"}]}";

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "2026-01-02T03:04:05.678Z" as ms since the epoch, or -1. */
static int64_t rfc3339_ms(const char *s)
{
    struct tm tm = {0};
    int ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* Creates a token for owner with `mcpd token create`; *id gets its id (as
 * `mcpd token revoke` takes it). Returns the token, a new string. */
static char *create_token(const char *db, const char *owner, long long *id)
{
    const char *argv[] = {MCPD_BIN, "token", "create", "--owner", owner, "--db", db, NULL};
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, NULL, NULL, &out, &err, 30000);
    char *token = NULL;
    const char *at = err ? strstr(err, "created token ") : NULL;
    if (rc == 0 && at && sscanf(at, "created token %lld", id) == 1) {
        out[strcspn(out, "\r\n")] = '\0';
        token = strdup(out);
    } else {
        fprintf(stderr, "mcpd token create failed (%d): %s\n", rc, err ? err : "");
    }
    free(out);
    free(err);
    return token;
}

static int revoke_token(const char *db, long long id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%lld", id);
    const char *argv[] = {MCPD_BIN, "token", "revoke", ids, "--db", db, NULL};
    char *err = NULL;
    int rc = proc_run(argv, NULL, NULL, NULL, &err, 30000);
    if (rc != 0)
        fprintf(stderr, "mcpd token revoke %s failed (%d): %s\n", ids, rc, err ? err : "");
    free(err);
    return rc;
}

static struct http_stream *open_stream_at(const char *base, const char *token, const char *sid)
{
    char hdr[128], url[256];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    snprintf(url, sizeof url, "%s/api/v1/llms/_provider-stream", base);
    const char *headers[] = {hdr, NULL};
    return http_stream_open("GET", url, token, headers, NULL);
}

static struct http_stream *open_stream(struct test_env *env, const char *token, const char *sid)
{
    return open_stream_at(env->mcpd.url, token, sid);
}

static long call_status(struct test_env *env, const char *method, const char *path,
                        const char *token, const char *const headers[], const char *body)
{
    struct http_resp r;
    test_call(env, method, path, token, headers, body, &r);
    long st = r.status;
    http_resp_free(&r);
    return st;
}

/* A caller's inference on name, running in the background. */
static struct http_stream *start_infer(const char *base, const char *token, const char *name)
{
    char url[256];
    snprintf(url, sizeof url, "%s/api/v1/llms/%s/infer", base, name);
    return http_stream_open("POST", url, token, JSON_HDR, INFER_BODY);
}

/* The id of the nth (1-based) task frame on a publisher stream read with
 * http_stream; a new string or NULL. */
static char *nth_task_id(struct http_stream *ps, int nth)
{
    static const char mark[] = "event: task\nid: ";
    char *body = http_stream_body(ps);
    char *p = body;
    for (int i = 0; p && i < nth; i++) {
        p = strstr(p, mark);
        if (p && i < nth - 1)
            p++;
    }
    char *id = p ? strndup(p + sizeof mark - 1, strcspn(p + sizeof mark - 1, "\n")) : NULL;
    free(body);
    return id;
}

/* One non-streaming inference on name whose task comes down the publisher
 * stream ps (as its nth task), answered by posting a result for session
 * sid. Returns the caller's status (-1 when it never finished). */
static long relay_once(struct test_env *env, struct http_stream *ps, const char *sid,
                       const char *name, int nth)
{
    struct http_stream *c = start_infer(env->mcpd.url, env->mcpd.token, name);
    if (http_stream_wait_for(ps, "event: task\nid: ", nth, 5000) == 0) {
        char *id = nth_task_id(ps, nth);
        char path[160], hdr[128];
        snprintf(path, sizeof path, "/api/v1/llms/_provider-task/%s/result", id);
        snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
        const char *headers[] = {hdr, "Content-Type: application/json", NULL};
        long st = call_status(env, "POST", path, env->mcpd.token, headers,
                              "{\"status\":200,\"body\":{\"answered\":true}}");
        if (st != 200)
            fprintf(stderr, "result post for task %s: %ld\n", id, st);
        free(id);
    }
    long status = http_stream_wait_done(c, 5000) == 0 ? http_stream_status(c) : -1;
    char *body = http_stream_body(c);
    if (status != 200)
        fprintf(stderr, "inference on %s: %ld %s\n", name, status, body);
    free(body);
    http_stream_close(c);
    return status;
}

/* A field of GET /api/v1/llms/NAME as a new string (NULL when absent or null). */
static char *llm_field(struct test_env *env, const char *name, const char *field)
{
    char path[160];
    snprintf(path, sizeof path, "/api/v1/llms/%s", name);
    struct http_resp r;
    test_call(env, "GET", path, env->mcpd.token, NULL, NULL, &r);
    char *v = NULL;
    json_t *o = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(o, field));
    if (s)
        v = strdup(s);
    json_decref(o);
    http_resp_free(&r);
    return v;
}

static void assert_status_now(struct test_env *env, const char *name, const char *want)
{
    char *s = llm_field(env, name, "status");
    if (!s || strcmp(s, want) != 0) {
        proc_dump(env->mcpd.proc);
        fail_msg("%s is '%s', expected '%s'", name, s ? s : "(none)", want);
    }
    free(s);
}

static void expect_status_within(struct test_env *env, const char *name, const char *want,
                                 int timeout_ms)
{
    if (test_wait_status(env, name, want, timeout_ms) == 0)
        return;
    char *s = llm_field(env, name, "status");
    proc_dump(env->mcpd.proc);
    fail_msg("%s is still '%s' after %d ms, expected '%s'", name, s ? s : "(none)", timeout_ms,
             want);
}

/* Waits until fp's control stream has ended. fake_publisher_wait() gives
 * up as soon as the stream is over, so waiting for bytes that never come
 * returns early exactly then. 0 when it ended within timeout_ms. */
static int fp_wait_closed(struct fake_publisher *fp, int timeout_ms)
{
    int64_t t0 = mono_ms();
    fake_publisher_wait(fp, "\n(never sent)\n", 1, timeout_ms);
    return mono_ms() - t0 < timeout_ms ? 0 : -1;
}

static long heartbeat(struct test_env *env, const char *token, const char *sid, char **body)
{
    char hdr[128];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    const char *headers[] = {hdr, "Content-Type: application/json", NULL};
    struct http_resp r;
    test_call(env, "POST", "/api/v1/llms/_provider-heartbeat", token, headers, "{}", &r);
    long st = r.status;
    if (body)
        *body = strdup(r.body);
    http_resp_free(&r);
    return st;
}

/* ---- 1. quick reconnect ---- */

/* A publisher that reconnects opens its new stream B before mcpd has seen
 * the old stream A close. A's close must not flip the rows of the session
 * that B now holds: they stay active and inference is served at once. */
static void test_quick_reconnect_keeps_rows_active(void **state)
{
    (void)state;
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    const char *t = env->mcpd.token;
    static const char P[] = "[{\"name\":\"qr1\",\"type\":\"openai\",\"model\":\"q\"}]";
    long st;
    char *sid = test_register(env, t, NULL, P, &st);
    assert_int_equal(st, 200);
    struct http_stream *a = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(a, "event: hello", 1, 5000), 0);
    assert_status_now(env, "qr1", "active");

    /* Reconnect: register with the session id, open B while A is open. */
    char *again = test_register(env, t, sid, P, &st);
    assert_int_equal(st, 200);
    assert_string_equal(again, sid);
    free(again);
    struct http_stream *b = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(b, "event: hello", 1, 5000), 0);
    /* A is ended by mcpd (B replaced it) and closed by the publisher. */
    assert_int_equal(http_stream_wait_done(a, 5000), 0);
    http_stream_close(a);
    /* Once mcpd has handled A's end, the rows are still B's, and active. */
    proc_expect(env->mcpd.proc, "control stream closed", 1, 5000);
    char *log = proc_output(env->mcpd.proc);
    bool flipped = strstr(log, "its rows are inactive") != NULL;
    free(log);
    if (flipped) {
        proc_dump(env->mcpd.proc);
        fail_msg("closing the replaced stream A marked the rows of live stream B inactive");
    }
    assert_status_now(env, "qr1", "active");
    assert_int_equal(relay_once(env, b, sid, "qr1", 1), 200);
    assert_status_now(env, "qr1", "active");

    /* Register again, close the stream before the new one is opened: the
     * rows go inactive, and come back once the new stream is bound. */
    again = test_register(env, t, sid, P, &st);
    assert_int_equal(st, 200);
    free(again);
    http_stream_close(b);
    expect_status_within(env, "qr1", "inactive", 5000);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/qr1/infer", t, JSON_HDR, INFER_BODY),
                     503);
    struct http_stream *c = open_stream(env, t, sid);
    assert_int_equal(http_stream_wait_for(c, "event: hello", 1, 5000), 0);
    /* Bound and revived before hello went out. */
    assert_status_now(env, "qr1", "active");
    assert_int_equal(relay_once(env, c, sid, "qr1", 1), 200);
    http_stream_close(c);
    expect_status_within(env, "qr1", "inactive", 5000);
    free(sid);
    assert_int_equal(test_env_stop(env), 0);
}

/* ---- 2. revocation ---- */

/* Revoking a publisher's token cuts its control stream off within the
 * auth cache's lifetime: its waiting caller gets 502, its rows go
 * inactive, the token gets 401 everywhere. Another token of the same
 * owner, and the stream opened with it, go on working. */
static void test_revoked_token_closes_its_stream(void **state)
{
    (void)state;
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    long long pub_id = 0, other_id = 0;
    char *pub = create_token(env->mcpd.db, "pat", &pub_id);
    char *other = create_token(env->mcpd.db, "pat", &other_id);
    assert_non_null(pub);
    assert_non_null(other);
    assert_true(pub_id != other_id);

    struct fake_publisher *fp = fake_publisher_start(
        env->mcpd.url, pub, "[{\"name\":\"rv1\",\"type\":\"openai\",\"model\":\"q\"}]", NULL);
    assert_non_null(fp);
    fake_publisher_set_script(fp, &(struct fp_script){.mode = FP_SILENT});
    /* The same owner's second publisher, with the other token. */
    struct fake_publisher *fp2 = fake_publisher_start(
        env->mcpd.url, other, "[{\"name\":\"rv2\",\"type\":\"openai\",\"model\":\"q\"}]", NULL);
    assert_non_null(fp2);
    char *sid = strdup(fake_publisher_session(fp));

    /* A caller with the other token waits on a task sent to fp. */
    struct http_stream *caller = start_infer(env->mcpd.url, other, "rv1");
    assert_int_equal(fake_publisher_wait(fp, "event: task", 1, 5000), 0);

    int64_t t0 = mono_ms();
    assert_int_equal(revoke_token(env->mcpd.db, pub_id), 0);

    /* The stream is closed and the caller fails, well inside the limit. */
    if (fp_wait_closed(fp, 15000) < 0) {
        proc_dump(env->mcpd.proc);
        fail_msg("the revoked token's control stream is still open 15 s after the revocation");
    }
    int64_t closed_ms = mono_ms() - t0;
    assert_int_equal(http_stream_wait_done(caller, 15000), 0);
    int64_t caller_ms = mono_ms() - t0;
    long cst = http_stream_status(caller);
    char *cbody = http_stream_body(caller);
    if (cst != 502 || closed_ms > 8000 || caller_ms > 8000) {
        proc_dump(env->mcpd.proc);
        fail_msg("after the revocation: stream closed after %lld ms, caller got %ld after %lld "
                 "ms (%s); expected 502, both within 8 s",
                 (long long)closed_ms, cst, (long long)caller_ms, cbody);
    }
    free(cbody);
    http_stream_close(caller);
    expect_status_within(env, "rv1", "inactive", 5000);

    /* The sweep that cut the stream off made every worker forget the
     * token: it is refused on every call from now on. */
    for (int i = 0; i < 10; i++) {
        long got = call_status(env, "GET", "/api/v1/llms", pub, NULL, NULL);
        if (got != 401) {
            proc_dump(env->mcpd.proc);
            fail_msg("call %d with the revoked token, %lld ms after the revocation and after "
                     "its stream was cut off: %ld, expected 401",
                     i + 1, (long long)(mono_ms() - t0), got);
        }
    }
    char hdr[128];
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
    const char *sh[] = {hdr, NULL};
    assert_int_equal(heartbeat(env, pub, sid, NULL), 401);
    assert_int_equal(call_status(env, "GET", "/api/v1/llms/_provider-stream", pub, sh, NULL), 401);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/_provider-register", pub, JSON_HDR,
                                 "{\"providers\":[{\"name\":\"rv3\",\"type\":\"openai\","
                                 "\"model\":\"q\"}]}"),
                     401);
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/rv1/infer", pub, JSON_HDR, INFER_BODY),
                     401);

    /* The other token and its stream are untouched. */
    assert_int_equal(call_status(env, "GET", "/api/v1/llms", other, NULL, NULL), 200);
    assert_status_now(env, "rv2", "active");
    struct http_resp r;
    test_call(env, "POST", "/api/v1/llms/rv2/infer", other, JSON_HDR, INFER_BODY, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "echo: ping me"));
    http_resp_free(&r);
    fake_publisher_stop(fp);
    fake_publisher_stop(fp2);
    free(sid);
    free(pub);
    free(other);
    assert_int_equal(test_env_stop(env), 0);
}

/* ---- 3. frozen publisher ---- */

/* A publisher that stays connected but stops heartbeating: when the GC
 * finds its rows stale it closes the stream, and the caller waiting on it
 * gets 502 at once rather than at the inference timeout. The fake
 * publisher never heartbeats on its own. */
static void test_frozen_publisher_is_cut_off_by_gc(void **state)
{
    (void)state;
    const char *args[] = {
        "--heartbeat-timeout", "1s", "--gc-interval", "200ms", "--infer-timeout", "60s", NULL};
    struct fixture *f =
        fixture_start(args, "[{\"name\":\"fz1\",\"type\":\"openai\",\"model\":\"q\"}]");
    assert_non_null(f);
    struct test_env *env = f->env;
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_SILENT});
    /* One heartbeat, so the second of grace starts now. */
    char *hb = NULL;
    assert_int_equal(heartbeat(env, env->mcpd.token, fake_publisher_session(f->fp), &hb), 200);
    assert_string_equal(hb, "{\"ok\":true,\"revived\":0}");
    free(hb);
    int64_t t0 = mono_ms();
    struct http_stream *caller = start_infer(env->mcpd.url, env->mcpd.token, "fz1");
    if (fake_publisher_wait(f->fp, "event: task", 1, 5000) < 0) {
        char *body = http_stream_body(caller);
        fail_msg("the task never reached the publisher (caller: %ld %s)",
                 http_stream_status(caller), body);
    }
    if (http_stream_wait_done(caller, 15000) < 0) {
        proc_dump(env->mcpd.proc);
        fail_msg("the caller of a frozen publisher is still waiting 15 s later (infer timeout "
                 "60 s, heartbeat timeout 1 s)");
    }
    int64_t waited = mono_ms() - t0;
    long cst = http_stream_status(caller);
    char *cbody = http_stream_body(caller);
    if (cst != 502 || waited > 8000) {
        proc_dump(env->mcpd.proc);
        fail_msg("the caller of a frozen publisher got %ld after %lld ms (%s); expected 502 "
                 "soon after the 1 s heartbeat timeout",
                 cst, (long long)waited, cbody);
    }
    free(cbody);
    http_stream_close(caller);
    /* It was the GC that ended it, not something sooner. */
    assert_true(waited >= 900);
    expect_status_within(env, "fz1", "inactive", 5000);
    if (fp_wait_closed(f->fp, 5000) < 0) {
        proc_dump(env->mcpd.proc);
        fail_msg("the frozen publisher's control stream is still open after its rows went "
                 "inactive");
    }
    proc_expect(env->mcpd.proc, "(1 session(s) closed)", 1, 5000);
    assert_int_equal(fixture_stop(f), 0);
}

/* ---- 4. restart ---- */

static void stop_killed(struct mcpd *m)
{
    proc_free(m->proc);
    m->proc = NULL;
    free(m->db);
    m->db = NULL;
}

/* A clean stop leaves the rows of open streams inactive (stamped before the
 * next start); after a kill -9 the next start marks every virtual row
 * inactive; either way a row is active again (or hibernating, as it was
 * registered) only once its publisher binds a stream, not on a heartbeat
 * alone. */
static void test_restart_leaves_rows_inactive_until_bound(void **state)
{
    (void)state;
    /* SIGTERM */
    struct test_env *env = test_env_start(NULL);
    assert_non_null(env);
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"rs0\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    struct http_stream *s = open_stream(env, env->mcpd.token, sid);
    assert_int_equal(http_stream_wait_for(s, "event: hello", 1, 5000), 0);
    assert_status_now(env, "rs0", "active");
    assert_int_equal(mcpd_stop(&env->mcpd), 0);
    int64_t stopped_at = wall_ms();
    assert_int_equal(http_stream_wait_done(s, 5000), 0);
    http_stream_close(s);
    const char *none[] = {NULL};
    assert_int_equal(mcpd_start(&env->mcpd, env->dir, none), 0);
    assert_status_now(env, "rs0", "inactive");
    char *since = llm_field(env, "rs0", "inactiveSince");
    int64_t since_ms = rfc3339_ms(since);
    if (since_ms < 0 || since_ms > stopped_at)
        fail_msg("after SIGTERM the row was not marked inactive by the stop: inactiveSince %s, "
                 "stop finished at %lld",
                 since ? since : "null", (long long)stopped_at);
    free(since);
    free(sid);
    assert_int_equal(test_env_stop(env), 0);

    /* kill -9 */
    env = test_env_start(NULL);
    assert_non_null(env);
    const char *t = env->mcpd.token;
    char *sid1 = test_register(env, t, NULL,
                               "[{\"name\":\"rk1\",\"type\":\"openai\",\"model\":\"q\"},"
                               "{\"name\":\"rk2\",\"type\":\"openai\",\"model\":\"q\"}]",
                               &st);
    assert_int_equal(st, 200);
    char *sid2 = test_register(env, t, NULL,
                               "[{\"name\":\"rh1\",\"type\":\"openai\",\"model\":\"q\","
                               "\"initialStatus\":\"hibernating\"}]",
                               &st);
    assert_int_equal(st, 200);
    struct http_stream *s1 = open_stream(env, t, sid1);
    struct http_stream *s2 = open_stream(env, t, sid2);
    assert_int_equal(http_stream_wait_for(s1, "event: hello", 1, 5000), 0);
    assert_int_equal(http_stream_wait_for(s2, "event: hello", 1, 5000), 0);
    assert_status_now(env, "rk1", "active");
    assert_status_now(env, "rk2", "active");
    assert_status_now(env, "rh1", "hibernating");
    int64_t killed_at = wall_ms();
    assert_int_equal(proc_signal(env->mcpd.proc, SIGKILL), 0);
    assert_int_equal(proc_wait_exit(env->mcpd.proc, 10000), 128 + SIGKILL);
    stop_killed(&env->mcpd);
    assert_int_equal(http_stream_wait_done(s1, 5000), 0);
    assert_int_equal(http_stream_wait_done(s2, 5000), 0);
    http_stream_close(s1);
    http_stream_close(s2);

    assert_int_equal(mcpd_start(&env->mcpd, env->dir, none), 0);
    t = env->mcpd.token; /* a fresh token for alice */
    struct http_resp r;
    test_call(env, "GET", "/api/v1/llms", t, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *arr = json_loads(r.body, 0, NULL);
    http_resp_free(&r);
    assert_int_equal(json_array_size(arr), 3);
    size_t i;
    json_t *row;
    json_array_foreach(arr, i, row)
    {
        const char *name = json_string_value(json_object_get(row, "name"));
        const char *status = json_string_value(json_object_get(row, "status"));
        int64_t since_k = rfc3339_ms(json_string_value(json_object_get(row, "inactiveSince")));
        if (!status || strcmp(status, "inactive") != 0 || since_k < killed_at)
            fail_msg("after kill -9 and a restart, %s is '%s' (inactiveSince %lld, killed at "
                     "%lld); expected inactive",
                     name, status ? status : "?", (long long)since_k, (long long)killed_at);
    }
    json_decref(arr);
    /* No stream: inference is refused at once. */
    assert_int_equal(call_status(env, "POST", "/api/v1/llms/rk1/infer", t, JSON_HDR, INFER_BODY),
                     503);
    /* A heartbeat alone revives nothing. */
    char *hb = NULL;
    assert_int_equal(heartbeat(env, t, sid1, &hb), 200);
    assert_string_equal(hb, "{\"ok\":true,\"revived\":0}");
    free(hb);
    assert_status_now(env, "rk1", "inactive");
    assert_status_now(env, "rk2", "inactive");
    /* Binding the stream does, for every row of the session, before hello. */
    s1 = open_stream(env, t, sid1);
    assert_int_equal(http_stream_wait_for(s1, "event: hello", 1, 5000), 0);
    assert_status_now(env, "rk1", "active");
    assert_status_now(env, "rk2", "active");
    assert_status_now(env, "rh1", "inactive");
    assert_int_equal(relay_once(env, s1, sid1, "rk2", 1), 200);
    /* The hibernating registration comes back as hibernating. */
    s2 = open_stream(env, t, sid2);
    assert_int_equal(http_stream_wait_for(s2, "event: hello", 1, 5000), 0);
    assert_status_now(env, "rh1", "hibernating");
    /* And a heartbeat keeps it so. */
    hb = NULL;
    assert_int_equal(heartbeat(env, t, sid2, &hb), 200);
    assert_string_equal(hb, "{\"ok\":true,\"revived\":0}");
    free(hb);
    assert_status_now(env, "rh1", "hibernating");
    http_stream_close(s1);
    http_stream_close(s2);
    free(sid1);
    free(sid2);
    assert_int_equal(test_env_stop(env), 0);
}

/* ---- 5. connection cap ---- */

/* Sends GET /healthz on c and reads the answer; its status, or a
 * raw_result. */
static int healthz_on(struct raw_conn *c, int timeout_ms)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (raw_send(c, req, sizeof req - 1) < 0)
        return RAW_BROKEN;
    struct raw_resp r;
    enum raw_result rc = raw_read_response(c, &r, timeout_ms);
    if (rc != RAW_OK)
        return rc;
    int st = r.status;
    raw_resp_free(&r);
    return st;
}

static const char *outcome(int st)
{
    static char buf[32];
    switch (st) {
    case RAW_CLOSED:
        return "closed";
    case RAW_TIMEOUT:
        return "no answer";
    case RAW_BROKEN:
        return "broken";
    default:
        snprintf(buf, sizeof buf, "%d", st);
        return buf;
    }
}

/* With --max-connections 20, connections past the cap are refused (closed
 * by mcpd) instead of left waiting unanswered; the 20 keep working, and
 * once some of them close a new connection is served. */
static void test_connection_cap_refuses_the_excess(void **state)
{
    (void)state;
    enum { CAP = 20, N = 30 };
    const char *args[] = {"--max-connections", "20", NULL};
    struct test_env *env = test_env_start(args);
    assert_non_null(env);
    struct raw_conn c[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(raw_connect(&c[i], env->mcpd.port, 0), 0);

    /* Which of them mcpd closes, within 3 s. */
    bool closed[N] = {false};
    int nclosed = 0;
    int64_t deadline = mono_ms() + 3000;
    while (nclosed < N - CAP && mono_ms() < deadline) {
        struct pollfd pfd[N];
        int idx[N], n = 0;
        for (int i = 0; i < N; i++) {
            if (!closed[i]) {
                pfd[n] = (struct pollfd){.fd = c[i].fd, .events = POLLIN | POLLRDHUP};
                idx[n++] = i;
            }
        }
        int left = (int)(deadline - mono_ms());
        if (poll(pfd, (nfds_t)n, left > 0 ? left : 0) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            char b;
            ssize_t got = recv(c[idx[k]].fd, &b, 1, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                closed[idx[k]] = true;
                nclosed++;
            }
        }
    }
    /* The ones kept are served. */
    int served = 0, kept = 0;
    char kept_report[512] = "";
    for (int i = 0; i < N && kept < CAP; i++) {
        if (closed[i])
            continue;
        kept++;
        int stt = healthz_on(&c[i], 2000);
        if (stt == 200)
            served++;
        else
            snprintf(kept_report + strlen(kept_report), sizeof kept_report - strlen(kept_report),
                     " #%d:%s", i, outcome(stt));
    }
    /* One past the cap that was not closed: what happens to it. */
    const char *excess = "-";
    for (int i = N - 1; i >= CAP; i--) {
        if (!closed[i]) {
            excess = outcome(healthz_on(&c[i], 1000));
            break;
        }
    }
    /* Free five slots; a new connection is then served, once mcpd has
     * seen them close (a connection refused before that is tried again). */
    for (int i = 0, n = 0; i < N && n < 5; i++) {
        if (!closed[i]) {
            raw_close(&c[i]);
            closed[i] = true;
            n++;
        }
    }
    int fresh_st = RAW_CLOSED, attempts = 0;
    deadline = mono_ms() + 5000;
    while (fresh_st != 200 && mono_ms() < deadline) {
        struct raw_conn fresh;
        assert_int_equal(raw_connect(&fresh, env->mcpd.port, 0), 0);
        attempts++;
        int left = (int)(deadline - mono_ms());
        fresh_st = healthz_on(&fresh, left > 0 ? left : 0);
        raw_close(&fresh);
    }
    if (nclosed != N - CAP || served != CAP || fresh_st != 200) {
        proc_dump(env->mcpd.proc);
        fail_msg("--max-connections %d, %d idle connections: %d closed by mcpd within 3 s "
                 "(expected %d); /healthz answered 200 on %d of the first %d kept%s; one past "
                 "the cap that stayed open: %s; after closing 5, a new connection: %s (%d "
                 "attempt(s) within 5 s)",
                 CAP, N, nclosed, N - CAP, served, kept, kept_report, excess, outcome(fresh_st),
                 attempts);
    }
    for (int i = 0; i < N; i++)
        raw_close(&c[i]);
    assert_int_equal(test_env_stop(env), 0);
}

/* ---- 6. idle connections ---- */

/* With --connection-timeout 1s an idle keep-alive connection is closed,
 * while a control stream idle far longer keeps its pings coming and a
 * caller that waits 3 s on a slow task gets its answer. */
static void test_idle_timeout_spares_streams_and_waiting_callers(void **state)
{
    (void)state;
    const char *args[] = {"--connection-timeout", "1s", "--ping-interval", "500ms", NULL};
    struct fixture *f =
        fixture_start(args, "[{\"name\":\"slow1\",\"type\":\"openai\",\"model\":\"q\"}]");
    assert_non_null(f);
    struct test_env *env = f->env;

    /* An idle keep-alive connection is closed. */
    struct raw_conn kc;
    assert_int_equal(raw_connect(&kc, env->mcpd.port, 0), 0);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(raw_send(&kc, req, sizeof req - 1), 0);
    struct raw_resp rr;
    assert_int_equal(raw_read_response(&kc, &rr, 5000), RAW_OK);
    assert_int_equal(rr.status, 200);
    assert_false(raw_resp_has_token(&rr, "Connection", "close"));
    raw_resp_free(&rr);
    int64_t t_idle = mono_ms();
    enum raw_result kr = raw_wait_closed(&kc, 6000);
    int64_t idle_ms = mono_ms() - t_idle;
    raw_close(&kc);
    if (kr != RAW_OK)
        fail_msg("an idle keep-alive connection was not closed within 6 s (--connection-timeout "
                 "1s): %d",
                 kr);

    /* A caller waits 3 s on a slow task meanwhile. */
    fake_publisher_set_script(f->fp, &(struct fp_script){.mode = FP_ANSWER, .delay_ms = 3000});
    int64_t t_call = mono_ms();
    struct http_stream *caller = start_infer(env->mcpd.url, env->mcpd.token, "slow1");

    /* An idle control stream of its own. */
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"idle1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    struct http_stream *s = open_stream(env, env->mcpd.token, sid);
    assert_int_equal(http_stream_wait_for(s, "event: hello", 1, 5000), 0);
    int64_t t_hello = mono_ms();
    int pings = 1;
    while (mono_ms() - t_hello < 3000) {
        if (http_stream_wait_for(s, ": ping", pings, 5000) < 0) {
            char *body = http_stream_body(s);
            proc_dump(env->mcpd.proc);
            fail_msg("ping %d never came, %lld ms after hello (stream %s): %s", pings,
                     (long long)(mono_ms() - t_hello),
                     http_stream_wait_done(s, 0) ? "open" : "ended", body);
        }
        pings++;
    }
    /* Past 3 s, and they keep coming. */
    assert_int_equal(http_stream_wait_for(s, ": ping", pings + 2, 5000), 0);
    assert_int_not_equal(http_stream_wait_done(s, 0), 0);
    assert_status_now(env, "idle1", "active");

    assert_int_equal(http_stream_wait_done(caller, 10000), 0);
    int64_t call_ms = mono_ms() - t_call;
    long cst = http_stream_status(caller);
    char *cbody = http_stream_body(caller);
    if (cst != 200 || !strstr(cbody, "echo: ping me")) {
        proc_dump(env->mcpd.proc);
        fail_msg("a caller waiting on a 3 s task got %ld after %lld ms: %s", cst,
                 (long long)call_ms, cbody);
    }
    assert_true(call_ms >= 3000);
    free(cbody);
    http_stream_close(caller);
    http_stream_close(s);
    free(sid);
    /* For the report: how long the idle connection lived. */
    print_message("idle keep-alive connection closed after %lld ms\n", (long long)idle_ms);
    assert_int_equal(fixture_stop(f), 0);
}

/* The same with pings sparser than the connection timeout: a control
 * stream is idle for 2 s at a time, twice the timeout, and stays open. */
static void test_idle_timeout_spares_streams_between_sparse_pings(void **state)
{
    (void)state;
    const char *args[] = {"--connection-timeout", "1s", "--ping-interval", "2s", NULL};
    struct test_env *env = test_env_start(args);
    assert_non_null(env);
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"sparse1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    struct http_stream *s = open_stream(env, env->mcpd.token, sid);
    assert_int_equal(http_stream_wait_for(s, "event: hello", 1, 5000), 0);
    int64_t t_hello = mono_ms();
    if (http_stream_wait_for(s, ": ping", 2, 8000) < 0) {
        char *body = http_stream_body(s);
        proc_dump(env->mcpd.proc);
        fail_msg("a control stream with 2 s pings and a 1 s connection timeout %s after %lld ms: "
                 "%s",
                 http_stream_wait_done(s, 0) == 0 ? "ended" : "got no second ping",
                 (long long)(mono_ms() - t_hello), body);
    }
    assert_int_not_equal(http_stream_wait_done(s, 0), 0);
    assert_status_now(env, "sparse1", "active");
    http_stream_close(s);
    free(sid);
    assert_int_equal(test_env_stop(env), 0);
}

/* ---- 7. database files ---- */

/* The database holds token hashes: it and its -wal and -shm files are
 * readable by their owner alone, whatever the umask. */
static void test_database_files_are_private(void **state)
{
    (void)state;
    mode_t old = umask(0);
    struct test_env *env = test_env_start(NULL);
    umask(old);
    assert_non_null(env);
    long st;
    char *sid = test_register(env, env->mcpd.token, NULL,
                              "[{\"name\":\"db1\",\"type\":\"openai\",\"model\":\"q\"}]", &st);
    assert_int_equal(st, 200);
    static const char *const names[] = {"mcpd.db", "mcpd.db-wal", "mcpd.db-shm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = tmpdir_path(env->dir, names[i]);
        struct stat sb;
        if (stat(p, &sb) < 0)
            fail_msg("%s: %s", names[i], strerror(errno));
        if ((sb.st_mode & 07777) != 0600)
            fail_msg("%s has mode %04o, expected 0600", names[i], (unsigned)(sb.st_mode & 07777));
        free(p);
    }
    free(sid);
    assert_int_equal(test_env_stop(env), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quick_reconnect_keeps_rows_active),
        cmocka_unit_test(test_revoked_token_closes_its_stream),
        cmocka_unit_test(test_frozen_publisher_is_cut_off_by_gc),
        cmocka_unit_test(test_restart_leaves_rows_inactive_until_bound),
        cmocka_unit_test(test_connection_cap_refuses_the_excess),
        cmocka_unit_test(test_idle_timeout_spares_streams_and_waiting_callers),
        cmocka_unit_test(test_idle_timeout_spares_streams_between_sparse_pings),
        cmocka_unit_test(test_database_files_are_private),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
