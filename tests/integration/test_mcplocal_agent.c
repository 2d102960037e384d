/* mcplocal (the real binary) against the scriptable fake mcpd: register and
 * the session file, the sticky id, heartbeats, reconnects, idle states,
 * bad files and SIGHUP. Timings are shrunk with MCPLOCAL_* variables. */
#include "clock.h"
#include "fake_backend.h"
#include "fake_mcpd.h"
#include "proc.h"
#include "tmpdir.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#define WAIT_MS 10000

struct fx {
    char *dir;
    struct fake_mcpd *fm;
    struct proc *p;
};

static void write_creds(struct fx *x, const char *token)
{
    char text[512];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", fake_mcpd_url(x->fm),
             token);
    tmpdir_write(x->dir, "credentials", text, 0600);
}

static const char CONFIG[] =
    "{\"llm\": {\"providers\": [\n"
    "  {\"name\": \"vllm-local\", \"type\": \"openai\", \"model\": \"served-model\",\n"
    "   \"url\": \"http://127.0.0.1:9/v1\", \"tier\": \"fast\", \"publish\": true},\n"
    "  {\"name\": \"not-mine\", \"type\": \"openai\", \"model\": \"m\",\n"
    "   \"url\": \"http://127.0.0.1:9/v1\"}\n"
    "]}}\n";

static struct proc *start(struct fx *x)
{
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->dir, "--log-level", "debug", NULL};
    const char *env[] = {"MCPLOCAL_BACKOFF_MIN_MS=20", "MCPLOCAL_BACKOFF_MAX_MS=200",
                         "MCPLOCAL_BACKOFF_SEED=1", "MCPLOCAL_SHUTDOWN_GRACE_MS=3000", NULL};
    struct proc *p = proc_start(argv, env, x->dir);
    assert_non_null(p);
    return p;
}

static void wait_stream(struct fx *x, int n)
{
    if (fake_mcpd_wait_stream(x->fm, n, WAIT_MS) != 0) {
        proc_dump(x->p);
        fail_msg("stream %d never opened", n);
    }
}

/* SIGTERM, then the exit code (0 expected: a clean shutdown, no leaks
 * under the sanitizers). *pp is freed and cleared before the caller's
 * assert can fail, so teardown does not free it again. */
static int stop(struct proc **pp)
{
    struct proc *p = *pp;
    *pp = NULL;
    proc_signal(p, SIGTERM);
    int rc = proc_wait_exit(p, WAIT_MS);
    if (rc != 0)
        proc_dump(p);
    proc_free(p);
    return rc;
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    x->dir = tmpdir_create("mcplocal-agent");
    x->fm = fake_mcpd_start();
    *state = x;
    return x->fm ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    if (x->p)
        proc_free(x->p);
    fake_mcpd_stop(x->fm);
    tmpdir_remove(x->dir);
    free(x);
    return 0;
}

static char *read_session(struct fx *x, mode_t *mode)
{
    char *path = tmpdir_path(x->dir, "provider-session");
    struct stat st;
    char *out = NULL;
    if (stat(path, &st) == 0) {
        *mode = st.st_mode & 0777;
        FILE *f = fopen(path, "r");
        char line[256] = "";
        if (f && fgets(line, sizeof line, f))
            out = strdup(line);
        if (f)
            fclose(f);
    }
    free(path);
    return out;
}

static void test_register_and_session_file(void **state)
{
    struct fx *x = *state;
    fake_mcpd_set_token(x->fm, "tok-alice");
    write_creds(x, "tok-alice");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    proc_expect(x->p, "published 1 provider as session sess-1: vllm-local (active)", 1, WAIT_MS);

    struct fake_mcpd_req *reg = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-register", 0);
    assert_non_null(reg);
    assert_string_equal(reg->auth, "Bearer tok-alice");
    json_t *body = json_loads(reg->body, 0, NULL);
    assert_null(json_object_get(body, "providerSessionId")); /* first start: none */
    json_t *provs = json_object_get(body, "providers");
    assert_int_equal(json_array_size(provs), 1); /* publish: false stays home */
    json_t *p0 = json_array_get(provs, 0);
    assert_string_equal(json_string_value(json_object_get(p0, "name")), "vllm-local");
    assert_string_equal(json_string_value(json_object_get(p0, "model")), "served-model");
    assert_string_equal(json_string_value(json_object_get(p0, "tier")), "fast");
    assert_string_equal(json_string_value(json_object_get(p0, "initialStatus")), "active");
    assert_null(strstr(reg->body, "127.0.0.1")); /* the local URL never leaves */
    json_decref(body);
    fake_mcpd_req_free(reg);

    struct fake_mcpd_req *st = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-stream", 0);
    assert_string_equal(st->session, "sess-1");
    assert_string_equal(st->auth, "Bearer tok-alice");
    fake_mcpd_req_free(st);

    mode_t mode = 0;
    char *sid = read_session(x, &mode);
    assert_string_equal(sid, "sess-1\n");
    assert_int_equal(mode, 0600);
    free(sid);

    assert_int_equal(stop(&x->p), 0);
    /* The stream is closed at shutdown. */
    assert_int_equal(fake_mcpd_wait_no_stream(x->fm, WAIT_MS), 0);
}

