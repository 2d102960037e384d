/*
 * agent.h - mcplocal's state machine: publish the opted-in providers, hold
 * the control stream, heartbeat, run tasks, reconnect, shut down cleanly.
 *
 *   IDLE ──(files ok)──> CHECKING ──> REGISTERING ──> STREAMING ──(hello)──> UP
 *     ^                     ^               │               │                │
 *     │                     └── BACKOFF <───┴───────────────┴────────────────┘
 *     └──(nothing to publish / no credentials; SIGHUP re-reads the files)
 *
 * CHECKING probes the backends of providers that have a wake recipe (the
 * initialStatus rule). Every failure - register refused or unreachable, the
 * stream ending or stalling, a 404 heartbeat - goes through BACKOFF, whose
 * delay grows from backoff_min to backoff_max with full jitter and starts
 * over once a stream has stayed up for healthy_ms. Tasks run concurrently
 * on the same loop; their results are posted strictly in order per task.
 *
 * The agent is the boundary that logs: one line per event.
 */
#ifndef MCPLOCAL_AGENT_H
#define MCPLOCAL_AGENT_H

#include "loop.h"

#include <stdbool.h>
#include <stdint.h>

struct agent;

struct agent_opts {
    const char *home;           /* borrowed */
    int64_t backoff_min_ms;     /* 5 s */
    int64_t backoff_max_ms;     /* 60 s */
    uint64_t seed;              /* backoff jitter; see seeded */
    bool seeded;                /* false: seed from the kernel */
    int64_t healthy_ms;         /* 30 s: a stream up this long resets the backoff */
    int64_t wake_poll_first_ms; /* 250 ms */
    int64_t wake_poll_ms;       /* 1 s */
    int64_t check_timeout_ms;   /* 2 s: the availability check's limit */
    int64_t shutdown_grace_ms;  /* 5 s: how long shutdown waits for result posts */
};

void agent_opts_defaults(struct agent_opts *o);

/* Returns a new agent on loop l (borrowed; must outlive it), or NULL. Free
 * with agent_free(). */
struct agent *agent_new(struct loop *l, const struct agent_opts *o);
void agent_free(struct agent *a);

/* Reads the files and starts publishing (or idles, saying why). Returns 0,
 * or -1 when config.json or credentials is malformed (already logged). */
int agent_start(struct agent *a);
/* SIGHUP: re-reads the files and applies what changed. A malformed file is
 * reported and the running configuration kept. */
void agent_reload(struct agent *a);
/* SIGTERM/SIGINT: stop taking tasks, fail the ones in flight with
 * "publisher shutting down", then close the stream. A second call gives up
 * waiting for result posts. */
void agent_shutdown(struct agent *a);
/* True once shutdown has completed; the caller then frees the agent. */
bool agent_finished(const struct agent *a);

#endif
