/*
 * accesslog.c - the access log: logfmt lines, one write(2) each.
 */
#include "accesslog.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(ACCESSLOG_LINE_MAX <= PIPE_BUF, "a line must be written atomically");

struct accesslog {
    int fd;
    bool owned; /* a file of ours, not stderr */
    char *path;
    atomic_uint_fast64_t errors;
    /* Whole lines not yet written; mu guards them, never a write. */
    pthread_mutex_t mu;
    size_t len;
    unsigned lines;
    char buf[PIPE_BUF];
};

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

int accesslog_open(const char *target, struct accesslog **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strcmp(target, "off") == 0)
        return 0;
    struct accesslog *al = calloc(1, sizeof *al);
    if (!al) {
        snprintf(err, errlen, "cannot open the access log: out of memory");
        return -1;
    }
    atomic_init(&al->errors, 0);
    pthread_mutex_init(&al->mu, NULL);
    if (strcmp(target, "-") == 0) {
        al->fd = STDERR_FILENO;
    } else {
        al->path = strdup(target);
        al->fd = al->path ? open_file(target) : -1;
        if (al->fd < 0) {
            snprintf(err, errlen, "cannot open access log '%s': %s", target, strerror(errno));
            al->owned = false;
            accesslog_free(al);
            return -1;
        }
        al->owned = true;
    }
    *out = al;
    return 0;
}

/* Whole lines taken out of the buffer (mu held), to write with emit()
 * once it is released: a worker never waits for another's write. */
struct chunk {
    size_t len;
    unsigned lines;
    char data[PIPE_BUF];
};

static void take(struct accesslog *al, struct chunk *c)
{
    memcpy(c->data, al->buf, al->len);
    c->len = al->len;
    c->lines = al->lines;
    al->len = 0;
    al->lines = 0;
}

static void emit(struct accesslog *al, const struct chunk *c)
{
    if (c->len == 0)
        return;
    ssize_t w;
    do
        w = write(al->fd, c->data, c->len);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)c->len)
        atomic_fetch_add_explicit(&al->errors, c->lines, memory_order_relaxed);
}

void accesslog_flush(struct accesslog *al)
{
    if (!al)
        return;
    struct chunk c;
    pthread_mutex_lock(&al->mu);
    take(al, &c);
    pthread_mutex_unlock(&al->mu);
    emit(al, &c);
}

int accesslog_reopen(struct accesslog *al)
{
    if (!al || !al->owned)
        return 0;
    accesslog_flush(al); /* what came before goes to the old file */
    int fd = open_file(al->path);
    if (fd < 0)
        return -1;
    /* Atomic: writers see the old file or the new one under al->fd. */
    int rc = dup3(fd, al->fd, O_CLOEXEC) < 0 ? -1 : 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

void accesslog_free(struct accesslog *al)
{
    if (!al)
        return;
    accesslog_flush(al);
    pthread_mutex_destroy(&al->mu);
    if (al->owned)
        close(al->fd);
    free(al->path);
    free(al);
}

uint64_t accesslog_errors(const struct accesslog *al)
{
    return al ? atomic_load_explicit(&al->errors, memory_order_relaxed) : 0;
}

/* ---- formatting ---- */

/* A line under construction; appends past the end are dropped. */
struct line {
    char *p;
    size_t len;
    size_t cap; /* room left for the newline */
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static bool needs_quotes(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

/* " key=value": the value as it is, or quoted with Go's escapes when it
 * holds a blank, '=', a quote, a backslash or a control character. At most
 * max bytes of s are taken; a value cut short ends in "...". */
static void put_field(struct line *l, const char *key, const char *s, size_t max)
{
    put(l, " ", 1);
    put_str(l, key);
    put(l, "=", 1);
    if (!s || !*s) {
        put(l, "-", 1);
        return;
    }
    size_t n = strlen(s);
    bool cut = n > max;
    if (cut)
        n = max;
    if (!needs_quotes(s, n)) {
        put(l, s, n);
        if (cut)
            put(l, "...", 3);
        return;
    }
    put(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[5] = {'\\', 0, 0, 0, 0};
        size_t k = 2;
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            if (c >= 0x20 && c != 0x7f) {
                put(l, (const char *)&s[i], 1);
                continue;
            }
            snprintf(esc + 1, 4, "x%02x", c);
            k = 4;
        }
        put(l, esc, k);
    }
    if (cut)
        put(l, "...", 3);
    put(l, "\"", 1);
}

/* " key=12.345": microseconds as milliseconds. */
static void put_ms(struct line *l, const char *key, int64_t us)
{
    char v[48];
    if (us < 0)
        us = 0;
    int n = snprintf(v, sizeof v, " %s=%lld.%03lld", key, (long long)(us / 1000),
                     (long long)(us % 1000));
    put(l, v, (size_t)n);
}

size_t accesslog_format(const struct accesslog_entry *e, char *out)
{
    struct line l = {out, 0, ACCESSLOG_LINE_MAX - 1};
    char ts[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(e->time_ms, ts);
    put_str(&l, "time=");
    put_str(&l, ts);
    put_field(&l, "remote", e->remote, 64);
    put_field(&l, "owner", e->owner, 128);
    put_field(&l, "method", e->method, 16);
    put_field(&l, "path", e->path, ACCESSLOG_PATH_MAX);
    put_field(&l, "llm", e->llm, 128);
    char v[64];
    int n = snprintf(v, sizeof v, " status=%u bytes=%llu", e->status, (unsigned long long)e->bytes);
    put(&l, v, (size_t)n);
    put_ms(&l, "duration_ms", e->duration_us);
    if (e->ttfb_us >= 0)
        put_ms(&l, "ttfb_ms", e->ttfb_us);
    if (e->end)
        put_field(&l, "end", e->end, 32);
    out[l.len++] = '\n';
    return l.len;
}

void accesslog_write(struct accesslog *al, const struct accesslog_entry *e)
{
    if (!al)
        return;
    char line[ACCESSLOG_LINE_MAX];
    size_t n = accesslog_format(e, line);
    struct chunk full;
    full.len = 0;
    pthread_mutex_lock(&al->mu);
    if (al->len + n > sizeof al->buf)
        take(al, &full);
    memcpy(al->buf + al->len, line, n);
    al->len += n;
    al->lines++;
    pthread_mutex_unlock(&al->mu);
    emit(al, &full);
}
