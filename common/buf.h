/*
 * buf.h - a growable byte buffer with a hard size cap.
 *
 * Every buffer that grows from network input has a cap: appends that would
 * take it past buf.max fail with -1 and leave the buffer unchanged. The data
 * is always NUL-terminated (the NUL is not counted in len).
 */
#ifndef MCP_BUF_H
#define MCP_BUF_H

#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len; /* bytes held, not counting the trailing NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* largest len allowed */
};

/* Initialises an empty buffer that may hold at most max bytes. */
void buf_init(struct buf *b, size_t max);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_release(struct buf *b);
/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);

/* Each returns 0, or -1 when the cap would be passed or memory ran out.
 * buf_reserve() makes room for `extra` more bytes in one allocation. */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Drops the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

/* Hands the data to the caller (free() it) and leaves the buffer empty. */
char *buf_steal(struct buf *b);

#endif
