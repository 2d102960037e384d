#include "results.h"

#include "transport.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

/* A line goes out as three pieces: {"taskId":"<id>", then the body from
 * its second byte (the body is the record's, not copied), then a newline. */
struct record {
    char task_id[TASK_ID_MAX + 1];
    char prefix[TASK_ID_MAX + 16];
    char *body;
    struct {
        const char *p;
        size_t n;
    } piece[3];
    int cur;    /* the piece going out */
    size_t off; /* bytes of it handed to libcurl */
    struct record *next;
};

static void record_free(struct record *rec)
{
    free(rec->body);
    free(rec);
}

struct results {
    struct loop *loop;
    struct http_req *req;
    struct record *head; /* queued, oldest first (utlist) */
    results_end_fn on_end;
    void *ud;
    int64_t keepalive_ms;
    struct loop_timer keepalive_t;
    bool wrote;     /* something went out since the last keepalive tick */
    bool keepalive; /* a blank line is due */
    bool finishing;
    bool ended;
};

static void free_records(struct results *rs)
{
    struct record *rec, *tmp;
    LL_FOREACH_SAFE(rs->head, rec, tmp)
    {
        LL_DELETE(rs->head, rec);
        record_free(rec);
    }
}

static ssize_t on_read(struct http_req *r, char *buf, size_t max, void *ud)
{
    (void)r;
    struct results *rs = ud;
    size_t n = 0;
    while (rs->head && n < max) {
        struct record *rec = rs->head;
        size_t k = rec->piece[rec->cur].n - rec->off;
        if (k > max - n)
            k = max - n;
        memcpy(buf + n, rec->piece[rec->cur].p + rec->off, k);
        rec->off += k;
        n += k;
        if (rec->off < rec->piece[rec->cur].n)
            continue;
        rec->off = 0;
        if (++rec->cur == 3) {
            LL_DELETE(rs->head, rec);
            record_free(rec);
        }
    }
    if (n == 0 && rs->keepalive) {
        buf[n++] = '\n';
        rs->keepalive = false;
    }
    if (n > 0) {
        rs->wrote = true;
        return (ssize_t)n;
    }
    return rs->finishing ? 0 : HTTP_READ_PAUSE;
}

static void on_keepalive(struct loop *l, void *ud)
{
    struct results *rs = ud;
    if (!rs->wrote && !rs->head) {
        rs->keepalive = true;
        http_req_resume_send(rs->req);
    }
    rs->wrote = false;
    loop_timer_start(l, &rs->keepalive_t, rs->keepalive_ms);
}

static void on_done(struct http_req *r, void *ud)
{
    struct results *rs = ud;
    loop_timer_stop(rs->loop, &rs->keepalive_t);
    rs->ended = true;
    long status = http_req_status(r);
    char why[512];
    const char *err = http_req_error_detail(r);
    if (status != 0 && (status < 200 || status >= 300)) {
        size_t len = 0;
        const char *body = http_req_body(r, &len);
        snprintf(why, sizeof why, "mcpd answered %ld: %.*s", status, (int)(len > 300 ? 300 : len),
                 body);
    } else {
        snprintf(why, sizeof why, "%s", err ? err : "mcpd ended it");
    }
    struct results_end e = {
        .clean = http_req_ok(r) && status >= 200 && status < 300,
        .nothing_sent = http_req_nothing_sent(r),
        .status = status,
        .why = why,
    };
    rs->req = NULL;
    http_req_free(r);
    rs->on_end(rs, &e, rs->ud);
}

int results_open(struct loop *l, const struct results_opts *o, struct results **out)
{
    struct results *rs = calloc(1, sizeof *rs);
    if (!rs)
        return -1;
    rs->loop = l;
    rs->on_end = o->on_end;
    rs->ud = o->ud;
    rs->keepalive_ms = o->keepalive_ms;
    loop_timer_init(&rs->keepalive_t, on_keepalive, rs);
    struct http_req_opts ho = {
        .method = "POST",
        .url = o->url,
        .headers = o->headers,
        .on_read = on_read,
        .max_body = 64 * 1024,
        .connect_timeout_ms = 10000,
        .keepalive = true,
        .ca_file = o->ca_file,
        .on_done = on_done,
        .ud = rs,
    };
    if (http_req_start(l, &ho, &rs->req) < 0) {
        free(rs);
        return -1;
    }
    if (rs->keepalive_ms > 0)
        loop_timer_start(l, &rs->keepalive_t, rs->keepalive_ms);
    *out = rs;
    return 0;
}

int results_push(struct results *rs, const char *task_id, char *body)
{
    size_t blen = strlen(body);
    if (rs->finishing || rs->ended || blen < 2 || body[0] != '{' || strlen(task_id) > TASK_ID_MAX)
        return -1;
    struct record *rec = calloc(1, sizeof *rec);
    if (!rec)
        return -1;
    snprintf(rec->task_id, sizeof rec->task_id, "%s", task_id);
    /* An empty body object "{}" makes {"taskId":"<id>"}: no comma. */
    int n = snprintf(rec->prefix, sizeof rec->prefix, "{\"taskId\":\"%s\"%s", task_id,
                     body[1] == '}' ? "" : ",");
    rec->body = body;
    rec->piece[0].p = rec->prefix;
    rec->piece[0].n = (size_t)n;
    rec->piece[1].p = body + 1;
    rec->piece[1].n = blen - 1;
    rec->piece[2].p = "\n";
    rec->piece[2].n = 1;
    LL_APPEND(rs->head, rec);
    http_req_resume_send(rs->req);
    return 0;
}

void results_finish(struct results *rs)
{
    if (rs->finishing || rs->ended)
        return;
    rs->finishing = true;
    loop_timer_stop(rs->loop, &rs->keepalive_t);
    http_req_resume_send(rs->req);
}

void results_take_unsent(struct results *rs, results_unsent_fn fn, void *ud)
{
    struct record *rec, *tmp;
    LL_FOREACH_SAFE(rs->head, rec, tmp)
    {
        LL_DELETE(rs->head, rec);
        if (rec->cur == 0 && rec->off == 0) {
            fn(rec->task_id, rec->body, ud);
            rec->body = NULL;
        }
        record_free(rec);
    }
}

void results_free(struct results *rs)
{
    if (!rs)
        return;
    loop_timer_stop(rs->loop, &rs->keepalive_t);
    http_req_free(rs->req);
    free_records(rs);
    free(rs);
}
