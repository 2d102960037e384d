/*
 * pool_route - what routing a call to a pool costs mcpd, against routing it
 * to one Llm.
 *
 * The broker alone, as mcpd's relay drives it (no HTTP, no database: the
 * rest of a relayed call costs the same either way): publishers with their
 * control streams, and the time of broker_call_start() +
 * broker_call_done() — the member chosen, the task frame queued, the caller
 * parked, the cancel frame queued, the task ended — for
 *
 *   single     a call to one Llm;
 *   pool_idle  a call to a pool of N members with nothing in flight: the
 *              search stops at the first idle member;
 *   pool_busy  a call to another pool of N whose members each have a task
 *              in flight: the search walks all N (the worst case).
 *
 * Batches of the three alternate, so that whatever else the machine does
 * hits all alike; the streams are drained between batches, outside the
 * timed spans; each case's figure is the median over its batches. Prints
 * one JSON object.
 *
 *   pool_route [--members N] [--calls K]
 */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1000
#define CASES 3

struct bench {
    struct broker *b;
    int n; /* publishers: two pools' worth */
    struct broker_stream **st;
    struct broker_ep *eps; /* the streams' */
    char (*sids)[BROKER_ID_LEN];
    char (*llms)[BROKER_NAME_MAX];
};

static bool park_ok(struct broker_ep *ep)
{
    (void)ep;
    return true;
}

static void wake_none(struct broker_ep *ep)
{
    (void)ep;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void drain(struct bench *x)
{
    static char sink[1 << 16];
    for (int i = 0; i < x->n; i++)
        while (broker_stream_read(x->b, x->st[i], sink, sizeof sink) > 0)
            ;
}

static const char BODY[] = "{\"model\":\"pool\",\"messages\":[{\"role\":\"user\",\"content\":"
                           "\"Write a haiku about SQLite\"}],\"max_tokens\":64}";

static struct broker_call *start(struct bench *x, const struct broker_call_req *rq)
{
    static struct broker_ep ep = {.park = park_ok, .wake = wake_none};
    struct broker_error err;
    ep.parked = false;
    struct broker_call *c = broker_call_start(x->b, rq, &ep, 1000, &err);
    if (!c) {
        fprintf(stderr, "pool_route: call refused: %d %s\n", err.status, err.msg);
        exit(1);
    }
    return c;
}

/* Nanoseconds per call, over one batch of calls like rq. */
static double batch(struct bench *x, const struct broker_call_req *rq)
{
    drain(x);
    double t0 = now_ns();
    for (int i = 0; i < BATCH; i++)
        broker_call_done(x->b, start(x, rq));
    return (now_ns() - t0) / BATCH;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The pool called name: members publishers from first on. */
static void pool_of(struct bench *x, const char *name, int first, int members)
{
    struct broker_member *m = calloc((size_t)members, sizeof *m);
    if (!m)
        exit(1);
    for (int i = 0; i < members; i++)
        m[i] = (struct broker_member){.llm = x->llms[first + i], .session = x->sids[first + i]};
    if (broker_pool_set(x->b, name, 1, m, (size_t)members) < 0)
        exit(1);
    free(m);
}

int main(int argc, char **argv)
{
    int members = 100, calls = 300000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--members") == 0)
            members = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--calls") == 0)
            calls = atoi(argv[i + 1]);
    }
    if (members < 1 || members > 10000 || calls < BATCH) {
        fprintf(stderr, "usage: pool_route [--members N<=10000] [--calls K>=%d]\n", BATCH);
        return 2;
    }
    int batches = calls / BATCH;
    struct broker_config cfg = {
        .infer_timeout_ms = 600000,
        .idle_timeout_ms = 60000,
        .wake_timeout_ms = 120000,
        .ping_interval_ms = 20000,
        .heartbeat_interval_ms = 30000,
        .max_inflight = 64,
        .max_held = 256,
        .max_frame = 1 << 20,
        .stream_backlog = 64u << 20,
        .caller_backlog = 16u << 20,
        .max_result = 1 << 20,
    };
    struct bench x = {.b = broker_new(&cfg), .n = 2 * members};
    x.st = calloc((size_t)x.n, sizeof *x.st);
    x.eps = calloc((size_t)x.n, sizeof *x.eps);
    x.sids = calloc((size_t)x.n, sizeof *x.sids);
    x.llms = calloc((size_t)x.n, sizeof *x.llms);
    double *t[CASES];
    for (int k = 0; k < CASES; k++)
        t[k] = calloc((size_t)batches, sizeof *t[k]);
    struct broker_call **held = calloc((size_t)members, sizeof *held);
    if (!x.b || !x.st || !x.eps || !x.sids || !x.llms || !t[0] || !t[1] || !t[2] || !held)
        return 1;
    for (int i = 0; i < x.n; i++) {
        snprintf(x.sids[i], BROKER_ID_LEN, "%032x", i + 1);
        snprintf(x.llms[i], BROKER_NAME_MAX, "member-%05d", i);
        x.eps[i] = (struct broker_ep){.park = park_ok, .wake = wake_none};
        broker_session_registered(x.b, x.sids[i], "bench", 0, 1000);
        x.st[i] = broker_stream_open(x.b, x.sids[i], "bench", "", &x.eps[i], 1000);
        if (!x.st[i])
            return 1;
    }
    pool_of(&x, "idle", 0, members);
    pool_of(&x, "busy", members, members);
    struct broker_call_req rq[CASES] = {
        {.llm = x.llms[0], .session = x.sids[0]},
        {.llm = "idle", .pool = "idle", .pool_gen = 1},
        {.llm = "busy", .pool = "busy", .pool_gen = 1},
    };
    for (int k = 0; k < CASES; k++) {
        rq[k].body = BODY;
        rq[k].body_len = sizeof BODY - 1;
    }
    /* A task in flight on every member of "busy" all along: its members
     * are idle now, so these go round them, one each. */
    for (int i = 0; i < members; i++)
        held[i] = start(&x, &rq[2]);
    for (int k = 0; k < CASES; k++)
        batch(&x, &rq[k]); /* warm up */
    for (int i = 0; i < batches; i++)
        for (int j = 0; j < CASES; j++) {
            int k = (i + j) % CASES; /* each case first in turn */
            t[k][i] = batch(&x, &rq[k]);
        }
    double s = median(t[0], batches), idle = median(t[1], batches), busy = median(t[2], batches);
    printf("{\"members\": %d, \"calls\": %d, \"single_ns\": %.1f, \"pool_idle_ns\": %.1f, "
           "\"pool_busy_ns\": %.1f, \"pool_idle_minus_single_us\": %.3f, "
           "\"pool_busy_minus_single_us\": %.3f}\n",
           members, batches * BATCH, s, idle, busy, (idle - s) / 1000, (busy - s) / 1000);

    for (int i = 0; i < members; i++)
        broker_call_done(x.b, held[i]);
    drain(&x);
    for (int i = 0; i < x.n; i++) {
        char sid[BROKER_ID_LEN];
        broker_stream_closed(x.b, x.st[i], sid);
    }
    broker_free(x.b);
    for (int k = 0; k < CASES; k++)
        free(t[k]);
    free(held);
    free(x.st);
    free(x.eps);
    free(x.sids);
    free(x.llms);
    return 0;
}
