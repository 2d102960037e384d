/*
 * duration.h - "250ms", "90s", "5m", "4h", "90d" (a bare number means seconds).
 */
#ifndef MCP_DURATION_H
#define MCP_DURATION_H

#include <stdint.h>

/* Parses s into milliseconds. Returns 0, or -1 for anything that is not a
 * non-negative whole number followed by nothing, ms, s, m, h or d (or
 * overflows). */
int duration_parse(const char *s, int64_t *out_ms);

/* Parses a byte count: a whole number with an optional K, M or G (KiB...). */
int size_parse(const char *s, int64_t *out_bytes);

#endif
