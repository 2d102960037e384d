/*
 * accesslog.c - the access log: logfmt lines, gathered in buffers of
 * PIPE_BUF bytes that a thread of its own writes.
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

/* Whole lines, written with one write(2). */
struct chunk {
    struct chunk *next;
    size_t len;
    unsigned lines;
    char data[PIPE_BUF];
};

/* Chunks kept for reuse rather than freed. */
#define SPARE_MAX 16

struct accesslog {
    int fd;
    char *path; /* the file's; NULL: stderr */
    atomic_uint_fast64_t errors;
    pthread_t writer;
    /* The rest under mu. */
    pthread_mutex_t mu;
    pthread_cond_t work; /* for the writer: chunks queued, or stop */
    pthread_cond_t idle; /* for reopen: the writer has written all */
    struct chunk *cur;   /* being filled */
    struct chunk *head, *tail;
    unsigned queued; /* chunks queued or being written */
    bool writing;
    bool stop;
    struct chunk *spare;
    unsigned nspare;
};

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

/* Queues the chunk being filled, if it has lines (mu held). */
static void enqueue_current(struct accesslog *al)
{
    struct chunk *c = al->cur;
    if (!c || c->len == 0)
        return;
    al->cur = NULL;
    c->next = NULL;
    if (al->tail)
        al->tail->next = c;
    else
        al->head = c;
    al->tail = c;
    al->queued++;
    pthread_cond_signal(&al->work);
}

static void *writer_main(void *arg)
{
    struct accesslog *al = arg;
    pthread_mutex_lock(&al->mu);
    for (;;) {
        while (!al->head && !al->stop)
            pthread_cond_wait(&al->work, &al->mu);
        if (!al->head)
            break; /* stopped, and all is written */
        struct chunk *list = al->head;
        al->head = al->tail = NULL;
        al->writing = true;
        pthread_mutex_unlock(&al->mu);
        unsigned done = 0;
        for (struct chunk *c = list; c; c = c->next, done++) {
            ssize_t w;
            do
                w = write(al->fd, c->data, c->len);
            while (w < 0 && errno == EINTR);
            if (w != (ssize_t)c->len)
                atomic_fetch_add_explicit(&al->errors, c->lines, memory_order_relaxed);
        }
        pthread_mutex_lock(&al->mu);
        while (list) {
            struct chunk *c = list;
            list = c->next;
            if (al->nspare < SPARE_MAX) {
                c->next = al->spare;
                al->spare = c;
                al->nspare++;
            } else {
                free(c);
            }
        }
        al->queued -= done;
        al->writing = false;
        if (!al->head)
            pthread_cond_broadcast(&al->idle);
    }
    pthread_mutex_unlock(&al->mu);
    return NULL;
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
    pthread_cond_init(&al->work, NULL);
    pthread_cond_init(&al->idle, NULL);
    al->fd = STDERR_FILENO;
    if (strcmp(target, "-") != 0) {
        al->path = strdup(target);
        al->fd = al->path ? open_file(target) : -1;
    }
    if (al->fd < 0) {
        snprintf(err, errlen, "cannot open access log '%s': %s", target, strerror(errno));
    } else if (pthread_create(&al->writer, NULL, writer_main, al) != 0) {
        snprintf(err, errlen, "cannot start the access log's writer thread");
    } else {
        *out = al;
        return 0;
    }
    if (al->path && al->fd >= 0)
        close(al->fd);
    pthread_cond_destroy(&al->idle);
    pthread_cond_destroy(&al->work);
    pthread_mutex_destroy(&al->mu);
    free(al->path);
    free(al);
    return -1;
}

void accesslog_flush(struct accesslog *al)
{
    if (!al)
        return;
    pthread_mutex_lock(&al->mu);
    enqueue_current(al);
    pthread_mutex_unlock(&al->mu);
}

/* Returns, mu held, once every line added so far is written; the writer
 * stays idle until mu is released. */
static void drain(struct accesslog *al)
{
    pthread_mutex_lock(&al->mu);
    enqueue_current(al);
    while (al->head || al->writing)
        pthread_cond_wait(&al->idle, &al->mu);
}

