/*
 * fuzz_sse.c - the SSE parser that reads mcplocal's control stream and its
 * backends' streams: any bytes, split at any points, with small caps. No
 * crash or overread; events carry NUL-terminated data of the length given;
 * after a cap error the parser is reset and fed on, as its users do.
 */
#include "fuzz.h"
#include "sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int on_event(void *ud, const struct sse_event *ev)
{
    (void)ud;
    if (strlen(ev->data) > ev->data_len || !ev->event || !ev->id)
        abort();
    return 0;
}

static void on_comment(void *ud, const char *text, size_t len)
{
    (void)ud;
    (void)text;
    (void)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    /* The first byte picks the split size, the second the caps. */
    size_t step = (size_t)data[0] % 17 + 1;
    size_t max_line = 8 + (size_t)(data[1] & 0x3f), max_event = 16 + (size_t)(data[1] >> 2);
    data += 2;
    size -= 2;
    struct sse_parser p;
    sse_parser_init(&p, max_line, max_event, on_event, on_comment, NULL);
    for (size_t at = 0; at < size; at += step) {
        size_t n = size - at < step ? size - at : step;
        char *piece = malloc(n);
        if (!piece)
            break;
        memcpy(piece, data + at, n);
        if (sse_parser_feed(&p, piece, n) < 0)
            sse_parser_reset(&p);
        free(piece);
    }
    sse_parser_release(&p);
    return 0;
}
