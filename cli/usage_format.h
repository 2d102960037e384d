/*
 * usage_format.h - how mcpctl shows usage counts (GET /api/v1/usage's
 * {"usage": [row...], "totals": {...}}).
 *
 *   table  DAY OWNER LLM REQUESTS ERRORS PROMPT-TOKENS COMPLETION-TOKENS,
 *          one line per row, then a TOTAL line
 *   wide   the table plus TOTAL-TOKENS (prompt + completion)
 *   json   the API's object, indented, keys in the API's order
 *   yaml   the same values through libyaml's emitter
 *
 * Each function writes to out and returns 0, or -1 when writing failed.
 */
#ifndef MCPCTL_USAGE_FORMAT_H
#define MCPCTL_USAGE_FORMAT_H

#include "llm_format.h"

#include <jansson.h>
#include <stdio.h>

/* Writes value (the API's usage object) in format fmt. */
int usage_format_write(enum llm_output fmt, const json_t *value, FILE *out);

#endif
