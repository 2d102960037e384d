/*
 * fuzz_jsonsplit.c - jsonsplit, which cuts a publisher's result stream into
 * records: no crash or overread on any input; the records found are the
 * same however the bytes are cut into pieces; and where jansson reads a
 * whole object (within the nesting limit) at the start of an input
 * without NUL bytes, jsonsplit ends the first record exactly where jansson
 * stopped.
 */
#include "fuzz.h"
#include "jsonsplit.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Ends of the records in data[0, n), fed in pieces of at most step bytes;
 * returns how many (at most max), -1 after JSONSPLIT_BAD. */
static int split(const char *data, size_t n, size_t step, size_t *ends, int max)
{
    struct jsonsplit s;
    jsonsplit_init(&s);
    size_t base = 0, avail = 0;
    int count = 0;
    while (avail < n || s.pos < avail - base) {
        if (avail < n)
            avail = avail + step < n ? avail + step : n;
        size_t start, end;
        int rc = jsonsplit_next(&s, data + base, avail - base, &start, &end);
        if (rc == JSONSPLIT_BAD)
            return -1;
        if (rc == JSONSPLIT_MORE) {
            if (avail == n)
                break;
            continue;
        }
        if (count < max)
            ends[count] = base + end;
        count++;
        base += end;
        jsonsplit_init(&s);
    }
    return count < max ? count : max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t whole[64], pieces[64];
    int a = split(text, size, size ? size : 1, whole, 64);
    int b = split(text, size, 1 + (size ? data[0] % 7 : 0), pieces, 64);
    if (a != b)
        abort();
    for (int i = 0; i < a; i++)
        if (whole[i] != pieces[i])
            abort();
    /* jansson's reader skips NUL bytes outside strings: no reference. */
    if (memchr(text, 0, size))
        return 0;
    json_error_t err;
    size_t lead = 0;
    while (lead < size && strchr(" \t\r\n", text[lead]))
        lead++;
    json_t *v = json_loadb(text + lead, size - lead, JSON_DISABLE_EOF_CHECK, &err);
    if (json_is_object(v) && a > 0 && whole[0] != lead + (size_t)err.position)
        abort();
    json_decref(v);
    return 0;
}