static void test_sticky_session_on_restart(void **state)
{
    struct fx *x = *state;
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    assert_int_equal(stop(&x->p), 0);

    x->p = start(x);
    wait_stream(x, 2);
    struct fake_mcpd_req *reg = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-register", 1);
    assert_non_null(strstr(reg->body, "\"providerSessionId\":\"sess-1\""));
    fake_mcpd_req_free(reg);
    struct fake_mcpd_req *st = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-stream", 1);
    assert_string_equal(st->session, "sess-1");
    fake_mcpd_req_free(st);
    assert_int_equal(stop(&x->p), 0);

    /* mcpd forgot everything: the stored id is offered, a new one adopted. */
    fake_mcpd_forget_sessions(x->fm);
    x->p = start(x);
    wait_stream(x, 3);
    reg = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-register", 2);
    assert_non_null(strstr(reg->body, "\"providerSessionId\":\"sess-1\""));
    fake_mcpd_req_free(reg);
    proc_expect(x->p, "as session sess-2", 1, WAIT_MS);
    mode_t mode = 0;
    char *sid = read_session(x, &mode);
    assert_string_equal(sid, "sess-2\n");
    free(sid);
    assert_int_equal(stop(&x->p), 0);
}

static void test_heartbeat_cadence(void **state)
{
    struct fx *x = *state;
    fake_mcpd_set_intervals(x->fm, 100, 50);
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    const char *hb = "/api/v1/llms/_provider-heartbeat";
    assert_int_equal(fake_mcpd_wait_count(x->fm, hb, 8, WAIT_MS), 0);
    struct fake_mcpd_req *st = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-stream", 0);
    int64_t prev = st->at_ms;
    fake_mcpd_req_free(st);
    for (int i = 0; i < 8; i++) {
        struct fake_mcpd_req *r = fake_mcpd_get(x->fm, hb, i);
        assert_string_equal(r->session, "sess-1");
        int64_t gap = r->at_ms - prev;
        if (gap < 60 || gap > 400)
            fail_msg("heartbeat %d came %lld ms after the previous one (want ~100)", i,
                     (long long)gap);
        prev = r->at_ms;
        fake_mcpd_req_free(r);
    }
    assert_int_equal(stop(&x->p), 0);
}

static void test_reconnect_after_drop(void **state)
{
    struct fx *x = *state;
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    fake_mcpd_drop_streams(x->fm);
    wait_stream(x, 2);
    proc_expect(x->p, "stream down", 1, WAIT_MS);
    proc_expect(x->p, "reconnect in", 1, WAIT_MS);
    /* Every reconnect registers again (with the stored id) before the stream. */
    const char *reg = "/api/v1/llms/_provider-register";
    assert_int_equal(fake_mcpd_count(x->fm, reg), 2);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, reg, 1);
    struct fake_mcpd_req *s = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-stream", 1);
    assert_non_null(strstr(r->body, "\"providerSessionId\":\"sess-1\""));
    assert_true(r->at_ms <= s->at_ms);
    fake_mcpd_req_free(r);
    fake_mcpd_req_free(s);

    /* Dropped after the hello, three times in a row: still comes back. */
    fake_mcpd_drop_after(x->fm, 1);
    fake_mcpd_drop_streams(x->fm);
    wait_stream(x, 5);
    fake_mcpd_drop_after(x->fm, 0);
    assert_int_equal(stop(&x->p), 0);
}

static void test_register_500_twice_then_ok(void **state)
{
    struct fx *x = *state;
    fake_mcpd_fail(x->fm, FAKE_MCPD_REGISTER, 2, 500);
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    const char *reg = "/api/v1/llms/_provider-register";
    assert_int_equal(fake_mcpd_count(x->fm, reg), 3);
    for (int i = 0; i < 3; i++) {
        struct fake_mcpd_req *r = fake_mcpd_get(x->fm, reg, i);
        assert_int_equal(r->status, i < 2 ? 500 : 200);
        fake_mcpd_req_free(r);
    }
    proc_expect(x->p, "register failed: mcpd answered 500", 2, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);
}

