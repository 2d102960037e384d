/*
 * usage.c - usage accounting: the scanner that reads a backend's "usage"
 * out of a result, and the in-memory table of counts flushed to the
 * database in batches.
 */
#include "usage.h"
#include "clock.h"
#include "jsonscan.h"
#include "jsonsplit.h"
#include "protocol.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define DAY_MS (86400LL * 1000)
/* A usage object is a few hundred bytes; one larger is not one. */
#define USAGE_OBJECT_MAX 4096

/* ---- reading the counts ---- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether the quote at text[i] is escaped: preceded by an odd number of
 * backslashes. */
static bool escaped(const char *text, size_t i)
{
    size_t k = 0;
    while (k < i && text[i - 1 - k] == '\\')
        k++;
    return k % 2 == 1;
}

/* The length of the object at p (p[0] == '{'), closing brace included,
 * looking at most n bytes; 0 when it does not end within them. */
static size_t object_len(const char *p, size_t n)
{
    struct jsonsplit js;
    jsonsplit_init(&js);
    size_t start, end;
    return jsonsplit_next(&js, p, n, &start, &end) == JSONSPLIT_OBJECT ? end : 0;
}

/* A token count: a whole number of at most 15 digits. */
static bool read_count(const struct json_field *f, int64_t *out)
{
    if (!f || f->kind != JSON_K_NUMBER || f->val_len > 15)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < f->val_len; i++) {
        if (f->val[i] < '0' || f->val[i] > '9')
            return false;
        v = v * 10 + (f->val[i] - '0');
    }
    *out = v;
    return true;
}

/* Takes the counts of the usage object at p (n bytes) into out. */
static void take_counts(const char *p, size_t n, struct broker_usage *out)
{
    struct jsonscan js;
    if (jsonscan_parse(&js, p, n) < 0)
        return;
    int64_t v;
    if (read_count(jsonscan_find(&js, "prompt_tokens"), &v) ||
        read_count(jsonscan_find(&js, "input_tokens"), &v)) {
        out->prompt = v;
        out->has_prompt = true;
    }
    if (read_count(jsonscan_find(&js, "completion_tokens"), &v) ||
        read_count(jsonscan_find(&js, "output_tokens"), &v)) {
        out->completion = v;
        out->has_completion = true;
    }
}

/* usage_scan() over text[from..len): escapes are judged on the whole text. */
static void scan_from(const char *text, size_t len, size_t from, struct broker_usage *out)
{
    static const char key[] = "\"usage\"";
    const size_t klen = sizeof key - 1;
    const char *end = text + len;
    for (const char *at = memmem(text + from, len - from, key, klen); at;
         at = memmem(at + 1, (size_t)(end - at - 1), key, klen)) {
        if (escaped(text, (size_t)(at - text)))
            continue; /* inside a string */
        const char *p = at + klen;
        while (p < end && is_ws(*p))
            p++;
        if (p == end || *p != ':')
            continue; /* "usage" as a value, not a key */
        p++;
        while (p < end && is_ws(*p))
            p++;
        if (p == end || *p != '{')
            continue; /* "usage": null, as chunks before the last have */
        size_t room = (size_t)(end - p);
        size_t n = object_len(p, room < USAGE_OBJECT_MAX ? room : USAGE_OBJECT_MAX);
        if (n > 0)
            take_counts(p, n, out);
    }
}

void usage_scan(const char *text, size_t len, struct broker_usage *out)
{
    if (text && len > 0)
        scan_from(text, len, 0, out);
}

void usage_scan_piece(struct broker_piece *p)
{
    if (!p->data || p->len == 0)
        return;
    switch (p->kind) {
    case PIECE_FINAL:
        scan_from(p->data, p->len, p->len > USAGE_TAIL ? p->len - USAGE_TAIL : 0, &p->usage);
        break;
    case PIECE_CHUNK:
    case PIECE_EVENTS:
        scan_from(p->data, p->len, 0, &p->usage);
        break;
    default:
        break;
    }
}

/* ---- adding them up ---- */

struct usage_key {
    int64_t day; /* days since the epoch, UTC */
    char owner[DB_OWNER_MAX];
    char llm[MCP_NAME_BUF];
};

