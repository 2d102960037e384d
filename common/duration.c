#include "duration.h"

#include <ctype.h>
#include <string.h>

static int parse_scaled(const char *s, int64_t *out, const char *const *units,
                        const int64_t *scales, int nunits)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    int64_t v = 0;
    while (isdigit((unsigned char)*s)) {
        int d = *s++ - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    for (int i = 0; i < nunits; i++) {
        if (strcmp(s, units[i]) == 0) {
            if (v > INT64_MAX / scales[i])
                return -1;
            *out = v * scales[i];
            return 0;
        }
    }
    return -1;
}

int duration_parse(const char *s, int64_t *out_ms)
{
    static const char *const units[] = {"", "ms", "s", "m", "h", "d"};
    static const int64_t scales[] = {1000, 1, 1000, 60 * 1000, 3600 * 1000, 86400 * 1000};
    return parse_scaled(s, out_ms, units, scales, 6);
}

int size_parse(const char *s, int64_t *out_bytes)
{
    static const char *const units[] = {"", "K", "M", "G", "KiB", "MiB", "GiB"};
    static const int64_t scales[] = {1, 1 << 10, 1 << 20, 1 << 30, 1 << 10, 1 << 20, 1 << 30};
    return parse_scaled(s, out_bytes, units, scales, 7);
}
