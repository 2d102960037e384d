/*
 * jsonscan.h - validate a JSON object and locate its top-level members
 * without building a tree.
 *
 * The relay's hot path needs only a few top-level fields of a request
 * (`messages`, `stream`, `model`) and must pass the rest through byte for
 * byte. jsonscan checks the whole text is valid JSON (RFC 8259, UTF-8) and
 * records where each top-level member's value starts and ends, so callers can
 * splice values instead of re-serialising them. Nothing is allocated.
 */
#ifndef MCP_JSONSCAN_H
#define MCP_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>

enum json_kind {
    JSON_K_OBJECT,
    JSON_K_ARRAY,
    JSON_K_STRING,
    JSON_K_NUMBER,
    JSON_K_TRUE,
    JSON_K_FALSE,
    JSON_K_NULL
};

struct json_field {
    const char *key; /* raw key bytes between the quotes (escapes not decoded) */
    size_t key_len;
    const char *val; /* the value's text, quotes and brackets included */
    size_t val_len;
    enum json_kind kind;
};

#define JSONSCAN_MAX_FIELDS 32
#define JSONSCAN_MAX_DEPTH 64

struct jsonscan {
    size_t n; /* members recorded; members past the max are validated only */
    struct json_field f[JSONSCAN_MAX_FIELDS];
};

/* Validates text (len bytes) as one JSON object and records its top-level
 * members. Returns 0, or -1 when the text is not valid JSON or not an object. */
int jsonscan_parse(struct jsonscan *js, const char *text, size_t len);

/* The last member named key (compared with its raw bytes), or NULL. */
const struct json_field *jsonscan_find(const struct jsonscan *js, const char *key);

/* For an array value: true when it has at least one element. */
bool jsonscan_array_nonempty(const struct json_field *f);

/* Validates that text is a single JSON value of any kind. Returns 0 or -1. */
int jsonscan_validate_value(const char *text, size_t len, enum json_kind *kind);

#endif