static void test_stream_refused_then_ok(void **state)
{
    struct fx *x = *state;
    fake_mcpd_fail(x->fm, FAKE_MCPD_STREAM, 1, 503);
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    proc_expect(x->p, "cannot open the stream: mcpd answered 503", 1, WAIT_MS);
    assert_int_equal(fake_mcpd_count(x->fm, "/api/v1/llms/_provider-register"), 2);
    assert_int_equal(stop(&x->p), 0);
}

static void test_heartbeat_404_registers_again(void **state)
{
    struct fx *x = *state;
    fake_mcpd_set_intervals(x->fm, 100, 20000);
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    fake_mcpd_forget_sessions(x->fm);
    proc_expect(x->p, "mcpd does not know session sess-1 (404 on heartbeat); registering again", 1,
                WAIT_MS);
    wait_stream(x, 2);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-register", 1);
    assert_non_null(strstr(r->body, "\"providerSessionId\":\"sess-1\""));
    fake_mcpd_req_free(r);
    struct fake_mcpd_req *s = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-stream", 1);
    assert_string_equal(s->session, "sess-2");
    fake_mcpd_req_free(s);
    mode_t mode = 0;
    char *sid = read_session(x, &mode);
    assert_string_equal(sid, "sess-2\n");
    free(sid);
    /* Heartbeats go on for the new session. */
    int before = fake_mcpd_count(x->fm, "/api/v1/llms/_provider-heartbeat");
    assert_int_equal(
        fake_mcpd_wait_count(x->fm, "/api/v1/llms/_provider-heartbeat", before + 2, WAIT_MS), 0);
    r = fake_mcpd_get(x->fm, "/api/v1/llms/_provider-heartbeat", -1);
    assert_string_equal(r->session, "sess-2");
    assert_int_equal(r->status, 200);
    fake_mcpd_req_free(r);
    assert_int_equal(stop(&x->p), 0);
}

static void test_silent_stream_reconnects(void **state)
{
    struct fx *x = *state;
    fake_mcpd_set_intervals(x->fm, 60000, 100);
    write_creds(x, "t");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    int64_t t0 = clock_mono_ms();
    fake_mcpd_set_silent(x->fm, true);
    proc_expect(x->p, "stream down: no data from mcpd for", 1, WAIT_MS);
    /* About three ping intervals, not a TCP timeout. */
    assert_true(clock_mono_ms() - t0 < 3000);
    fake_mcpd_set_silent(x->fm, false);
    proc_expect(x->p, "stream up", 2, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);
}

static void test_unauthorized_keeps_trying(void **state)
{
    struct fx *x = *state;
    fake_mcpd_set_token(x->fm, "right");
    write_creds(x, "wrong");
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    proc_expect(x->p, "token rejected by mcpd: run mcpctl login (register answered 401", 1,
                WAIT_MS);
    assert_int_equal(fake_mcpd_wait_count(x->fm, "/api/v1/llms/_provider-register", 4, WAIT_MS), 0);
    /* Said once, however often the retries are refused. */
    char *log = proc_output(x->p);
    const char *first = strstr(log, "token rejected by mcpd");
    assert_non_null(first);
    assert_null(strstr(first + 1, "token rejected by mcpd"));
    free(log);
    /* New credentials on disk are picked up without a signal. */
    write_creds(x, "right");
    wait_stream(x, 1);
    proc_expect(x->p, "mcpd takes the token again", 1, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);
}

/* A token revoked while up: the 401 of a heartbeat is said once, the
 * stream is closed, the task in flight ends with an error event, and
 * mcplocal retries with backoff until new credentials come (SIGHUP). */
