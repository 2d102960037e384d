/*
 * timefmt.h - reading mcpd's timestamps and showing them as ages.
 *
 * mcpd stamps rows with RFC 3339 UTC times ("2026-01-02T03:04:05.678Z"),
 * which clock_parse_rfc3339() reads. mcpctl shows them as ages relative to
 * the local clock ("5m", "12s ago"); "now" is always passed in so the rules
 * are testable.
 */
#ifndef MCPCTL_TIMEFMT_H
#define MCPCTL_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

#define TIMEFMT_AGE_MAX 32

/* Writes the age of timestamp ts at now_ms as "42s", "5m", "3h" or "2d" (the
 * largest whole unit; a time in the future counts as "0s"). Writes "-" when
 * ts is NULL, empty or unparseable. */
void timefmt_age(const char *ts, int64_t now_ms, char *out, size_t outlen);

#endif
