#include "sse.h"

#include <string.h>

int sse_encode_event(struct buf *out, const char *event, const char *id, const char *data,
                     size_t len)
{
    size_t start = out->len;
    if (event && buf_printf(out, "event: %s\n", event) < 0)
        goto fail;
    if (id && buf_printf(out, "id: %s\n", id) < 0)
        goto fail;
    size_t i = 0;
    do {
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r')
            j++;
        if (buf_append(out, "data: ", 6) < 0 || buf_append(out, data + i, j - i) < 0 ||
            buf_append(out, "\n", 1) < 0)
            goto fail;
        if (j < len && data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
            j++;
        i = j + 1;
    } while (i < len);
    if (buf_append(out, "\n", 1) < 0)
        goto fail;
    return 0;
fail:
    out->len = start;
    if (out->data)
        out->data[start] = '\0';
    return -1;
}

int sse_encode_comment(struct buf *out, const char *text)
{
    return buf_printf(out, ": %s\n\n", text);
}

void sse_parser_init(struct sse_parser *p, size_t max_line, size_t max_event, sse_event_fn on_event,
                     sse_comment_fn on_comment, void *ud)
{
    memset(p, 0, sizeof *p);
    buf_init(&p->line, max_line);
    buf_init(&p->data, max_event);
    p->on_event = on_event;
    p->on_comment = on_comment;
    p->ud = ud;
}

void sse_parser_release(struct sse_parser *p)
{
    buf_release(&p->line);
    buf_release(&p->data);
}

void sse_parser_reset(struct sse_parser *p)
{
    buf_reset(&p->line);
    buf_reset(&p->data);
    p->event[0] = '\0';
    p->id[0] = '\0';
    p->have_data = false;
    p->skip_lf = false;
}

static void copy_field(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static int dispatch(struct sse_parser *p)
{
    int rc = 0;
    if (p->have_data) {
        struct sse_event ev = {
            .event = p->event[0] ? p->event : "message",
            .id = p->id,
            .data = p->data.data ? p->data.data : "",
            .data_len = p->data.len,
        };
        rc = p->on_event(p->ud, &ev);
    }
    buf_reset(&p->data);
    p->event[0] = '\0';
    p->id[0] = '\0';
    p->have_data = false;
    return rc;
}

static int process_line(struct sse_parser *p, const char *line, size_t n)
{
    if (n == 0)
        return dispatch(p);
    if (line[0] == ':') {
        if (p->on_comment) {
            size_t skip = (n > 1 && line[1] == ' ') ? 2 : 1;
            p->on_comment(p->ud, line + skip, n - skip);
        }
        return 0;
    }
    const char *colon = memchr(line, ':', n);
    size_t flen = colon ? (size_t)(colon - line) : n;
    const char *val = colon ? colon + 1 : line + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen > 0 && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        if (p->have_data && buf_append(&p->data, "\n", 1) < 0)
            return SSE_ERR_EVENT_TOO_LARGE;
        if (buf_append(&p->data, val, vlen) < 0)
            return SSE_ERR_EVENT_TOO_LARGE;
        p->have_data = true;
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        copy_field(p->event, sizeof p->event, val, vlen);
    } else if (flen == 2 && memcmp(line, "id", 2) == 0) {
        copy_field(p->id, sizeof p->id, val, vlen);
    }
    /* "retry" and unknown fields are ignored, as the SSE standard says. */
    return 0;
}

int sse_parser_feed(struct sse_parser *p, const char *bytes, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (p->skip_lf) {
            p->skip_lf = false;
            if (bytes[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && bytes[j] != '\n' && bytes[j] != '\r')
            j++;
        if (j > i && buf_append(&p->line, bytes + i, j - i) < 0)
            return SSE_ERR_LINE_TOO_LONG;
        if (j == n)
            break;
        p->skip_lf = bytes[j] == '\r';
        int rc = process_line(p, p->line.data ? p->line.data : "", p->line.len);
        buf_reset(&p->line);
        if (rc != 0)
            return rc;
        i = j + 1;
    }
    return 0;
}