void accesslog_sync(struct accesslog *al)
{
    if (!al)
        return;
    drain(al);
    pthread_mutex_unlock(&al->mu);
}

int accesslog_reopen(struct accesslog *al)
{
    if (!al || !al->path)
        return 0;
    int fd = open_file(al->path);
    if (fd < 0)
        return -1;
    drain(al); /* what came before goes to the old file */
    int rc = dup3(fd, al->fd, O_CLOEXEC) < 0 ? -1 : 0;
    int saved = errno;
    pthread_mutex_unlock(&al->mu);
    close(fd);
    errno = saved;
    return rc;
}

void accesslog_free(struct accesslog *al)
{
    if (!al)
        return;
    pthread_mutex_lock(&al->mu);
    enqueue_current(al);
    al->stop = true;
    pthread_cond_signal(&al->work);
    pthread_mutex_unlock(&al->mu);
    pthread_join(al->writer, NULL); /* it writes what is queued first */
    free(al->cur);
    while (al->spare) {
        struct chunk *c = al->spare;
        al->spare = c->next;
        free(c);
    }
    pthread_cond_destroy(&al->idle);
    pthread_cond_destroy(&al->work);
    pthread_mutex_destroy(&al->mu);
    if (al->path)
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

/* Appends n in decimal, at least width digits (zero-padded). */
static void put_uint(struct line *l, uint64_t n, int width)
{
    char d[24];
    int k = 0;
    do {
        d[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n || k < width);
    char out[24];
    for (int i = 0; i < k; i++)
        out[i] = d[k - 1 - i];
    put(l, out, (size_t)k);
}

/* " key=12.345": microseconds as milliseconds. */
static void put_ms(struct line *l, const char *key, int64_t us)
{
    if (us < 0)
        us = 0;
    put(l, " ", 1);
    put_str(l, key);
    put(l, "=", 1);
    put_uint(l, (uint64_t)us / 1000, 1);
    put(l, ".", 1);
    put_uint(l, (uint64_t)us % 1000, 3);
}

/* "time=2026-01-02T03:04:05.678Z". The second's text is kept per thread:
 * formatting a date costs more than the rest of a line. */
static void put_time(struct line *l, int64_t ms)
{
    static _Thread_local int64_t sec = -1;
    static _Thread_local char text[CLOCK_RFC3339_LEN];
    if (ms / 1000 != sec) {
        clock_format_rfc3339(ms - ms % 1000, text);
        sec = ms / 1000;
    }
    put_str(l, "time=");
    put(l, text, 20); /* up to the seconds' dot */
    put_uint(l, (uint64_t)(ms % 1000), 3);
    put(l, "Z", 1);
}

size_t accesslog_format(const struct accesslog_entry *e, char *out)
{
    struct line l = {out, 0, ACCESSLOG_LINE_MAX - 1};
    put_time(&l, e->time_ms < 0 ? 0 : e->time_ms);
    put_field(&l, "remote", e->remote, 64);
    put_field(&l, "owner", e->owner, 128);
    put_field(&l, "method", e->method, 16);
    put_field(&l, "path", e->path, ACCESSLOG_PATH_MAX);
    put_field(&l, "llm", e->llm, 128);
    put_str(&l, " status=");
    put_uint(&l, e->status, 1);
    put_str(&l, " bytes=");
    put_uint(&l, e->bytes, 1);
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
    pthread_mutex_lock(&al->mu);
    if (al->cur && al->cur->len + n > sizeof al->cur->data)
        enqueue_current(al);
    if (!al->cur && al->queued < ACCESSLOG_QUEUE_MAX) {
        al->cur = al->spare;
        if (al->cur) {
            al->spare = al->cur->next;
            al->nspare--;
        } else {
            al->cur = malloc(sizeof *al->cur);
        }
        if (al->cur) {
            al->cur->len = 0;
            al->cur->lines = 0;
        }
    }
    if (al->cur) {
        memcpy(al->cur->data + al->cur->len, line, n);
        al->cur->len += n;
        al->cur->lines++;
    } else {
        /* The writer is that far behind (or memory ran out): drop it. */
        atomic_fetch_add_explicit(&al->errors, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&al->mu);
}
