/*
 * backoff.h - reconnect delays: exponential from a floor to a ceiling, with
 * full jitter, from a seedable random source.
 *
 * Attempt n (counting from 0) waits a uniformly random time in
 * [0, min(max, min * 2^n)] ("full jitter"), so a fleet of publishers that
 * lost the same mcpd does not come back in lockstep. backoff_reset() starts
 * over once a connection has proved healthy. Pure: no clock, no I/O.
 */
#ifndef MCPLOCAL_BACKOFF_H
#define MCPLOCAL_BACKOFF_H

#include <stdint.h>

struct backoff {
    int64_t min_ms;
    int64_t max_ms;
    unsigned attempt;
    uint64_t rng; /* splitmix64 state */
};

/* min_ms > 0, max_ms >= min_ms. The same seed gives the same sequence. */
void backoff_init(struct backoff *b, int64_t min_ms, int64_t max_ms, uint64_t seed);
/* The delay before the next attempt, in ms; advances the attempt count. */
int64_t backoff_next(struct backoff *b);
/* The ceiling the next call to backoff_next() draws under. */
int64_t backoff_ceiling(const struct backoff *b);
/* Back to the first attempt (the random sequence continues). */
void backoff_reset(struct backoff *b);
/* The next 64 random bits of the source. */
uint64_t backoff_random(struct backoff *b);

#endif
