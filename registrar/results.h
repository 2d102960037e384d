/*
 * results.h - a session's result stream (docs/protocol.md, "Result
 * stream"): one long streamed POST to mcpd that carries every final result
 * of the session, one JSON object per task, instead of one request each.
 *
 * A record is the result body a per-task post would carry with the task's
 * id added. Records go out in the order they are pushed; while the stream
 * is idle a blank line goes out every keepalive interval, so that mcpd can
 * tell a live stream from a dead connection.
 *
 * Lifecycle: results_open() starts the request; on_end is called exactly
 * once when it ends (unless the stream is freed first), after which the
 * owner frees it. Records still queued then can be taken back with
 * results_take_unsent() (and posted one by one instead).
 */
#ifndef MCPLOCAL_RESULTS_H
#define MCPLOCAL_RESULTS_H

#include "loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct results;

/* How the stream ended: clean (mcpd answered 2xx to a finished body),
 * nothing_sent (mcpd cannot have seen any record: every one is still
 * queued), mcpd's status (0 when none came) and why, in words. */
struct results_end {
    bool clean;
    bool nothing_sent;
    long status;
    const char *why;
};

typedef void (*results_end_fn)(struct results *rs, const struct results_end *e, void *ud);
typedef void (*results_unsent_fn)(const char *task_id, char *body, void *ud);

struct results_opts {
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines */
    const char *ca_file;
    int64_t keepalive_ms;
    results_end_fn on_end;
    void *ud;
};

/* Opens the stream. Returns 0 and the stream in *out, or -1 when out of
 * memory. */
int results_open(struct loop *l, const struct results_opts *o, struct results **out);
/* Queues task_id's result (body: a JSON object's text, which the stream
 * takes on success). 0, or -1 (body still the caller's) when out of memory
 * or the stream is finishing. */
int results_push(struct results *rs, const char *task_id, char *body);
/* Ends the body once every queued record has gone out. */
void results_finish(struct results *rs);
/* After on_end: hands each record that never went out to fn (the body is
 * the caller's to free) and forgets it. */
void results_take_unsent(struct results *rs, results_unsent_fn fn, void *ud);
/* Aborts the stream if it still runs and frees it. NULL is a no-op. */
void results_free(struct results *rs);

#endif
