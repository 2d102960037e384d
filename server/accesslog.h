/*
 * accesslog.h - one logfmt line per HTTP request, written when the request
 * is over (docs/operations.md describes every field).
 *
 * Lines go to stderr, to a file opened with O_APPEND, or nowhere. A line is
 * formatted on the worker's stack, then appended to a buffer of PIPE_BUF
 * bytes under a mutex held only for copies: when the next line does not
 * fit, the worker takes the buffer's lines out and writes them with one
 * write(2) after releasing it, and accesslog_flush() (the housekeeper,
 * every ACCESSLOG_FLUSH_MS) does the same for what is left. A write of at
 * most PIPE_BUF bytes is atomic on a pipe and with O_APPEND, so lines never
 * interleave with other writers', and one write serves about twenty
 * requests: one per line cost ~4 us each and made the workers queue on
 * the file's lock. Two buffers taken at the same moment may reach the
 * file in either order.
 * accesslog_reopen() (SIGHUP, for logrotate) writes what is buffered,
 * opens the file again and moves it under the same descriptor with
 * dup3(), so a write meanwhile goes whole to the old file or the new one,
 * never to a closed or reused descriptor.
 *
 * Any thread may write and flush; reopen and free run on the main thread.
 */
#ifndef MCPD_ACCESSLOG_H
#define MCPD_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

/* The longest line, newline included: less than PIPE_BUF. */
#define ACCESSLOG_LINE_MAX 4000
/* Buffered lines are written at least this often. */
#define ACCESSLOG_FLUSH_MS 100
/* Longer paths are cut to this many bytes and end in "...". */
#define ACCESSLOG_PATH_MAX 256

/* What one line records. Strings are borrowed; NULL or "" print as "-". */
struct accesslog_entry {
    int64_t time_ms;    /* wall clock when the request ended */
    const char *remote; /* the peer, "addr:port" */
    const char *owner;  /* the token's owner */
    const char *method;
    const char *path; /* as routed: no query string */
    const char *llm;  /* the Llm of a relayed request */
    unsigned status;  /* none sent: 499 (the peer left first) or 0 */
    uint64_t bytes;   /* body bytes handed to libmicrohttpd */
    int64_t duration_us;
    int64_t ttfb_us; /* a streamed body's first byte; < 0: not a stream */
    const char *end; /* why the request ended early, or NULL */
};

struct accesslog;

/* target is a file path, "-" (stderr) or "off". Returns 0 with *out set —
 * NULL for "off" — or -1 with the reason in err. A file is created 0640. */
int accesslog_open(const char *target, struct accesslog **out, char *err, size_t errlen);
/* Opens the file again (it may have been renamed): 0, or -1 with errno set
 * and the old file still in use. Nothing to do for stderr or NULL. */
int accesslog_reopen(struct accesslog *al);
/* Writes what is buffered and closes the file. NULL is a no-op. */
void accesslog_free(struct accesslog *al);

/* Adds e's line; it is written once the buffer is full or flushed. NULL
 * is a no-op. Lines whose write fails are counted, not retried. */
void accesslog_write(struct accesslog *al, const struct accesslog_entry *e);
/* Writes the buffered lines now. NULL is a no-op. */
void accesslog_flush(struct accesslog *al);
/* Lines that could not be written (a full disk, a closed pipe). */
uint64_t accesslog_errors(const struct accesslog *al);

/* Formats e's line, newline included, into out (at least
 * ACCESSLOG_LINE_MAX bytes); returns its length. */
size_t accesslog_format(const struct accesslog_entry *e, char *out);

#endif
