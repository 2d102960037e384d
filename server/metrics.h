/*
 * metrics.h - mcpd's counters and histograms, and their Prometheus text
 * exposition (format 0.0.4) for GET /metrics. docs/operations.md lists
 * every metric and its labels.
 *
 * The hot path only adds: every counter and histogram bucket is a C11
 * atomic, bumped with relaxed ordering, and a label value such as an Llm's
 * name is found in a lock-free table that only grows. Label sets are
 * bounded: routes and statuses come from fixed lists (other statuses fold
 * into their class, "4xx"), and past METRICS_LLM_MAX Llm names (or
 * METRICS_TOKEN_SERIES_MAX (Llm, owner) pairs) new ones fold into
 * METRICS_OTHER. Gauges are not kept here: the caller reads them when
 * /metrics is scraped and passes them to metrics_render().
 *
 * Every function may be called from any thread.
 */
#ifndef MCPD_METRICS_H
#define MCPD_METRICS_H

#include "broker.h"
#include "buf.h"

#include <stdbool.h>
#include <stdint.h>

#define METRICS_LLM_MAX 1024
#define METRICS_TOKEN_SERIES_MAX 4096
/* A cap for the exposition's buffer that the series caps keep it under. */
#define METRICS_TEXT_MAX (64u << 20)
/* The label value of requests that named no known Llm, and of names past
 * the cap; no Llm name can take it (names start with a letter or digit). */
#define METRICS_OTHER "_other"

/* A route as a label: its path template, e.g. "/v1/chat/completions". */
struct metrics_route {
    const char *label;
    bool relayed; /* an inference relayed to a publisher */
};

/* A request that is over. */
struct metrics_request {
    unsigned route;  /* index into the routes given to metrics_new() */
    const char *llm; /* relayed: the Llm it was routed to, or NULL */
    unsigned status; /* none sent: 499 (the peer left first) or 0 */
    int64_t duration_us;
    int64_t first_byte_us; /* to the answer's first byte; < 0: none went out */
};

/* The gauges, read by the caller at scrape time. */
struct metrics_gauges {
    struct broker_stats broker;
    unsigned llms[2][3]; /* [public, virtual][active, inactive, hibernating] */
    bool llms_ok;        /* the database answered */
    unsigned connections_open;
    unsigned connections_max;
    uint64_t access_log_errors;
};

struct metrics;

/* Returns a new registry for these routes (borrowed: static), or NULL
 * (out of memory, or a route without a label). */
struct metrics *metrics_new(const struct metrics_route *routes, unsigned nroutes);
/* NULL is a no-op. */
void metrics_free(struct metrics *m);

void metrics_request(struct metrics *m, const struct metrics_request *rq);
/* n events relayed to streaming callers. */
void metrics_stream_events(struct metrics *m, unsigned n);
/* A wake ended (a broker_config.on_wake_end: takes no lock). */
void metrics_wake(void *m, enum broker_wake_outcome outcome, int64_t duration_ms);
/* One GC batch ran (ok: the database did not fail it). */
void metrics_gc_batch(struct metrics *m, bool ok, int inactivated, int deleted,
                      int64_t duration_us);
/* Tokens a backend reported for one answer, as mcpd_tokens_total{llm,
 * owner, kind="prompt"|"completion"}. */
void metrics_add_tokens(struct metrics *m, const char *llm, const char *owner, uint64_t prompt,
                        uint64_t completion);

/* Appends the whole exposition to out: 0, or -1 when out's cap was hit. */
int metrics_render(struct metrics *m, const struct metrics_gauges *g, struct buf *out);
/* Appends the pool members' counts (broker_pool_stats()) to out. 0, or -1
 * when out of memory. */
int metrics_render_pools(struct broker *b, struct buf *out);

#endif