static void test_token_revoked_while_up(void **state)
{
    struct fx *x = *state;
    struct fake_backend *fb = fake_backend_start();
    assert_non_null(fb);
    fake_mcpd_set_intervals(x->fm, 100, 20000);
    fake_mcpd_set_token(x->fm, "old");
    write_creds(x, "old");
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"llm\": {\"providers\": [{\"name\": \"local\", \"type\": \"openai\", "
             "\"model\": \"m\", \"url\": \"%s\", \"publish\": true}]}}",
             fake_backend_url(fb));
    tmpdir_write(x->dir, "config.json", cfg, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    fake_backend_set_stream(fb, 500, 20);
    assert_int_equal(
        fake_mcpd_push_infer(x->fm, "r1", "local", true, "{\"stream\":true,\"messages\":[]}"), 0);
    char path[256];
    fake_mcpd_result_path("r1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_body(x->fm, path, "tok1", WAIT_MS), 0);

    fake_mcpd_set_token(x->fm, "new"); /* revoked */
    proc_expect(x->p, "token rejected by mcpd: run mcpctl login (a heartbeat answered 401", 1,
                WAIT_MS);
    assert_int_equal(fake_mcpd_wait_no_stream(x->fm, WAIT_MS), 0);
    /* Not abandoned half-way: its streamed result ends with an error. */
    assert_int_equal(fake_mcpd_wait_complete(x->fm, path, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, -1);
    if (!strstr(r->body, "\"message\":\"the publisher's token was rejected by mcpd\""))
        fail_msg("r1 body: %s", r->body);
    fake_mcpd_req_free(r);
    assert_int_equal(fake_backend_wait_aborted(fb, 1, WAIT_MS), 0);
    /* Retries go on, refused, without a new line each time. */
    int regs = fake_mcpd_count(x->fm, "/api/v1/llms/_provider-register");
    assert_int_equal(
        fake_mcpd_wait_count(x->fm, "/api/v1/llms/_provider-register", regs + 2, WAIT_MS), 0);
    char *log = proc_output(x->p);
    const char *first = strstr(log, "token rejected by mcpd");
    assert_null(strstr(first + 1, "token rejected by mcpd"));
    free(log);
    /* mcpctl login wrote a new token; SIGHUP picks it up too. */
    tmpdir_write(x->dir, "credentials.tmp", "", 0600); /* unrelated files are ignored */
    fake_mcpd_set_token(x->fm, "newer");
    char text[512];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"newer\"}",
             fake_mcpd_url(x->fm));
    tmpdir_write(x->dir, "credentials", text, 0600);
    proc_signal(x->p, SIGHUP);
    wait_stream(x, 2);
    proc_expect(x->p, "stream up", 2, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);
    fake_backend_stop(fb);
}

/* Stopped and continued: the pings that arrived meanwhile are read before
 * the stall timer judges the stream, which stays up with its task. */
static void test_sigstop_sigcont(void **state)
{
    struct fx *x = *state;
    struct fake_backend *fb = fake_backend_start();
    assert_non_null(fb);
    fake_mcpd_set_intervals(x->fm, 60000, 100);
    write_creds(x, "t");
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"llm\": {\"providers\": [{\"name\": \"local\", \"type\": \"openai\", "
             "\"model\": \"m\", \"url\": \"%s\", \"publish\": true}]}}",
             fake_backend_url(fb));
    tmpdir_write(x->dir, "config.json", cfg, 0644);
    x->p = start(x);
    wait_stream(x, 1);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    fake_backend_set_stream(fb, 30, 50);
    assert_int_equal(
        fake_mcpd_push_infer(x->fm, "z1", "local", true, "{\"stream\":true,\"messages\":[]}"), 0);
    char path[256];
    fake_mcpd_result_path("z1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_body(x->fm, path, "tok1", WAIT_MS), 0);
    proc_signal(x->p, SIGSTOP);
    struct timespec pause = {1, 200 * 1000000L}; /* four stall limits */
    nanosleep(&pause, NULL);
    proc_signal(x->p, SIGCONT);
    assert_int_equal(fake_mcpd_wait_complete(x->fm, path, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, -1);
    if (r->status != 200)
        proc_dump(x->p);
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->body, "tok29"));
    assert_non_null(strstr(r->body, "data: [DONE]"));
    fake_mcpd_req_free(r);
    char *log = proc_output(x->p);
    if (strstr(log, "stream down"))
        fail_msg("a healthy stream was dropped:\n%s", log);
    free(log);
    assert_int_equal(fake_mcpd_streams_opened(x->fm), 1);
    assert_int_equal(stop(&x->p), 0);
    fake_backend_stop(fb);
}

/* utime + stime of pid in clock ticks, or -1. */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    long utime = 0, stime = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) != 2)
        return -1;
    return utime + stime;
}

