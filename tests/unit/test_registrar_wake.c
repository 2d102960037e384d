/* Wake recipes against the fake backend: HTTP and command recipes,
 * arguments passed literally, output to the log, failures, timeout,
 * polling with a heartbeat hook. */
#include "child.h"
#include "clock.h"
#include "config.h"
#include "fake_backend.h"
#include "loop.h"
#include "tmpdir.h"
#include "wake.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

struct fixture {
    struct fake_backend *fb;
    struct loop *loop;
    struct spawner *sp;
    char lines[4096];
    char *dir;
};

struct outcome {
    struct fixture *f;
    struct wake_run *w;
    bool done;
    bool ok;
    int64_t ms;
    char error[512];
    char detail[1024];
    int polls;
    const char *wake_when_exists; /* on_poll: wake the backend once this file exists */
    int wake_after_polls;         /* on_poll: wake the backend at this poll (0: never) */
};

static void on_line(void *ud, const char *tag, const char *line)
{
    struct fixture *f = ud;
    size_t n = strlen(f->lines);
    snprintf(f->lines + n, sizeof f->lines - n, "%s|%s\n", tag, line);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->fb = fake_backend_start();
    f->loop = loop_new();
    f->sp = spawner_new(f->loop, on_line, f);
    f->dir = tmpdir_create("mcplocal-wake");
    *state = f;
    return f->fb && f->loop && f->sp ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    spawner_free(f->sp);
    loop_free(f->loop);
    fake_backend_stop(f->fb);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void on_poll(void *ud)
{
    struct outcome *o = ud;
    o->polls++;
    struct stat st;
    if (o->wake_when_exists && stat(o->wake_when_exists, &st) == 0)
        fake_backend_set_asleep(o->f->fb, false);
    if (o->wake_after_polls && o->polls >= o->wake_after_polls)
        fake_backend_set_asleep(o->f->fb, false);
}

static void on_done(void *ud, bool ok, int64_t ms, const char *error, const char *detail)
{
    struct outcome *o = ud;
    o->done = true;
    o->ok = ok;
    o->ms = ms;
    snprintf(o->error, sizeof o->error, "%s", error ? error : "");
    snprintf(o->detail, sizeof o->detail, "%s", detail ? detail : "");
    wake_free(o->w); /* freeing inside on_done */
    o->w = NULL;
}

static const struct wake_opts FAST = {.poll_first_ms = 30, .poll_ms = 50, .check_timeout_ms = 500};

static void run_wake(struct fixture *f, struct provider_cfg *p, struct outcome *o)
{
    o->f = f;
    o->w = wake_start(f->loop, f->sp, p, &FAST, on_poll, on_done, o);
    assert_non_null(o->w);
    assert_false(o->done); /* never reported from inside wake_start() */
    int64_t end = clock_mono_ms() + 10000;
    while (!o->done && clock_mono_ms() < end)
        loop_run_once(f->loop, 20);
    assert_true(o->done);
}

static struct provider_cfg provider(struct fixture *f)
{
    struct provider_cfg p = {
        .name = "sleepy", .type = "openai", .model = "m", .url = (char *)fake_backend_url(f->fb)};
    p.wake.max_wait_ms = 5000;
    return p;
}

static void test_http_recipe(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    fake_backend_set_wake(f->fb, 200, 150);
    struct provider_cfg p = provider(f);
    char *headers[] = {"X-Token: abc", NULL};
    p.wake.type = WAKE_HTTP;
    p.wake.url = (char *)fake_backend_wake_url(f->fb);
    p.wake.method = "PUT";
    p.wake.headers = headers;
    p.wake.body = "{\"start\":true}";
    struct outcome o = {0};
    run_wake(f, &p, &o);
    assert_true(o.ok);
    assert_true(o.ms >= 150);
    assert_int_equal(fake_backend_count(f->fb, "/wake"), 1);
    char *tok = fake_backend_last_header(f->fb, "/wake", "X-Token");
    assert_string_equal(tok, "abc");
    free(tok);
    char *body = fake_backend_last_body(f->fb, "/wake");
    assert_string_equal(body, "{\"start\":true}");
    free(body);
    /* The first check, then polls every 50 ms until it answered: each one
     * gave the owner its chance to heartbeat. */
    assert_true(o.polls >= 3);
    assert_int_equal(o.polls, fake_backend_count(f->fb, "/v1/models"));
}

static void test_http_recipe_fails(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    fake_backend_set_wake(f->fb, 500, 0);
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_HTTP;
    p.wake.url = (char *)fake_backend_wake_url(f->fb);
    p.wake.method = "POST";
    char *none[] = {NULL};
    p.wake.headers = none;
    struct outcome o = {0};
    run_wake(f, &p, &o);
    assert_false(o.ok);
    assert_string_equal(o.error, "wake request answered 500");
    assert_null(strstr(o.error, "127.0.0.1")); /* the local URL stays in the log */
    assert_non_null(strstr(o.detail, fake_backend_wake_url(f->fb)));
    assert_true(o.ms < 2000);
}

static void test_command_args_literal(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    static const char NAME[] = "a b; touch pwned $(touch pwned2) `touch pwned3` | & > * '\"";
    char *path = tmpdir_path(f->dir, NAME);
    char *argv[] = {"touch", path, NULL}; /* found through PATH */
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 2;
    struct outcome o = {.wake_when_exists = path};
    run_wake(f, &p, &o);
    assert_true(o.ok);
    /* Exactly one file, with exactly that name: no shell saw it. */
    DIR *d = opendir(f->dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        assert_string_equal(e->d_name, NAME);
        n++;
    }
    closedir(d);
    assert_int_equal(n, 1);
    free(path);
}

static void test_command_output_and_failure(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    char *argv[] = {"/bin/sh", "-c", "echo to stdout; echo to stderr >&2; exit 3", NULL};
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 3;
    struct outcome o = {0};
    run_wake(f, &p, &o);
    assert_false(o.ok);
    assert_string_equal(o.error, "wake command exited with status 3");
    assert_non_null(strstr(o.detail, "/bin/sh"));
    /* The output reached the log before the failure was reported. */
    assert_non_null(strstr(f->lines, "wake 'sleepy'|to stdout\n"));
    assert_non_null(strstr(f->lines, "wake 'sleepy'|to stderr\n"));
}

static void test_command_not_found(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    char *argv[] = {"/nonexistent/wake-me", NULL};
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 1;
    struct outcome o = {0};
    run_wake(f, &p, &o);
    assert_false(o.ok);
    assert_string_equal(o.error, "wake command could not start");
    assert_non_null(strstr(o.detail, "No such file or directory"));
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    char *argv[] = {"/bin/true", NULL};
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 1;
    p.wake.max_wait_ms = 400;
    struct outcome o = {0};
    int64_t start = clock_mono_ms();
    run_wake(f, &p, &o);
    assert_false(o.ok);
    assert_string_equal(o.error, "backend still unavailable after 0.4 s: GET /models answered 503");
    int64_t took = clock_mono_ms() - start;
    assert_true(took >= 400 && took < 1500);
    assert_true(o.polls >= 4); /* heartbeat chances all along the wait */
}

static void test_foreground_command(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    /* A recipe that runs the server in the foreground never exits; the wake
     * succeeds once the backend answers and leaves the command running. */
    char *argv[] = {"/bin/sleep", "1", NULL};
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 2;
    struct outcome o = {.wake_after_polls = 3};
    run_wake(f, &p, &o);
    assert_true(o.ok);
    assert_true(o.ms < 1000);
}

static void test_already_awake(void **state)
{
    struct fixture *f = *state;
    char *argv[] = {"/bin/false", NULL}; /* would fail if it ran */
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 1;
    struct outcome o = {0};
    run_wake(f, &p, &o);
    assert_true(o.ok);
    assert_int_equal(o.polls, 1);
}

static void test_cancel(void **state)
{
    struct fixture *f = *state;
    fake_backend_set_asleep(f->fb, true);
    char *argv[] = {"/bin/true", NULL};
    struct provider_cfg p = provider(f);
    p.wake.type = WAKE_COMMAND;
    p.wake.argv = argv;
    p.wake.argc = 1;
    struct outcome o = {.f = f};
    o.w = wake_start(f->loop, f->sp, &p, &FAST, on_poll, on_done, &o);
    int64_t end = clock_mono_ms() + 300;
    while (clock_mono_ms() < end)
        loop_run_once(f->loop, 20);
    assert_true(o.polls >= 2);
    wake_free(o.w);
    int polls = o.polls;
    end = clock_mono_ms() + 200;
    while (clock_mono_ms() < end)
        loop_run_once(f->loop, 20);
    assert_false(o.done);
    assert_int_equal(o.polls, polls);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_http_recipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_recipe_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_args_literal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_output_and_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreground_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_already_awake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
