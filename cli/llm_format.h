/*
 * llm_format.h - how mcpctl shows Llm rows (the API's LlmView objects).
 *
 *   table     NAME KIND STATUS TYPE MODEL TIER POOL AGE, one line per Llm;
 *             unset values show as "-", AGE is the time since createdAt
 *   wide      the table plus OWNER and LAST-HEARTBEAT (the time since
 *             lastHeartbeatAt, "-" when there is none)
 *   json      the API's objects, indented, keys in the API's order
 *   yaml      the same values through libyaml's emitter
 *   describe  every field on its own line, times with their age ("12s ago")
 *
 * Functions take the current time so ages are testable, write to out and
 * return 0, or -1 when writing failed.
 */
#ifndef MCPCTL_LLM_FORMAT_H
#define MCPCTL_LLM_FORMAT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

enum llm_output { LLM_OUTPUT_TABLE, LLM_OUTPUT_WIDE, LLM_OUTPUT_JSON, LLM_OUTPUT_YAML };

/* Parses "table", "wide", "json" or "yaml" into *out. Returns 0, or -1 when unknown. */
int llm_output_parse(const char *s, enum llm_output *out);

/* Writes value (one LlmView object, or an array of them) in format fmt. For
 * the table, a single object is shown as a one-row table. */
int llm_format_write(enum llm_output fmt, const json_t *value, int64_t now_ms, FILE *out);

/* Writes the table of llms (an array of LlmView objects, or one object). */
int llm_format_table(const json_t *llms, int64_t now_ms, FILE *out);
/* The same with the wide table's extra columns. */
int llm_format_wide(const json_t *llms, int64_t now_ms, FILE *out);

/* Writes one LlmView as "Label:  value" lines. Fields the view does not
 * have are shown as "<none>", except the provider session, which only
 * appears for its owner. Fields this version does not know are listed at
 * the end under their API names. */
int llm_format_describe(const json_t *llm, int64_t now_ms, FILE *out);

/* What `describe llm NAME -o FMT` writes: the object itself for json and
 * yaml (as llm_format_write does), else the description above. */
int llm_format_describe_as(enum llm_output fmt, const json_t *llm, int64_t now_ms, FILE *out);

/* Writes a pool ({"pool", "size", "activeCount", "members"}, the members
 * route's answer). With self (a member's name), the lines that follow that
 * member's description: "Siblings:" and a table of the other members
 * (NAME STATUS OWNER LAST-HEARTBEAT). Without, the pool's own
 * description: its name, member counts and the table of all members. */
int llm_format_pool(const json_t *pool, const char *self, int64_t now_ms, FILE *out);

#endif
