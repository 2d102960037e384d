#include "backoff.h"

void backoff_init(struct backoff *b, int64_t min_ms, int64_t max_ms, uint64_t seed)
{
    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->attempt = 0;
    b->rng = seed;
}

uint64_t backoff_random(struct backoff *b)
{
    /* splitmix64: tiny, fast, and every seed (0 included) is fine. */
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t backoff_ceiling(const struct backoff *b)
{
    int64_t c = b->min_ms;
    for (unsigned i = 0; i < b->attempt && c < b->max_ms; i++)
        c *= 2;
    return c < b->max_ms ? c : b->max_ms;
}

int64_t backoff_next(struct backoff *b)
{
    int64_t ceiling = backoff_ceiling(b);
    if (b->attempt < 64)
        b->attempt++;
    return (int64_t)(backoff_random(b) % (uint64_t)(ceiling + 1));
}

void backoff_reset(struct backoff *b)
{
    b->attempt = 0;
}
