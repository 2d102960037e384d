/*
 * fuzz_jsonscan.c - jsonscan, which validates and scans every request body
 * mcpd relays and every task frame mcplocal reads, against jansson as the
 * reference: no crash or overread on any input, and no valid JSON object
 * (within jsonscan's nesting limit) refused. Members it records must
 * validate on their own, as the kind it recorded.
 */
#include "fuzz.h"
#include "jsonscan.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t depth_of(const json_t *v)
{
    size_t d = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            size_t c = depth_of(m);
            if (c > d)
                d = c;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            size_t c = depth_of(m);
            if (c > d)
                d = c;
        }
        return d + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes: reads past the end are caught. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    struct jsonscan js;
    int rc = jsonscan_parse(&js, text, size);
    if (rc == 0) {
        for (size_t i = 0; i < js.n; i++) {
            enum json_kind kind;
            if (jsonscan_validate_value(js.f[i].val, js.f[i].val_len, &kind) != 0 ||
                kind != js.f[i].kind)
                abort();
        }
    }
    /* jansson reads a NUL byte outside strings as the end of the text, so
     * it is no reference for inputs that hold one (jsonscan refuses them,
     * as RFC 8259 does). */
    json_error_t err;
    json_t *ref = memchr(text, 0, size) ? NULL : json_loadb(text, size, 0, &err);
    if (ref && json_is_object(ref) && depth_of(ref) <= JSONSCAN_MAX_DEPTH && rc != 0)
        abort(); /* valid JSON refused */
    json_decref(ref);
    free(text);
    return 0;
}
