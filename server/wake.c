/*
 * wake.c - wake-on-demand for hibernating Llms.
 *
 * The first inference on a hibernating row sends one `wake` task to its
 * publisher; every caller that arrives while it runs joins it (up to
 * --max-held). Success flips the row active and relays the held callers in
 * arrival order; failure (error, non-2xx, stream closed, --wake-timeout)
 * leaves the row hibernating and answers every held caller 503 with
 * Retry-After. Streaming callers held longer than a ping interval get an SSE
 * response whose comments keep proxies from timing out.
 *
 * The wake task rides the relay's task table, so its result post, its
 * timeout and the publisher's disconnect all end in wake_task_finished().
 */
#include "clock.h"
#include "log.h"
#include "protocol.h"
#include "server.h"
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAKE_RETRY_AFTER 10

static void wake_free(struct server *srv, struct wake *w)
{
    HASH_DEL(srv->wakes, w);
    free(w->held);
    free(w);
}

static int hold(struct wake *w, struct req *r)
{
    if (w->nheld == w->capheld) {
        int cap = w->capheld ? w->capheld * 2 : 8;
        struct req **p = realloc(w->held, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        w->held = p;
        w->capheld = cap;
    }
    w->held[w->nheld++] = r;
    r->wait = WAIT_WAKE;
    r->wake = w;
    return 0;
}

enum MHD_Result wake_hold(struct req *r, const char *session_id)
{
    struct server *srv = r->srv;
    struct wake *w;
    HASH_FIND_STR(srv->wakes, r->llm_name, w);
    if (w && w->nheld >= srv->cfg.max_held)
        return http_reply_unavailable(r, WAKE_RETRY_AFTER,
                                      "Llm is waking up and too many callers wait already");
    if (!w) {
        struct session *s;
        HASH_FIND_STR(srv->sessions, session_id, s);
        w = calloc(1, sizeof *w);
        if (!w || !s) {
            free(w);
            return http_reply_error(r, 500, "cannot start a wake");
        }
        snprintf(w->llm_name, sizeof w->llm_name, "%s", r->llm_name);
        snprintf(w->session_id, sizeof w->session_id, "%s", session_id);
        HASH_ADD_STR(srv->wakes, llm_name, w);
        w->task = relay_send_wake(srv, s, w);
        if (!w->task) {
            wake_free(srv, w);
            return http_reply_unavailable(r, WAKE_RETRY_AFTER,
                                          "cannot send the wake task to the publisher");
        }
        log_info("'%s' is hibernating: wake task %.8s… sent", w->llm_name, w->task->id);
    }
    if (hold(w, r) < 0)
        return http_reply_error(r, 500, "out of memory");
    if (r->streaming) {
        r->next_keepalive = clock_mono_ms() + srv->cfg.ping_interval_ms;
        housekeeper_poke(srv, r->next_keepalive);
    }
    http_suspend(r);
    return MHD_YES;
}

void wake_task_finished(struct server *srv, struct task *t)
{
    struct wake *w = t->wake;
    t->wake = NULL;
    if (!w)
        return;
    w->task = NULL;
    int64_t ms = clock_mono_ms() - t->started_at;
    if (t->state == TASK_DONE) {
        int rc = db_llm_set_status(srv->db, w->llm_name, MCP_STATUS_ACTIVE, clock_wall_ms());
        log_info("'%s' woke in %lld ms: relaying %d held call(s)%s", w->llm_name, (long long)ms,
                 w->nheld, rc == DB_OK ? "" : " (row update failed)");
        struct session *s;
        HASH_FIND_STR(srv->sessions, w->session_id, s);
        for (int i = 0; i < w->nheld; i++) {
            struct req *r = w->held[i];
            r->wake = NULL;
            r->wait = WAIT_NONE;
            if (!s || relay_start_task(r, s) < 0) {
                if (!r->fail_status)
                    relay_fail_caller(r, 503, WAKE_RETRY_AFTER, "publisher went away");
                else
                    relay_fail_caller(r, r->fail_status, r->retry_after, r->fail_msg);
            }
        }
    } else {
        char why[300];
        if (strncmp(t->error, "wake", 4) == 0)
            snprintf(why, sizeof why, "%s", t->error);
        else
            snprintf(why, sizeof why, "wake failed: %s", t->error);
        log_warn("'%s' did not wake after %lld ms (%s): %d held call(s) get 503", w->llm_name,
                 (long long)ms, why, w->nheld);
        for (int i = 0; i < w->nheld; i++) {
            struct req *r = w->held[i];
            r->wake = NULL;
            r->wait = WAIT_NONE;
            relay_fail_caller(r, 503, WAKE_RETRY_AFTER, why);
        }
    }
    wake_free(srv, w);
}

void wake_forget(struct req *r)
{
    struct wake *w = r->wake;
    r->wake = NULL;
    if (!w)
        return;
    for (int i = 0; i < w->nheld; i++) {
        if (w->held[i] == r) {
            memmove(&w->held[i], &w->held[i + 1], (size_t)(w->nheld - i - 1) * sizeof *w->held);
            w->nheld--;
            break;
        }
    }
}

int64_t wake_tick(struct server *srv, int64_t now)
{
    int64_t next = INT64_MAX;
    struct wake *w, *tmp;
    HASH_ITER(hh, srv->wakes, w, tmp)
    {
        for (int i = 0; i < w->nheld; i++) {
            struct req *r = w->held[i];
            if (!r->streaming)
                continue;
            if (r->next_keepalive <= now) {
                if (sse_encode_comment(&r->sse, "waking") == 0)
                    http_resume(r);
                r->next_keepalive = now + srv->cfg.ping_interval_ms;
            }
            if (r->next_keepalive < next)
                next = r->next_keepalive;
        }
    }
    return next;
}
