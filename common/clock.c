#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const int64_t *fake;

void clock_set_fake(const int64_t *fake_ms)
{
    fake = fake_ms;
}

static int64_t read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_wall_ms(void)
{
    return fake ? *fake : read_clock(CLOCK_REALTIME);
}

int64_t clock_mono_ms(void)
{
    return fake ? *fake : read_clock(CLOCK_MONOTONIC);
}

int64_t clock_mono_us(void)
{
    if (fake)
        return *fake * 1000;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void clock_format_rfc3339(int64_t ms, char out[CLOCK_RFC3339_LEN])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    memcpy(out, tmp, CLOCK_RFC3339_LEN - 1);
    out[CLOCK_RFC3339_LEN - 1] = '\0';
}

void clock_format_age(int64_t ms, char *out, unsigned long outlen)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, outlen, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, outlen, "%lldm", (long long)(s / 60));
    else if (s < 86400)
        snprintf(out, outlen, "%lldh", (long long)(s / 3600));
    else
        snprintf(out, outlen, "%lldd", (long long)(s / 86400));
}
