/*
 * sse.h - Server-Sent Events: an encoder and an incremental parser.
 *
 * The encoder appends whole frames to a struct buf. The parser accepts bytes
 * split at any point (one byte at a time works) and calls back once per
 * complete event; it enforces caps on line length and event size so a
 * misbehaving peer cannot make it grow without bound.
 */
#ifndef MCP_SSE_H
#define MCP_SSE_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

/* Appends "event: E\nid: I\ndata: D\n\n". event and id may be NULL (left
 * out). Line breaks inside data become separate data: lines. Returns 0 or -1
 * when the buffer's cap would be passed. */
int sse_encode_event(struct buf *out, const char *event, const char *id, const char *data,
                     size_t len);
/* Appends ": text\n\n". */
int sse_encode_comment(struct buf *out, const char *text);

struct sse_event {
    const char *event; /* "message" when the frame named none */
    const char *id;    /* "" when the frame had no id: line */
    const char *data;  /* data: lines joined by \n, NUL-terminated */
    size_t data_len;
};

/* Called per complete event; the strings are borrowed until it returns. A
 * non-zero return stops sse_parser_feed(), which then returns that value. */
typedef int (*sse_event_fn)(void *ud, const struct sse_event *ev);
/* Called per comment line (":" lines), text without the colon. May be NULL. */
typedef void (*sse_comment_fn)(void *ud, const char *text, size_t len);

struct sse_parser {
    struct buf line;
    struct buf data;
    char event[64];
    char id[128];
    bool have_data;
    bool skip_lf; /* the last byte was CR: a following LF belongs to it */
    sse_event_fn on_event;
    sse_comment_fn on_comment;
    void *ud;
};

#define SSE_ERR_LINE_TOO_LONG (-1)
#define SSE_ERR_EVENT_TOO_LARGE (-2)

/* max_line caps one line; max_event caps the data of one event. */
void sse_parser_init(struct sse_parser *p, size_t max_line, size_t max_event, sse_event_fn on_event,
                     sse_comment_fn on_comment, void *ud);
void sse_parser_release(struct sse_parser *p);
/* Forgets any partial event (for a new connection). */
void sse_parser_reset(struct sse_parser *p);

/* Feeds bytes. Returns 0, SSE_ERR_* when a cap was passed (the parser must
 * then be reset), or the non-zero value a callback returned. */
int sse_parser_feed(struct sse_parser *p, const char *bytes, size_t n);

#endif