struct usage_entry {
    struct usage_key key; /* zero-padded: hashed and compared whole */
    int64_t requests, errors, prompt, completion;
    UT_hash_handle hh;
};

struct usage {
    struct db *db;
    pthread_mutex_t flush_mu; /* one flush at a time */
    pthread_mutex_t mu;       /* the table */
    struct usage_entry *table;
};

struct usage *usage_new(struct db *db)
{
    struct usage *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->db = db;
    pthread_mutex_init(&u->flush_mu, NULL);
    pthread_mutex_init(&u->mu, NULL);
    return u;
}

static void table_free(struct usage_entry *table)
{
    struct usage_entry *e, *tmp;
    HASH_ITER(hh, table, e, tmp)
    {
        HASH_DEL(table, e);
        free(e);
    }
}

void usage_free(struct usage *u)
{
    if (!u)
        return;
    table_free(u->table);
    pthread_mutex_destroy(&u->mu);
    pthread_mutex_destroy(&u->flush_mu);
    free(u);
}

/* Adds e's counts to the table (mu held); e is taken, even when merged. */
static void table_add(struct usage *u, struct usage_entry *e)
{
    struct usage_entry *have;
    HASH_FIND(hh, u->table, &e->key, sizeof e->key, have);
    if (!have) {
        HASH_ADD(hh, u->table, key, sizeof e->key, e);
        return;
    }
    have->requests += e->requests;
    have->errors += e->errors;
    have->prompt += e->prompt;
    have->completion += e->completion;
    free(e);
}

void usage_note(struct usage *u, const char *owner, const char *llm, int status, int64_t prompt,
                int64_t completion)
{
    struct usage_key key;
    memset(&key, 0, sizeof key);
    int64_t now = clock_wall_ms();
    key.day = now >= 0 ? now / DAY_MS : 0;
    snprintf(key.owner, sizeof key.owner, "%s", owner);
    snprintf(key.llm, sizeof key.llm, "%s", llm);
    int64_t p = prompt > 0 ? prompt : 0, c = completion > 0 ? completion : 0;
    bool error = status >= 400;
    pthread_mutex_lock(&u->mu);
    struct usage_entry *e;
    HASH_FIND(hh, u->table, &key, sizeof key, e);
    if (!e && (e = calloc(1, sizeof *e)) != NULL) {
        e->key = key;
        HASH_ADD(hh, u->table, key, sizeof e->key, e);
    }
    if (e) {
        e->requests++;
        e->errors += error;
        e->prompt += p;
        e->completion += c;
    }
    pthread_mutex_unlock(&u->mu);
}

int usage_flush(struct usage *u)
{
    pthread_mutex_lock(&u->flush_mu);
    pthread_mutex_lock(&u->mu);
    struct usage_entry *batch = u->table;
    u->table = NULL;
    pthread_mutex_unlock(&u->mu);
    size_t n = HASH_COUNT(batch);
    int rc = DB_OK;
    if (n > 0) {
        struct db_usage *rows = calloc(n, sizeof *rows);
        char(*days)[CLOCK_DAY_LEN] = calloc(n, sizeof *days);
        rc = DB_ERROR;
        if (rows && days) {
            size_t i = 0;
            for (struct usage_entry *e = batch; e; e = e->hh.next, i++) {
                clock_format_day(e->key.day * DAY_MS, days[i]);
                rows[i] = (struct db_usage){
                    .day = days[i],
                    .owner = e->key.owner,
                    .llm = e->key.llm,
                    .requests = e->requests,
                    .errors = e->errors,
                    .prompt_tokens = e->prompt,
                    .completion_tokens = e->completion,
                };
            }
            rc = db_usage_add(u->db, rows, n);
        }
        free(rows);
        free(days);
    }
    if (rc == DB_OK) {
        table_free(batch);
    } else {
        /* Kept for the next flush, with what was noted meanwhile. */
        pthread_mutex_lock(&u->mu);
        struct usage_entry *e, *tmp;
        HASH_ITER(hh, batch, e, tmp)
        {
            HASH_DEL(batch, e);
            table_add(u, e);
        }
        pthread_mutex_unlock(&u->mu);
    }
    pthread_mutex_unlock(&u->flush_mu);
    return rc;
}
