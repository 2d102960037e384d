/*
 * A pool as its users see it: two real mcplocals publish "laptop-a" and
 * "laptop-b" in pool "qwen", each in front of its own fake backend. A burst
 * of `mcpctl chat-llm qwen` calls, every other one streamed, runs while
 * one mcplocal is stopped in the middle of it, with a call in its
 * backend's hands, and no call fails: the calls it had that had no byte
 * yet go to the other, and its streams under way finish. mcpctl shows the
 * pool:
 * the POOL column, a member's siblings, the pool itself.
 */
#include "cli_support.h"
#include "fake_backend.h"
#include "proc.h"
#include "test_env.h"
#include "tmpdir.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#define WAIT_MS 15000
#define THREADS 4
#define CALLS 40

struct laptop {
    struct fake_backend *fb;
    char *home;
    struct proc *p;
};

static struct test_env *env;
static struct laptop lap[2];

static int laptop_start(struct laptop *l, const char *name)
{
    l->fb = fake_backend_start();
    if (!l->fb)
        return -1;
    fake_backend_set_answer_delay(l->fb, 100);
    fake_backend_set_stream(l->fb, 2, 50);
    l->home = tmpdir_path(env->dir, name);
    if (mkdir(l->home, 0700) < 0)
        return -1;
    char text[1024];
    char *p = tmpdir_path(l->home, "credentials");
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", env->mcpd.url,
             env->mcpd.token);
    int rc = cli_t_write_file(p, text);
    free(p);
    p = tmpdir_path(l->home, "config.json");
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"%s\", \"type\": \"openai\", "
             "\"model\": \"Qwen/Qwen2.5-7B-Instruct-AWQ\", \"url\": \"%s\", "
             "\"poolName\": \"qwen\", \"publish\": true}]}}",
             name, fake_backend_url(l->fb));
    if (rc == 0)
        rc = cli_t_write_file(p, text);
    free(p);
    if (rc < 0)
        return -1;
    const char *argv[] = {MCPLOCAL_BIN, "--home", l->home, NULL};
    cli_t_cloexec_all();
    l->p = proc_start(argv, NULL, env->dir);
    if (!l->p || proc_wait_for(l->p, "stream up", WAIT_MS) < 0) {
        proc_dump(l->p);
        return -1;
    }
    return test_wait_status(env, name, "active", WAIT_MS);
}

static int setup(void **state)
{
    (void)state;
    env = test_env_start(NULL);
    if (!env)
        return -1;
    if (laptop_start(&lap[0], "laptop-a") < 0 || laptop_start(&lap[1], "laptop-b") < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        if (lap[i].p && proc_stop(lap[i].p, WAIT_MS) != 0)
            rc = -1;
        fake_backend_stop(lap[i].fb);
        free(lap[i].home);
    }
    if (test_env_stop(env) != 0)
        rc = -1;
    return rc;
}

/* mcpctl with laptop-b's credentials file. */
static void run(struct cli_t_result *r, const char *const args[])
{
    cli_t_run(lap[1].home, NULL, NULL, args, r);
    if (r->code != 0)
        fail_msg("exit %d\nstdout: %s\nstderr: %s", r->code, r->out, r->err);
}

/* ---- the burst ---- */

struct burst {
    atomic_int next, answered, failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char first_failure[1024];
};

static void *caller_main(void *arg)
{
    struct burst *b = arg;
    for (int i; (i = atomic_fetch_add(&b->next, 1)) < CALLS;) {
        char msg[32];
        snprintf(msg, sizeof msg, "hi %d", i);
        struct cli_t_result r;
        /* every other call streams */
        bool stream = i % 2;
        cli_t_run(lap[1].home, NULL, NULL,
                  stream ? (const char *[]){"chat-llm", "qwen", "-m", msg, NULL}
                         : (const char *[]){"chat-llm", "qwen", "--no-stream", "-m", msg, NULL},
                  &r);
        pthread_mutex_lock(&b->mu);
        if (r.code != 0 || strcmp(r.out, stream ? "tok0tok1\n" : "hello from fake\n") != 0) {
            if (atomic_fetch_add(&b->failed, 1) == 0)
                snprintf(b->first_failure, sizeof b->first_failure, "exit %d: %s%s", r.code, r.out,
                         r.err);
        }
        atomic_fetch_add(&b->answered, 1);
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        cli_t_result_free(&r);
    }
    return NULL;
}

static void test_member_stopped_mid_burst(void **state)
{
    (void)state;
    struct burst b = {0};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, caller_main, &b);
    pthread_mutex_lock(&b.mu);
    while (atomic_load(&b.answered) < CALLS / 4)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    /* laptop-a stops, as a service manager stops it, while its backend
     * works on a call */
    int seen = fake_backend_count(lap[0].fb, "/v1/chat/completions");
    assert_int_equal(fake_backend_wait_count(lap[0].fb, "/v1/chat/completions", seen + 1, WAIT_MS),
                     0);
    assert_int_equal(proc_stop(lap[0].p, WAIT_MS), 0);
    lap[0].p = NULL;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    if (atomic_load(&b.failed))
        fail_msg("%d of %d calls failed; the first: %s", atomic_load(&b.failed), CALLS,
                 b.first_failure);
    int a = fake_backend_count(lap[0].fb, "/v1/chat/completions");
    int bb = fake_backend_count(lap[1].fb, "/v1/chat/completions");
    print_message("laptop-a's backend answered %d, laptop-b's %d\n", a, bb);
    assert_true(a > 0);
    assert_true(a + bb > CALLS); /* a call laptop-a had was answered by laptop-b */
    assert_int_equal(test_wait_status(env, "laptop-a", "inactive", WAIT_MS), 0);

    /* the pool, as mcpctl shows it */
    struct cli_t_result r;
    run(&r, (const char *[]){"get", "llm", "-o", "wide", NULL});
    for (const char *line = strstr(r.out, "laptop-"); line; line = strstr(line + 1, "laptop-")) {
        char name[32], kind[32], status[32], type[32], model[128], tier[32], pool[32];
        assert_int_equal(sscanf(line, "%31s %31s %31s %31s %127s %31s %31s", name, kind, status,
                                type, model, tier, pool),
                         7);
        assert_string_equal(pool, "qwen");
        line = strchr(line, '\n');
        if (!line)
            break;
    }
    assert_non_null(strstr(r.out, "POOL"));
    cli_t_result_free(&r);
    run(&r, (const char *[]){"describe", "llm", "laptop-b", NULL});
    assert_non_null(strstr(r.out, "Pool:             qwen\n"));
    assert_non_null(strstr(r.out, "Siblings:         1 in pool 'qwen', 0 active\n"));
    assert_non_null(strstr(r.out, "  laptop-a   inactive"));
    cli_t_result_free(&r);
    run(&r, (const char *[]){"describe", "llm", "qwen", NULL});
    assert_non_null(strstr(r.out, "Pool:             qwen\nMembers:          2, 1 active\n"));
    cli_t_result_free(&r);
    /* a streamed chat with the pool, by name */
    run(&r, (const char *[]){"chat-llm", "qwen", "-m", "and now?", NULL});
    assert_string_equal(r.out, "tok0tok1\n");
    cli_t_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_stopped_mid_burst),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
