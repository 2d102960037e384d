#include "wake.h"

#include "provider_openai.h"
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

enum recipe_state { RECIPE_NOT_STARTED, RECIPE_RUNNING, RECIPE_DONE };

struct wake_run {
    struct loop *loop;
    struct spawner *sp;
    const struct provider_cfg *p;
    struct wake_opts o;
    wake_poll_fn on_poll;
    wake_done_fn on_done;
    void *ud;
    int64_t started;
    enum recipe_state recipe;
    struct http_req *req;
    struct child *child;
    struct openai_call *check;
    struct loop_timer poll_timer;
    struct loop_timer deadline_timer;
    bool finished;
    char last_reason[256];
};

void wake_opts_defaults(struct wake_opts *o)
{
    o->poll_first_ms = 250;
    o->poll_ms = 1000;
    o->check_timeout_ms = 2000;
}

static void stop_all(struct wake_run *w)
{
    loop_timer_stop(w->loop, &w->poll_timer);
    loop_timer_stop(w->loop, &w->deadline_timer);
    openai_call_free(w->check);
    w->check = NULL;
    http_req_free(w->req);
    w->req = NULL;
    if (w->child) {
        child_detach(w->child);
        w->child = NULL;
    }
}

static void finish(struct wake_run *w, bool ok, const char *error, const char *detail)
{
    if (w->finished)
        return;
    w->finished = true;
    stop_all(w);
    int64_t ms = loop_now(w->loop) - w->started;
    w->on_done(w->ud, ok, ms, error, detail);
}

static void fail(struct wake_run *w, const char *error, const char *detail)
{
    finish(w, false, error, detail ? detail : error);
}

static void start_recipe(struct wake_run *w);
static void start_check(struct wake_run *w);

static void on_check(void *ud, bool available, const char *reason)
{
    struct wake_run *w = ud;
    openai_call_free(w->check);
    w->check = NULL;
    if (available) {
        finish(w, true, NULL, NULL);
        return;
    }
    snprintf(w->last_reason, sizeof w->last_reason, "%s", reason ? reason : "unavailable");
    if (w->recipe == RECIPE_NOT_STARTED) {
        start_recipe(w);
        return;
    }
    loop_timer_start(w->loop, &w->poll_timer, w->o.poll_ms);
}

static void start_check(struct wake_run *w)
{
    if (w->finished || w->check)
        return;
    if (w->on_poll)
        w->on_poll(w->ud);
    w->check = openai_check(w->loop, w->p, w->o.check_timeout_ms, on_check, w);
    if (!w->check)
        fail(w, "wake failed: out of memory", NULL);
}

static void on_poll_timer(struct loop *l, void *ud)
{
    (void)l;
    start_check(ud);
}

static void on_deadline(struct loop *l, void *ud)
{
    (void)l;
    struct wake_run *w = ud;
    char err[512], detail[768];
    double secs = (double)w->p->wake.max_wait_ms / 1000.0;
    const char *still = "";
    if (w->recipe == RECIPE_RUNNING)
        still = w->p->wake.type == WAKE_COMMAND ? " (the wake command is still running)"
                                                : " (the wake request has not answered)";
    snprintf(err, sizeof err, "backend still unavailable after %g s: %s%s", secs,
             w->last_reason[0] ? w->last_reason : "no answer", still);
    snprintf(detail, sizeof detail, "%s", err);
    fail(w, err, detail);
}

static void on_http_done(struct http_req *r, void *ud)
{
    struct wake_run *w = ud;
    char err[512], detail[1024];
    w->req = NULL;
    w->recipe = RECIPE_DONE;
    long status = http_req_status(r);
    if (!http_req_ok(r) && status == 0) {
        snprintf(err, sizeof err, "wake request failed: %s", http_req_error(r));
        snprintf(detail, sizeof detail, "wake request %s %s failed: %s", w->p->wake.method,
                 w->p->wake.url, http_req_error_detail(r));
        http_req_free(r);
        fail(w, err, detail);
        return;
    }
    if (status < 200 || status >= 300) {
        snprintf(err, sizeof err, "wake request answered %ld", status);
        snprintf(detail, sizeof detail, "wake request %s %s answered %ld", w->p->wake.method,
                 w->p->wake.url, status);
        http_req_free(r);
        fail(w, err, detail);
        return;
    }
    http_req_free(r);
    /* Success: polling is already scheduled. */
}

static void on_child_exit(void *ud, int status)
{
    struct wake_run *w = ud;
    char err[256], detail[1024];
    child_detach(w->child);
    w->child = NULL;
    w->recipe = RECIPE_DONE;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return; /* keep polling */
    if (WIFEXITED(status))
        snprintf(err, sizeof err, "wake command exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(err, sizeof err, "wake command was killed by signal %d", WTERMSIG(status));
    else
        snprintf(err, sizeof err, "wake command ended abnormally");
    snprintf(detail, sizeof detail, "%s: %s", w->p->wake.argv[0], err);
    fail(w, err, detail);
}

static void start_recipe(struct wake_run *w)
{
    const struct wake_recipe *r = &w->p->wake;
    w->recipe = RECIPE_RUNNING;
    if (r->type == WAKE_HTTP) {
        struct http_req_opts o = {
            .method = r->method,
            .url = r->url,
            .headers = (const char *const *)r->headers,
            .body = r->body,
            .body_len = r->body ? strlen(r->body) : 0,
            .max_body = 64 * 1024,
            .timeout_ms = r->max_wait_ms,
            .on_done = on_http_done,
            .ud = w,
        };
        if (http_req_start(w->loop, &o, &w->req) < 0) {
            fail(w, "wake request could not start", NULL);
            return;
        }
    } else if (r->type == WAKE_COMMAND) {
        char err[512], tag[160];
        snprintf(tag, sizeof tag, "wake '%s'", w->p->name);
        if (spawner_run(w->sp, r->argv, tag, on_child_exit, w, &w->child, err, sizeof err) < 0) {
            fail(w, "wake command could not start", err);
            return;
        }
    } else {
        fail(w, "no wake recipe is configured for this provider", NULL);
        return;
    }
    loop_timer_start(w->loop, &w->poll_timer, w->o.poll_first_ms);
}

struct wake_run *wake_start(struct loop *l, struct spawner *sp, const struct provider_cfg *p,
                            const struct wake_opts *o, wake_poll_fn on_poll, wake_done_fn on_done,
                            void *ud)
{
    struct wake_run *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = l;
    w->sp = sp;
    w->p = p;
    w->o = *o;
    w->on_poll = on_poll;
    w->on_done = on_done;
    w->ud = ud;
    w->started = loop_now(l);
    loop_timer_init(&w->poll_timer, on_poll_timer, w);
    loop_timer_init(&w->deadline_timer, on_deadline, w);
    loop_timer_start(l, &w->deadline_timer, p->wake.max_wait_ms);
    /* The first check runs from the loop so on_done is never called from
     * inside wake_start(). */
    loop_timer_start(l, &w->poll_timer, 0);
    w->recipe = RECIPE_NOT_STARTED;
    return w;
}

void wake_free(struct wake_run *w)
{
    if (!w)
        return;
    w->finished = true;
    stop_all(w);
    free(w);
}
