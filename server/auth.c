#include "auth.h"
#include "clock.h"
#include "ids.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uthash.h>

struct auth_entry {
    char hash[AUTH_HASH_LEN];
    char owner[DB_OWNER_MAX];
    int64_t expires;
    bool known; /* false: the database does not know this token */
    UT_hash_handle hh;
};

struct auth {
    struct db *db;
    uint64_t id;                /* tells instances apart in the per-thread memo */
    atomic_uint_fast64_t epoch; /* bumped by auth_forget(): every memo is stale */
    pthread_mutex_t mu;
    struct auth_entry *cache;
    size_t count;
};

/* Each thread remembers the last token it accepted, until the cache entry
 * it came from would expire: callers and publishers send the same token
 * request after request, and this spares each of them a SHA-256 and the
 * cache's mutex. Compared in constant time. */
#define AUTH_TOKEN_MAX 512
static _Thread_local struct {
    uint64_t auth_id;
    uint64_t epoch;
    size_t len;
    int64_t expires;
    char token[AUTH_TOKEN_MAX];
    char owner[DB_OWNER_MAX];
    char hash[AUTH_HASH_LEN];
} memo;
static atomic_uint_fast64_t next_auth_id = 1;

static void memo_set(const struct auth *a, const char *token, size_t len, const char *owner,
                     const char *hash, int64_t expires)
{
    memcpy(memo.hash, hash, AUTH_HASH_LEN);
    memo.epoch = atomic_load(&a->epoch);
    memo.auth_id = a->id;
    memo.len = len;
    memo.expires = expires;
    memcpy(memo.token, token, len);
    memcpy(memo.owner, owner, DB_OWNER_MAX);
}

#define AUTH_CACHE_MAX 4096

struct auth *auth_new(struct db *db)
{
    struct auth *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->db = db;
    a->id = atomic_fetch_add(&next_auth_id, 1);
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

static void cache_clear(struct auth *a)
{
    struct auth_entry *e, *tmp;
    HASH_ITER(hh, a->cache, e, tmp)
    {
        HASH_DEL(a->cache, e);
        free(e);
    }
    a->count = 0;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    cache_clear(a);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void auth_hash(const char *token, char out[AUTH_HASH_LEN])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL);
    for (unsigned i = 0; i < len && i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

int auth_token_create(struct db *db, const char *owner, char token[AUTH_TOKEN_LEN], int64_t *id)
{
    char hex[65];
    if (id_random_hex(hex, 32) < 0)
        return DB_ERROR;
    snprintf(token, AUTH_TOKEN_LEN, "mcp_%s", hex);
    char hash[AUTH_HASH_LEN];
    auth_hash(token, hash);
    return db_token_insert(db, hash, owner, clock_wall_ms(), id);
}

static void copy_hash(char *dst, const char *src)
{
    if (dst)
        memcpy(dst, src, AUTH_HASH_LEN);
}

int auth_check(struct auth *a, const char *header, char owner[DB_OWNER_MAX],
               char hash_out[AUTH_HASH_LEN])
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return DB_NOT_FOUND;
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    if (len == 0 || len > AUTH_TOKEN_MAX)
        return DB_NOT_FOUND;
    int64_t now = clock_mono_ms();
    if (memo.auth_id == a->id && memo.epoch == atomic_load(&a->epoch) && memo.len == len &&
        memo.expires > now && CRYPTO_memcmp(memo.token, token, len) == 0) {
        memcpy(owner, memo.owner, DB_OWNER_MAX);
        copy_hash(hash_out, memo.hash);
        return DB_OK;
    }
    char hash[AUTH_HASH_LEN];
    auth_hash(token, hash);
    copy_hash(hash_out, hash);

    pthread_mutex_lock(&a->mu);
    struct auth_entry *e;
    HASH_FIND_STR(a->cache, hash, e);
    if (e && e->expires > now) {
        bool known = e->known;
        if (known) {
            memcpy(owner, e->owner, DB_OWNER_MAX);
            memo_set(a, token, len, owner, hash, e->expires);
        }
        pthread_mutex_unlock(&a->mu);
        return known ? DB_OK : DB_NOT_FOUND;
    }
    pthread_mutex_unlock(&a->mu);

    int rc = db_token_owner(a->db, hash, owner);
    if (rc == DB_ERROR)
        return rc;

    pthread_mutex_lock(&a->mu);
    HASH_FIND_STR(a->cache, hash, e);
    if (!e) {
        if (a->count >= AUTH_CACHE_MAX)
            cache_clear(a);
        e = calloc(1, sizeof *e);
        if (e) {
            memcpy(e->hash, hash, sizeof e->hash);
            HASH_ADD_STR(a->cache, hash, e);
            a->count++;
        }
    }
    if (e) {
        e->known = rc == DB_OK;
        memcpy(e->owner, rc == DB_OK ? owner : "", rc == DB_OK ? DB_OWNER_MAX : 1);
        e->expires = now + (rc == DB_OK ? AUTH_CACHE_TTL_MS : AUTH_NEGATIVE_TTL_MS);
    }
    if (rc == DB_OK)
        memo_set(a, token, len, owner, hash, now + AUTH_CACHE_TTL_MS);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void auth_forget(struct auth *a, const char *hash)
{
    atomic_fetch_add(&a->epoch, 1);
    pthread_mutex_lock(&a->mu);
    struct auth_entry *e;
    HASH_FIND_STR(a->cache, hash, e);
    if (e) {
        HASH_DEL(a->cache, e);
        free(e);
        a->count--;
    }
    pthread_mutex_unlock(&a->mu);
}
