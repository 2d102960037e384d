/*
 * jsonsplit.h - find where each JSON object ends in a stream of them.
 *
 * A result stream (docs/protocol.md) is a request body of JSON objects one
 * after another, separated by optional whitespace; an object may contain
 * whitespace of its own, newlines included, so lines cannot delimit them.
 * jsonsplit finds the closing brace of the first object by tracking
 * nesting and strings only, across calls as bytes arrive, so no byte is
 * looked at twice. It does not validate: the caller parses each object it
 * hands out (jsonscan).
 */
#ifndef MCP_JSONSPLIT_H
#define MCP_JSONSPLIT_H

#include <stdbool.h>
#include <stddef.h>

#define JSONSPLIT_MAX_DEPTH 64

struct jsonsplit {
    size_t pos;   /* bytes of the buffer already looked at */
    size_t start; /* where the current object begins (its '{') */
    int depth;    /* 0: between objects */
    bool in_string, escape;
};

enum {
    JSONSPLIT_MORE = 0,   /* no complete object yet: keep the bytes, call again */
    JSONSPLIT_OBJECT = 1, /* [*start, *end) is the first complete object */
    JSONSPLIT_BAD = -1,   /* a byte that cannot be there (not '{' between objects, too deep) */
};

void jsonsplit_init(struct jsonsplit *s);

/* Looks at buf[s->pos, len): the buffer holds the bytes not yet consumed,
 * from the start of the stream or from just after the last object handed
 * out. After JSONSPLIT_OBJECT the caller removes the first *end bytes from
 * its buffer and calls jsonsplit_init() before the next call. */
int jsonsplit_next(struct jsonsplit *s, const char *buf, size_t len, size_t *start, size_t *end);

#endif
