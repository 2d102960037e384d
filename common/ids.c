#include "ids.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/random.h>

int id_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int id_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    if (nbytes > sizeof raw || id_random_bytes(raw, nbytes) < 0)
        return -1;
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

static uint64_t seq_keys[2];
static atomic_uint_fast64_t seq_counter;
static pthread_once_t seq_once = PTHREAD_ONCE_INIT;

static void seq_init(void)
{
    if (id_random_bytes(seq_keys, sizeof seq_keys) < 0) {
        seq_keys[0] = (uint64_t)(uintptr_t)&seq_keys ^ 0x9e3779b97f4a7c15ULL;
        seq_keys[1] = ~seq_keys[0];
    }
}

/* splitmix64's finalizer: a bijection on 64-bit values. */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void id_sequence_hex(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    pthread_once(&seq_once, seq_init);
    uint64_t n = atomic_fetch_add(&seq_counter, 1);
    uint64_t parts[2] = {mix(n ^ seq_keys[0]), mix(n + seq_keys[1])};
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 16; i++)
            out[p * 16 + i] = hex[(parts[p] >> (60 - 4 * i)) & 15];
    out[32] = '\0';
}