static void test_idle_without_credentials_then_sighup(void **state)
{
    struct fx *x = *state;
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    proc_expect(x->p, "no credentials at '", 1, WAIT_MS);
    proc_expect(x->p, "idle until the file appears or SIGHUP", 1, WAIT_MS);
    /* Idle means idle: no CPU burnt and nothing sent while it waits. */
    long before = cpu_ticks(proc_pid(x->p));
    struct timespec half = {0, 500 * 1000000L};
    nanosleep(&half, NULL); /* a measurement window, not a wait for a condition */
    long used = cpu_ticks(proc_pid(x->p)) - before;
    if (before < 0 || used > 5)
        fail_msg("idle mcplocal used %ld clock ticks in 0.5 s", used);
    assert_int_equal(fake_mcpd_count(x->fm, "/"), 0);
    write_creds(x, "t");
    proc_signal(x->p, SIGHUP);
    wait_stream(x, 1);
    proc_expect(x->p, "published 1 provider", 1, WAIT_MS);
    /* Up means hello arrived: before that a reload reconnects instead. */
    proc_expect(x->p, "stream up", 1, WAIT_MS);

    /* SIGHUP with nothing changed changes nothing. */
    proc_signal(x->p, SIGHUP);
    proc_expect(x->p, "files unchanged", 1, WAIT_MS);

    /* A new provider: registered again in place, the stream stays. */
    const char *two = "{\"llm\": {\"providers\": [\n"
                      "  {\"name\": \"vllm-local\", \"type\": \"openai\", \"model\": \"m\",\n"
                      "   \"url\": \"http://127.0.0.1:9/v1\", \"publish\": true},\n"
                      "  {\"name\": \"ollama\", \"type\": \"openai\", \"model\": \"llama3\",\n"
                      "   \"url\": \"http://127.0.0.1:9/v1\", \"publish\": true}]}}";
    tmpdir_write(x->dir, "config.json", two, 0644);
    proc_signal(x->p, SIGHUP);
    proc_expect(x->p, "published 2 providers as session sess-1", 1, WAIT_MS);
    assert_int_equal(fake_mcpd_streams_opened(x->fm), 1);

    /* A broken file on SIGHUP is reported and the running config kept. */
    tmpdir_write(x->dir, "config.json", "{\"llm\": [", 0644);
    proc_signal(x->p, SIGHUP);
    proc_expect(x->p, "keeping the running configuration", 1, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);
}

static void test_nothing_published(void **state)
{
    struct fx *x = *state;
    write_creds(x, "t");
    x->p = start(x);
    proc_expect(x->p, "no config at '", 1, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);

    tmpdir_write(x->dir, "config.json",
                 "{\"llm\": {\"providers\": [{\"name\": \"a\", \"type\": \"openai\", \"model\": "
                 "\"m\", \"url\": \"http://h/v1\"}]}}",
                 0644);
    x->p = start(x);
    proc_expect(x->p, "nothing to publish: no provider in '", 1, WAIT_MS);
    assert_int_equal(stop(&x->p), 0);
    assert_int_equal(fake_mcpd_count(x->fm, "/"), 0);
}

static void test_malformed_files_refused(void **state)
{
    struct fx *x = *state;
    write_creds(x, "t");
    tmpdir_write(
        x->dir, "config.json",
        "{\"llm\": {\"providers\": [\n  {\"name\": \"a\", \"type\": \"openai\",\n"
        "   \"model\": \"m\", \"url\": \"http://h/v1\",\n   \"wake\": {\"type\": \"shell\"}}"
        "]}}",
        0644);
    x->p = start(x);
    assert_int_equal(proc_wait_exit(x->p, WAIT_MS), 1);
    char *log = proc_output(x->p);
    char want[512];
    snprintf(want, sizeof want,
             "config '%s/config.json' line 4: llm.providers[0].wake.type: unknown wake type "
             "'shell'",
             x->dir);
    if (!strstr(log, want))
        fail_msg("log lacks '%s':\n%s", want, log);
    free(log);
    proc_free(x->p);

    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    tmpdir_write(x->dir, "credentials", "{\"mcpdUrl\": \"http://h\",\n \"token\": 1}", 0600);
    x->p = start(x);
    assert_int_equal(proc_wait_exit(x->p, WAIT_MS), 1);
    log = proc_output(x->p);
    assert_non_null(strstr(log, "/credentials' line 2: token: must be a non-empty string"));
    free(log);
    proc_free(x->p);
    x->p = NULL;
}

static void test_credentials_mode_warning(void **state)
{
    struct fx *x = *state;
    char text[512];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"t\"}", fake_mcpd_url(x->fm));
    tmpdir_write(x->dir, "credentials", text, 0644);
    tmpdir_write(x->dir, "config.json", CONFIG, 0644);
    x->p = start(x);
    proc_expect(x->p, "can be read by other users; run: chmod 600", 1, WAIT_MS);
    wait_stream(x, 1); /* a warning, not a refusal */
    assert_int_equal(stop(&x->p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_and_session_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_session_on_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_cadence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_after_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_500_twice_then_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_refused_then_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_404_registers_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_stream_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unauthorized_keeps_trying, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_revoked_while_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigstop_sigcont, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_without_credentials_then_sighup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_published, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_files_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_credentials_mode_warning, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
