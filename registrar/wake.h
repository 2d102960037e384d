/*
 * wake.h - run a provider's wake recipe and wait for its backend to answer.
 *
 * A wake first checks the backend once: one that already answers is awake
 * (and a command recipe is not run a second time). Otherwise it starts the
 * recipe - the HTTP request through the loop, or the command as a child
 * process (child.h: argv directly, never a shell) - and polls availability
 * (openai_check) poll_first_ms after the start and every poll_ms after
 * that, until the backend answers or max_wait_ms pass. Polling does not wait
 * for a command to exit, so a recipe may run the server in the foreground;
 * a command that exits non-zero, or an HTTP recipe that fails or answers
 * non-2xx, fails the wake at once. on_poll is called before every
 * availability check so the owner can heartbeat.
 *
 * Errors handed to on_done say which step failed and never contain the local
 * URLs or the command line; the detail for the local log does.
 */
#ifndef MCPLOCAL_WAKE_H
#define MCPLOCAL_WAKE_H

#include "child.h"
#include "config.h"
#include "loop.h"

#include <stdbool.h>
#include <stdint.h>

struct wake_run;

struct wake_opts {
    int64_t poll_first_ms;    /* default 250 */
    int64_t poll_ms;          /* default 1000 */
    int64_t check_timeout_ms; /* default 2000 */
};

/* Fills in the defaults. */
void wake_opts_defaults(struct wake_opts *o);

typedef void (*wake_poll_fn)(void *ud);
/* ok with the time it took, or error (for mcpd) and detail (for the log),
 * both borrowed during the call. The callee may free the run from here. */
typedef void (*wake_done_fn)(void *ud, bool ok, int64_t ms, const char *error, const char *detail);

/* Starts waking p (which must have a recipe; p is borrowed until the run is
 * freed). Returns a new run (free with wake_free()), or NULL when out of
 * memory. Failures to start the recipe are reported through on_done, from
 * the loop, never from inside wake_start(). */
struct wake_run *wake_start(struct loop *l, struct spawner *sp, const struct provider_cfg *p,
                            const struct wake_opts *o, wake_poll_fn on_poll, wake_done_fn on_done,
                            void *ud);
/* Stops the run: the HTTP recipe is aborted, a command still running is
 * left to run (detached), no callback afterwards. NULL is a no-op. */
void wake_free(struct wake_run *w);

#endif
