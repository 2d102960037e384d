/*
 * metrics.c - counters, histograms and the Prometheus text exposition.
 *
 * Series with an Llm (or an Llm and an owner) in their labels live in a
 * table of their own: open addressing over atomic pointers, twice as many
 * cells as series allowed, where a series is added with one
 * compare-and-swap and never removed, so finding one takes no lock.
 */
#include "metrics.h"
#include "clock.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef atomic_uint_fast64_t counter;

static void bump(counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t peek(counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- statuses ---- */

/* The statuses kept as they are; any other folds into its class. */
static const unsigned short known_statuses[] = {
    0,   200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404,
    405, 408, 409, 410, 413, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504,
};
#define NKNOWN (sizeof known_statuses / sizeof known_statuses[0])
static const char *const class_labels[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
#define NSTATUS (NKNOWN + 6)
#define STATUS_TABLE 600

/* ---- histograms ---- */

#define HISTO_MAX 20

struct histo {
    counter buckets[HISTO_MAX + 1]; /* not cumulative; the last is +Inf */
    counter sum_us;
};

struct histo_spec {
    const int64_t *bounds_us;
    unsigned n;
};

static const int64_t relay_bounds[] = {
    500,      1000,     2500,      5000,      10000,     25000,   50000,
    100000,   250000,   500000,    1000000,   2500000,   5000000, 10000000,
    30000000, 60000000, 120000000, 300000000, 600000000,
};
static const int64_t wake_bounds[] = {
    50000,   100000,   250000,   500000,   1000000,   2500000,
    5000000, 10000000, 30000000, 60000000, 120000000, 300000000,
};
static const int64_t gc_bounds[] = {
    100, 500, 1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000,
};
#define SPEC(a)                                                                                    \
    {                                                                                              \
        a, sizeof a / sizeof a[0]                                                                  \
    }
static const struct histo_spec relay_spec = SPEC(relay_bounds);
static const struct histo_spec wake_spec = SPEC(wake_bounds);
static const struct histo_spec gc_spec = SPEC(gc_bounds);

static void observe(struct histo *h, const struct histo_spec *spec, int64_t us)
{
    if (us < 0)
        us = 0;
    unsigned i = 0;
    while (i < spec->n && us > spec->bounds_us[i])
        i++;
    bump(&h->buckets[i], 1);
    bump(&h->sum_us, (uint64_t)us);
}

/* ---- series keyed by label values ---- */

#define KEY_MAX 232 /* an Llm name, a NUL, an owner */

struct series {
    size_t klen;
    char key[KEY_MAX];
    counter c[]; /* the table's ncounters */
};

struct table {
    _Atomic(struct series *) *cells;
    unsigned mask;
    unsigned max;
    atomic_uint count;
    size_t ncounters;
    struct series *other; /* METRICS_OTHER's */
};

static struct series *series_new(const struct table *t, const char *key, size_t klen)
{
    struct series *s = calloc(1, sizeof *s + t->ncounters * sizeof(counter));
    if (!s)
        return NULL;
    memcpy(s->key, key, klen);
    s->klen = klen;
    for (size_t i = 0; i < t->ncounters; i++)
        atomic_init(&s->c[i], 0);
    return s;
}

static int table_init(struct table *t, unsigned max, size_t ncounters, const char *other,
                      size_t other_len)
{
    unsigned cells = 1;
    while (cells < 2 * max)
        cells <<= 1;
    t->cells = calloc(cells, sizeof *t->cells);
    t->mask = cells - 1;
    t->max = max;
    t->ncounters = ncounters;
    atomic_init(&t->count, 0);
    for (unsigned i = 0; t->cells && i < cells; i++)
        atomic_init(&t->cells[i], NULL);
    t->other = series_new(t, other, other_len);
    return t->cells && t->other ? 0 : -1;
}

static void table_release(struct table *t)
{
    for (unsigned i = 0; t->cells && i <= t->mask; i++)
        free(atomic_load(&t->cells[i]));
    free(t->cells);
    free(t->other);
}

static uint32_t hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* The series of key, added if need be; the fold series past the cap. */
static struct series *table_get(struct table *t, const char *key, size_t klen)
{
    if (klen == 0 || klen > KEY_MAX)
        return t->other;
    uint32_t h = hash(key, klen);
    for (unsigned i = 0; i <= t->mask; i++) {
        _Atomic(struct series *) *cell = &t->cells[(h + i) & t->mask];
        struct series *s = atomic_load_explicit(cell, memory_order_acquire);
        if (!s) {
            if (atomic_fetch_add(&t->count, 1) >= t->max) {
                atomic_fetch_sub(&t->count, 1);
                return t->other;
            }
            struct series *fresh = series_new(t, key, klen);
            if (!fresh) {
                atomic_fetch_sub(&t->count, 1);
                return t->other;
            }
            if (atomic_compare_exchange_strong_explicit(cell, &s, fresh, memory_order_acq_rel,
                                                        memory_order_acquire))
                return fresh;
            /* Another thread took the cell first: s is its series. */
            free(fresh);
            atomic_fetch_sub(&t->count, 1);
        }
        if (s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
    return t->other;
}

static int compare_series(const void *a, const void *b)
{
    const struct series *x = *(struct series *const *)a, *y = *(struct series *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* The table's series sorted by key, the fold series last; caller frees.
 * NULL when out of memory. */
static struct series **table_snapshot(struct table *t, size_t *n)
{
    struct series **all = calloc(t->max + 1, sizeof *all);
    size_t k = 0;
    for (unsigned i = 0; all && i <= t->mask && k < t->max; i++) {
        struct series *s = atomic_load_explicit(&t->cells[i], memory_order_acquire);
        if (s)
            all[k++] = s;
    }
    if (all) {
        qsort(all, k, sizeof *all, compare_series);
        all[k++] = t->other;
    }
    *n = k;
    return all;
}

/* ---- the registry ---- */

enum token_kind { TOKENS_PROMPT, TOKENS_COMPLETION, TOKEN_KINDS };

struct metrics {
    const struct metrics_route *routes;
    unsigned nroutes;
    int *relay_of; /* route -> its index among the relayed routes, or -1 */
    unsigned nrelayed;
    unsigned char slot_of[STATUS_TABLE];
    counter *http;            /* [route][status slot] */
    struct histo *first_byte; /* [relayed route] */
    struct histo *duration;   /* [relayed route] */
    struct table llms;        /* counters: [relayed route][status slot] */
    struct table tokens;      /* key "llm\0owner"; counters: [token kind] */
    counter stream_events;
    counter wakes[BROKER_WAKE_OUTCOMES];
    struct histo wake_duration[BROKER_WAKE_OUTCOMES];
    counter gc_batches[2]; /* [ok] */
    counter gc_inactivated, gc_deleted;
    struct histo gc_duration;
    int64_t started_ms;
};

static unsigned status_slot(const struct metrics *m, unsigned status)
{
    if (status < STATUS_TABLE)
        return m->slot_of[status];
    return NSTATUS - 1;
}

static void init_histos(struct histo *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k <= HISTO_MAX; k++)
            atomic_init(&h[i].buckets[k], 0);
        atomic_init(&h[i].sum_us, 0);
    }
}

static void init_counters(counter *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        atomic_init(&c[i], 0);
}

struct metrics *metrics_new(const struct metrics_route *routes, unsigned nroutes)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->routes = routes;
    m->nroutes = nroutes;
    m->started_ms = clock_wall_ms();
    for (unsigned st = 0; st < STATUS_TABLE; st++) {
        unsigned slot = st >= 100 ? NKNOWN + st / 100 - 1 : NSTATUS - 1;
        for (unsigned k = 0; k < NKNOWN; k++)
            if (known_statuses[k] == st)
                slot = k;
        m->slot_of[st] = (unsigned char)slot;
    }
    for (unsigned i = 0; i < nroutes; i++) {
        if (!routes[i].label) { /* a route added without its label */
            free(m);
            return NULL;
        }
    }
    m->relay_of = calloc(nroutes ? nroutes : 1, sizeof *m->relay_of);
    for (unsigned i = 0; m->relay_of && i < nroutes; i++)
        m->relay_of[i] = routes[i].relayed ? (int)m->nrelayed++ : -1;
    size_t nrel = m->nrelayed ? m->nrelayed : 1;
    m->http = calloc((size_t)nroutes * NSTATUS + 1, sizeof *m->http);
    m->first_byte = calloc(nrel, sizeof *m->first_byte);
    m->duration = calloc(nrel, sizeof *m->duration);
    static const char token_other[] = METRICS_OTHER "\0" METRICS_OTHER;
    if (!m->relay_of || !m->http || !m->first_byte || !m->duration ||
        table_init(&m->llms, METRICS_LLM_MAX, nrel * NSTATUS, METRICS_OTHER,
                   sizeof METRICS_OTHER - 1) < 0 ||
        table_init(&m->tokens, METRICS_TOKEN_SERIES_MAX, TOKEN_KINDS, token_other,
                   sizeof token_other - 1) < 0) {
        metrics_free(m);
        return NULL;
    }
    init_counters(m->http, (size_t)nroutes * NSTATUS);
    init_histos(m->first_byte, nrel);
    init_histos(m->duration, nrel);
    init_counters(&m->stream_events, 1);
    init_counters(m->wakes, BROKER_WAKE_OUTCOMES);
    init_histos(m->wake_duration, BROKER_WAKE_OUTCOMES);
    init_counters(m->gc_batches, 2);
    init_counters(&m->gc_inactivated, 1);
    init_counters(&m->gc_deleted, 1);
    init_histos(&m->gc_duration, 1);
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    table_release(&m->llms);
    table_release(&m->tokens);
    free(m->relay_of);
    free(m->http);
    free(m->first_byte);
    free(m->duration);
    free(m);
}

void metrics_request(struct metrics *m, const struct metrics_request *rq)
{
    if (!m || rq->route >= m->nroutes)
        return;
    unsigned slot = status_slot(m, rq->status);
    bump(&m->http[rq->route * NSTATUS + slot], 1);
    int k = m->relay_of[rq->route];
    if (k < 0)
        return;
    struct series *s = rq->llm ? table_get(&m->llms, rq->llm, strlen(rq->llm)) : m->llms.other;
    bump(&s->c[(unsigned)k * NSTATUS + slot], 1);
    observe(&m->duration[k], &relay_spec, rq->duration_us);
    if (rq->first_byte_us >= 0)
        observe(&m->first_byte[k], &relay_spec, rq->first_byte_us);
}

void metrics_stream_events(struct metrics *m, unsigned n)
{
    if (m && n)
        bump(&m->stream_events, n);
}

void metrics_wake(void *ud, enum broker_wake_outcome outcome, int64_t duration_ms)
{
    struct metrics *m = ud;
    if (!m || outcome >= BROKER_WAKE_OUTCOMES)
        return;
    bump(&m->wakes[outcome], 1);
    observe(&m->wake_duration[outcome], &wake_spec, duration_ms * 1000);
}

void metrics_gc_batch(struct metrics *m, bool ok, int inactivated, int deleted, int64_t duration_us)
{
    if (!m)
        return;
    bump(&m->gc_batches[ok], 1);
    if (inactivated > 0)
        bump(&m->gc_inactivated, (uint64_t)inactivated);
    if (deleted > 0)
        bump(&m->gc_deleted, (uint64_t)deleted);
    observe(&m->gc_duration, &gc_spec, duration_us);
}

void metrics_add_tokens(struct metrics *m, const char *llm, const char *owner, uint64_t prompt,
                        uint64_t completion)
{
    if (!m || !llm || !owner)
        return;
    char key[KEY_MAX];
    size_t ln = strlen(llm), on = strlen(owner);
    struct series *s = m->tokens.other;
    if (ln + 1 + on <= sizeof key) {
        memcpy(key, llm, ln);
        key[ln] = '\0';
        memcpy(key + ln + 1, owner, on);
        s = table_get(&m->tokens, key, ln + 1 + on);
    }
    if (prompt)
        bump(&s->c[TOKENS_PROMPT], prompt);
    if (completion)
        bump(&s->c[TOKENS_COMPLETION], completion);
}

/* ---- the exposition ---- */

/* The text being built; err is set once an append failed. */
struct expo {
    struct buf *b;
    int err;
};

static void put(struct expo *o, const char *s, size_t n)
{
    if (buf_append(o->b, s, n) < 0)
        o->err = -1;
}

static void put_str(struct expo *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putf(struct expo *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct expo *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        o->err = -1;
    else
        put(o, line, (size_t)n);
}

static void header(struct expo *o, const char *name, const char *type, const char *help)
{
    putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with the format's escapes: backslash, quote, newline. */
static void label_value(struct expo *o, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *esc = s[i] == '\\'   ? "\\\\"
                          : s[i] == '"'  ? "\\\""
                          : s[i] == '\n' ? "\\n"
                                         : NULL;
        if (!esc)
            continue;
        put(o, s + run, i - run);
        put_str(o, esc);
        run = i + 1;
    }
    put(o, s + run, n - run);
}

/* name{key="value", plus what the caller appends before the closing brace. */
static void sample_open(struct expo *o, const char *name, const char *key, const char *value,
                        size_t n)
{
    put_str(o, name);
    put(o, "{", 1);
    put_str(o, key);
    put(o, "=\"", 2);
    label_value(o, value, n);
    put(o, "\"", 1);
}

static void status_label(struct expo *o, unsigned slot)
{
    put_str(o, ",status=\"");
    if (slot < NKNOWN)
        putf(o, "%u", known_statuses[slot]);
    else
        put_str(o, class_labels[slot - NKNOWN]);
    put(o, "\"", 1);
}

/* Seconds from microseconds, as short as exact: "0.0005", "2.5", "600". */
static void seconds(char *out, size_t len, int64_t us)
{
    snprintf(out, len, "%.6g", (double)us / 1e6);
}

/* name_bucket, _sum and _count of h; labels holds the label pairs that
 * come before le, escaped, or "". */
static void render_histo(struct expo *o, const char *name, const char *labels, struct histo *h,
                         const struct histo_spec *spec)
{
    uint64_t cum = 0;
    const char *comma = labels[0] ? "," : "";
    for (unsigned i = 0; i <= spec->n; i++) {
        char le[32] = "+Inf";
        cum += peek(&h->buckets[i]);
        if (i < spec->n)
            seconds(le, sizeof le, spec->bounds_us[i]);
        putf(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, comma, le,
             (unsigned long long)cum);
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    putf(o, "%s_sum%s%s%s %.6f\n", name, open, labels, close, (double)peek(&h->sum_us) / 1e6);
    putf(o, "%s_count%s%s%s %llu\n", name, open, labels, close, (unsigned long long)cum);
}

static void render_requests(struct metrics *m, struct expo *o)
{
    static const char name[] = "mcpd_http_requests_total";
    header(o, name, "counter",
           "HTTP requests answered or ended, by route and status (no response sent: 499 when the "
           "peer left first, else 0).");
    for (unsigned r = 0; r < m->nroutes; r++) {
        const char *route = m->routes[r].label;
        for (unsigned k = 0; k < NSTATUS; k++) {
            uint64_t v = peek(&m->http[r * NSTATUS + k]);
            if (!v)
                continue;
            sample_open(o, name, "route", route, strlen(route));
            status_label(o, k);
            putf(o, "} %llu\n", (unsigned long long)v);
        }
    }
}

static void render_relay(struct metrics *m, struct expo *o)
{
    static const char name[] = "mcpd_relay_requests_total";
    header(o, name, "counter", "Relayed inference requests by Llm, route and status.");
    size_t n;
    struct series **all = table_snapshot(&m->llms, &n);
    if (!all)
        o->err = -1;
    for (size_t i = 0; all && i < n; i++) {
        for (unsigned r = 0; r < m->nroutes; r++) {
            int k = m->relay_of[r];
            for (unsigned st = 0; k >= 0 && st < NSTATUS; st++) {
                uint64_t v = peek(&all[i]->c[(unsigned)k * NSTATUS + st]);
                if (!v)
                    continue;
                sample_open(o, name, "llm", all[i]->key, all[i]->klen);
                put_str(o, ",route=\"");
                label_value(o, m->routes[r].label, strlen(m->routes[r].label));
                put(o, "\"", 1);
                status_label(o, st);
                putf(o, "} %llu\n", (unsigned long long)v);
            }
        }
    }
    free(all);
    const char *names[2] = {"mcpd_relay_first_byte_seconds", "mcpd_relay_duration_seconds"};
    const char *helps[2] = {
        "Time from a relayed request to the first byte of its answer (a stream's first event).",
        "Time from a relayed request to the end of its answer."};
    struct histo *sets[2] = {m->first_byte, m->duration};
    for (int h = 0; h < 2; h++) {
        header(o, names[h], "histogram", helps[h]);
        for (unsigned r = 0; r < m->nroutes; r++) {
            /* Route labels are path templates: nothing to escape. */
            char labels[160];
            snprintf(labels, sizeof labels, "route=\"%s\"", m->routes[r].label);
            if (m->relay_of[r] >= 0)
                render_histo(o, names[h], labels, &sets[h][m->relay_of[r]], &relay_spec);
        }
    }
    header(o, "mcpd_relay_stream_events_total", "counter",
           "Events relayed to streaming callers (chunk posts and the events of streamed posts).");
    putf(o, "mcpd_relay_stream_events_total %llu\n", (unsigned long long)peek(&m->stream_events));
}

static void render_wakes(struct metrics *m, struct expo *o)
{
    static const char *const outcomes[BROKER_WAKE_OUTCOMES] = {
        [BROKER_WAKE_GONE] = "disconnected", [BROKER_WAKE_OK] = "ok",
        [BROKER_WAKE_ERROR] = "error",       [BROKER_WAKE_TIMEOUT] = "timeout",
        [BROKER_WAKE_SHUTDOWN] = "shutdown",
    };
    header(o, "mcpd_wakes_total", "counter", "Wakes of hibernating Llms that ended, by outcome.");
    for (int i = 0; i < BROKER_WAKE_OUTCOMES; i++)
        putf(o, "mcpd_wakes_total{outcome=\"%s\"} %llu\n", outcomes[i],
             (unsigned long long)peek(&m->wakes[i]));
    header(o, "mcpd_wake_duration_seconds", "histogram",
           "How long wakes took, from the wake task to its outcome.");
    for (int i = 0; i < BROKER_WAKE_OUTCOMES; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "outcome=\"%s\"", outcomes[i]);
        render_histo(o, "mcpd_wake_duration_seconds", labels, &m->wake_duration[i], &wake_spec);
    }
}

static void render_gc(struct metrics *m, struct expo *o)
{
    header(o, "mcpd_gc_batches_total", "counter",
           "GC batches (one transaction each), by result (error: the database failed it).");
    putf(o, "mcpd_gc_batches_total{result=\"ok\"} %llu\n",
         (unsigned long long)peek(&m->gc_batches[1]));
    putf(o, "mcpd_gc_batches_total{result=\"error\"} %llu\n",
         (unsigned long long)peek(&m->gc_batches[0]));
    header(o, "mcpd_gc_rows_total", "counter",
           "Llm rows the GC changed: made inactive (no heartbeat) or deleted (retention over).");
    putf(o, "mcpd_gc_rows_total{action=\"inactivated\"} %llu\n",
         (unsigned long long)peek(&m->gc_inactivated));
    putf(o, "mcpd_gc_rows_total{action=\"deleted\"} %llu\n",
         (unsigned long long)peek(&m->gc_deleted));
    header(o, "mcpd_gc_batch_duration_seconds", "histogram", "How long GC batches took.");
    render_histo(o, "mcpd_gc_batch_duration_seconds", "", &m->gc_duration, &gc_spec);
}

static void render_tokens(struct metrics *m, struct expo *o)
{
    static const char name[] = "mcpd_tokens_total";
    static const char *const kinds[TOKEN_KINDS] = {"prompt", "completion"};
    header(o, name, "counter",
           "Tokens backends reported in relayed answers, by Llm, owner and kind.");
    size_t n;
    struct series **all = table_snapshot(&m->tokens, &n);
    if (!all)
        o->err = -1;
    for (size_t i = 0; all && i < n; i++) {
        struct series *s = all[i];
        size_t ln = strlen(s->key); /* the Llm; the owner follows its NUL */
        for (int k = 0; k < TOKEN_KINDS; k++) {
            uint64_t v = peek(&s->c[k]);
            if (!v)
                continue;
            sample_open(o, name, "llm", s->key, ln);
            put_str(o, ",owner=\"");
            label_value(o, s->key + ln + 1, s->klen - ln - 1);
            putf(o, "\",kind=\"%s\"} %llu\n", kinds[k], (unsigned long long)v);
        }
    }
    free(all);
}

static void render_gauges(struct metrics *m, const struct metrics_gauges *g, struct expo *o)
{
    const struct broker_stats *b = &g->broker;
    header(o, "mcpd_build_info", "gauge", "mcpd's version, as a label; always 1.");
    putf(o, "mcpd_build_info{version=\"%s\"} 1\n", MCP_VERSION);
    header(o, "process_start_time_seconds", "gauge",
           "When mcpd started, in seconds since the Unix epoch.");
    putf(o, "process_start_time_seconds %.3f\n", (double)m->started_ms / 1e3);
    header(o, "mcpd_http_connections_open", "gauge", "Open HTTP connections.");
    putf(o, "mcpd_http_connections_open %u\n", g->connections_open);
    header(o, "mcpd_http_connections_limit", "gauge",
           "Open connections allowed at once (--max-connections, or what the open-file limit "
           "allows).");
    putf(o, "mcpd_http_connections_limit %u\n", g->connections_max);
    header(o, "mcpd_publisher_sessions", "gauge",
           "Provider sessions mcpd holds, by state: streaming (a control stream is bound) or "
           "idle.");
    putf(o, "mcpd_publisher_sessions{state=\"streaming\"} %u\n", b->live_sessions);
    putf(o, "mcpd_publisher_sessions{state=\"idle\"} %u\n",
         b->sessions > b->live_sessions ? b->sessions - b->live_sessions : 0);
    if (g->llms_ok) {
        static const char *const kinds[2] = {"public", "virtual"};
        static const char *const statuses[3] = {"active", "inactive", "hibernating"};
        header(o, "mcpd_llms", "gauge", "Llm rows in the database, by kind and status.");
        for (int k = 0; k < 2; k++)
            for (int s = 0; s < 3; s++)
                putf(o, "mcpd_llms{kind=\"%s\",status=\"%s\"} %u\n", kinds[k], statuses[s],
                     g->llms[k][s]);
    }
    header(o, "mcpd_control_streams_open", "gauge", "Open control streams.");
    putf(o, "mcpd_control_streams_open %u\n", b->streams);
    header(o, "mcpd_control_streams_cut_total", "counter",
           "Control streams cut off because their publisher stopped reading them.");
    putf(o, "mcpd_control_streams_cut_total %u\n", b->overflows);
    header(o, "mcpd_tasks_in_flight", "gauge",
           "Tasks sent to publishers and not yet over, by kind.");
    putf(o, "mcpd_tasks_in_flight{kind=\"infer\"} %u\n",
         b->tasks > b->wakes ? b->tasks - b->wakes : 0);
    putf(o, "mcpd_tasks_in_flight{kind=\"wake\"} %u\n", b->wakes);
    header(o, "mcpd_callers_waiting", "gauge",
           "Callers whose relayed request is in progress (waiting, held or streaming).");
    putf(o, "mcpd_callers_waiting %u\n", b->calls);
    header(o, "mcpd_callers_held", "gauge", "Callers held while their Llm wakes.");
    putf(o, "mcpd_callers_held %u\n", b->held);
    header(o, "mcpd_access_log_write_errors_total", "counter",
           "Access log lines that could not be written.");
    putf(o, "mcpd_access_log_write_errors_total %llu\n", (unsigned long long)g->access_log_errors);
}

/* ---- pools ---- */

/* One family's samples, one per pool member. */
struct pool_family {
    struct expo *o;
    const char *name;
    bool failovers; /* else requests */
};

static void on_member(void *ud, const struct broker_member_stats *ms)
{
    struct pool_family *f = ud;
    sample_open(f->o, f->name, "pool", ms->pool, strlen(ms->pool));
    put_str(f->o, ",llm=\"");
    label_value(f->o, ms->llm, strlen(ms->llm));
    putf(f->o, "\"} %llu\n", (unsigned long long)(f->failovers ? ms->failovers : ms->requests));
}

int metrics_render_pools(struct broker *b, struct buf *out)
{
    struct expo o = {out, 0};
    struct pool_family req = {&o, "mcpd_pool_member_requests_total", false};
    struct pool_family fail = {&o, "mcpd_pool_member_failovers_total", true};
    header(&o, req.name, "counter", "Calls naming a pool that were sent to this member.");
    broker_pool_stats(b, on_member, &req);
    header(&o, fail.name, "counter",
           "Of those, calls that failed on this member before their first byte and went to "
           "another.");
    broker_pool_stats(b, on_member, &fail);
    return o.err;
}

int metrics_render(struct metrics *m, const struct metrics_gauges *g, struct buf *out)
{
    struct expo o = {out, 0};
    render_gauges(m, g, &o);
    render_requests(m, &o);
    render_relay(m, &o);
    render_wakes(m, &o);
    render_gc(m, &o);
    render_tokens(m, &o);
    return o.err;
}
