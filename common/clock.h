/*
 * clock.h - the one place time is read.
 *
 * Wall time (ms since the Unix epoch) stamps rows; monotonic time (ms)
 * drives timers. Tests replace both with clock_set_fake().
 */
#ifndef MCP_CLOCK_H
#define MCP_CLOCK_H

#include <stdint.h>

#define CLOCK_RFC3339_LEN 25 /* "2026-01-02T03:04:05.678Z" + NUL */
#define CLOCK_DAY_LEN 11     /* "2026-01-02" + NUL */

int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);
/* Monotonic time in microseconds, for durations that are measured rather
 * than scheduled (the access log, metrics). Fake: *fake_ms * 1000. */
int64_t clock_mono_us(void);

/* Makes both clocks return *fake_ms while fake_ms is non-NULL (tests only). */
void clock_set_fake(const int64_t *fake_ms);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds into out. */
void clock_format_rfc3339(int64_t ms, char out[CLOCK_RFC3339_LEN]);

/* Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)" ('t', 'z' and ' ' as
 * the separator are accepted too) into ms since the epoch. Returns 0 or -1. */
int clock_parse_rfc3339(const char *s, int64_t *ms);

/* Formats the UTC day of ms since the epoch as "YYYY-MM-DD" into out. */
void clock_format_day(int64_t ms, char out[CLOCK_DAY_LEN]);

/* Formats an age such as "42s", "5m", "3h", "2d" (the largest whole unit). */
void clock_format_age(int64_t ms, char *out, unsigned long outlen);

#endif
