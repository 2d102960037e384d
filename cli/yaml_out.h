/*
 * yaml_out.h - JSON values written as YAML with libyaml's emitter.
 *
 * Objects become block mappings (key order kept), arrays block sequences,
 * empty ones "{}" and "[]". Strings that a YAML reader would take for
 * something else ("true", "null", "42", "2026-01-02T...", "") are quoted, so
 * the output reads back to the same JSON value under YAML 1.1 and 1.2 rules.
 * Numbers, booleans and null stay plain.
 */
#ifndef MCPCTL_YAML_OUT_H
#define MCPCTL_YAML_OUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* Writes value as one YAML document to out. Returns 0, or -1 when the
 * emitter or the stream failed. */
int yaml_out_write(const json_t *value, FILE *out);

/* True when s may be written as a plain (unquoted) YAML scalar and still
 * read back as a string. Exposed for tests. */
bool yaml_out_plain_safe(const char *s);

#endif
