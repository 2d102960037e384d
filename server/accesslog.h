/*
 * accesslog.h - one logfmt line per HTTP request, written when the request
 * is over (docs/operations.md describes every field).
 *
 * Lines go to stderr, to a file opened with O_APPEND, or nowhere. A line is
 * formatted on the worker's stack and appended, under a mutex held only
 * for that copy, to a chunk of PIPE_BUF bytes; a full chunk — or any
 * chunk once accesslog_flush() is called (the housekeeper, every
 * ACCESSLOG_FLUSH_MS) — is queued for a writer thread of the log's own,
 * which writes each with one write(2). No worker ever waits for the disk
 * or a pipe: past ACCESSLOG_QUEUE_MAX chunks queued, lines are dropped
 * and counted. A write of at most PIPE_BUF bytes is atomic on a pipe and
 * with O_APPEND, so lines never interleave with other writers', and one
 * write serves about twenty requests (one per line, from the workers,
 * cost ~4 us each and made them queue on the file's lock). Lines reach
 * the file in the order they were added.
 * accesslog_reopen() (SIGHUP, for logrotate) lets the writer write what
 * is queued, then opens the file again and moves it under the same
 * descriptor with dup3(), so nothing is written to a closed or reused
 * descriptor.
 *
 * Any thread may write and flush; open, reopen and free run on the main
 * thread.
 */
#ifndef MCPD_ACCESSLOG_H
#define MCPD_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

/* The longest line, newline included: less than PIPE_BUF. */
#define ACCESSLOG_LINE_MAX 4000
/* Buffered lines are queued for writing at least this often. */
#define ACCESSLOG_FLUSH_MS 100
/* Chunks queued at most (4 MiB of lines); past it lines are dropped. */
#define ACCESSLOG_QUEUE_MAX 1024
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
/* Writes every line added, stops the writer and closes the file. NULL is
 * a no-op. */
void accesslog_free(struct accesslog *al);

/* Adds e's line; it is written once its chunk is full or flushed. NULL
 * is a no-op. Lines dropped (the queue is full) or whose write failed are
 * counted, not retried. */
void accesslog_write(struct accesslog *al, const struct accesslog_entry *e);
/* Queues the lines added so far for writing. NULL is a no-op. */
void accesslog_flush(struct accesslog *al);
/* Returns once every line added so far is written. NULL is a no-op. */
void accesslog_sync(struct accesslog *al);
/* Lines dropped or not written (a full disk, a closed pipe). */
uint64_t accesslog_errors(const struct accesslog *al);

/* Formats e's line, newline included, into out (at least
 * ACCESSLOG_LINE_MAX bytes); returns its length. */
size_t accesslog_format(const struct accesslog_entry *e, char *out);

#endif
