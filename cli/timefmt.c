#include "timefmt.h"

#include "clock.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Reads exactly n digits at *p into *out and advances *p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

int timefmt_parse_rfc3339(const char *s, int64_t *ms)
{
    if (!s)
        return -1;
    const char *p = s;
    int year, mon, day, hour, min, sec;
    if (digits(&p, 4, &year) < 0 || expect(&p, '-') < 0 || digits(&p, 2, &mon) < 0 ||
        expect(&p, '-') < 0 || digits(&p, 2, &day) < 0)
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (digits(&p, 2, &hour) < 0 || expect(&p, ':') < 0 || digits(&p, 2, &min) < 0 ||
        expect(&p, ':') < 0 || digits(&p, 2, &sec) < 0)
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return -1;
    int frac_ms = 0;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        int scale = 100;
        for (; isdigit((unsigned char)*p); p++) {
            frac_ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (digits(&p, 2, &oh) < 0 || expect(&p, ':') < 0 || digits(&p, 2, &om) < 0)
            return -1;
        if (oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && !(year == 1969 && mon == 12 && day == 31))
        return -1;
    *ms = ((int64_t)t - (int64_t)offset_min * 60) * 1000 + frac_ms;
    return 0;
}

void timefmt_age(const char *ts, int64_t now_ms, char *out, size_t outlen)
{
    int64_t then;
    if (!ts || !*ts || timefmt_parse_rfc3339(ts, &then) < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    clock_format_age(now_ms - then, out, (unsigned long)outlen);
}
