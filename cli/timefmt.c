#include "timefmt.h"

#include "clock.h"

#include <stdio.h>

void timefmt_age(const char *ts, int64_t now_ms, char *out, size_t outlen)
{
    int64_t then;
    if (!ts || !*ts || clock_parse_rfc3339(ts, &then) < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    clock_format_age(now_ms - then, out, (unsigned long)outlen);
}
