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
    int64_t expires; /* monotonic: the answer is stale from then on */
    bool known;      /* false: the database does not know this token */
    bool admin;
    UT_hash_handle hh;
};

/* A token's last use not yet written to the database. */
struct auth_use {
    char hash[AUTH_HASH_LEN];
    int64_t at; /* wall time */
    UT_hash_handle hh;
};

struct auth {
    struct db *db;
    uint64_t id;                /* tells instances apart in the per-thread memo */
    atomic_uint_fast64_t epoch; /* bumped by auth_forget(): every memo is stale */
    pthread_mutex_t mu;         /* the cache and the uses */
    struct auth_entry *cache;
    size_t count;
    struct auth_use *used;
    size_t nused;
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
    int64_t noted; /* when this thread last noted the token as used */
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
    memo.noted = clock_mono_ms();
    memcpy(memo.token, token, len);
    memcpy(memo.owner, owner, DB_OWNER_MAX);
}

#define AUTH_CACHE_MAX 4096
/* Tokens whose last use waits for the next flush: beyond this many (far
 * more than any deployment has live tokens), later ones wait a flush. */
#define AUTH_USED_MAX 65536

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

static void uses_free(struct auth_use *uses)
{
    struct auth_use *u, *tmp;
    HASH_ITER(hh, uses, u, tmp)
    {
        HASH_DEL(uses, u);
        free(u);
    }
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    cache_clear(a);
    uses_free(a->used);
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

int auth_token_create(struct db *db, const char *owner, bool admin, int64_t expires_at,
                      char token[AUTH_TOKEN_LEN], int64_t *id)
{
    char hex[65];
    if (id_random_hex(hex, 32) < 0)
        return DB_ERROR;
    snprintf(token, AUTH_TOKEN_LEN, "mcp_%s", hex);
    char hash[AUTH_HASH_LEN];
    auth_hash(token, hash);
    return db_token_insert(db, hash, owner, admin, clock_wall_ms(), expires_at, id);
}

static void copy_hash(char *dst, const char *src)
{
    if (dst)
        memcpy(dst, src, AUTH_HASH_LEN);
}

/* Notes that the token with this hash was used at wall time at (mu held). */
static void note_used(struct auth *a, const char *hash, int64_t at)
{
    struct auth_use *u;
    HASH_FIND_STR(a->used, hash, u);
    if (!u) {
        if (a->nused >= AUTH_USED_MAX || !(u = calloc(1, sizeof *u)))
            return;
        memcpy(u->hash, hash, AUTH_HASH_LEN);
        HASH_ADD_STR(a->used, hash, u);
        a->nused++;
    }
    if (u->at < at)
        u->at = at;
}

/* How long a database answer for a live token may be cached at wall time
 * wall: the cache's lifetime, or less when the token expires sooner. */
static int64_t known_ttl(const struct db_token *t, int64_t wall)
{
    if (t->expires_at && t->expires_at - wall < AUTH_CACHE_TTL_MS)
        return t->expires_at - wall;
    return AUTH_CACHE_TTL_MS;
}

int auth_check(struct auth *a, const char *header, char owner[DB_OWNER_MAX],
               char hash_out[AUTH_HASH_LEN])
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return DB_NOT_FOUND;
    return auth_check_token(a, header + 7, owner, hash_out);
}

int auth_check_token(struct auth *a, const char *token, char owner[DB_OWNER_MAX],
                     char hash_out[AUTH_HASH_LEN])
{
    while (*token == ' ')
        token++;
    size_t len = strlen(token);
    if (len == 0 || len > AUTH_TOKEN_MAX)
        return DB_NOT_FOUND;
    int64_t now = clock_mono_ms();
    if (memo.auth_id == a->id && memo.epoch == atomic_load(&a->epoch) && memo.len == len &&
        memo.expires > now && CRYPTO_memcmp(memo.token, token, len) == 0) {
        if (now - memo.noted >= AUTH_USED_EVERY_MS) {
            memo.noted = now;
            pthread_mutex_lock(&a->mu);
            note_used(a, memo.hash, clock_wall_ms());
            pthread_mutex_unlock(&a->mu);
        }
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
            note_used(a, hash, clock_wall_ms());
            memo_set(a, token, len, owner, hash, e->expires);
        }
        pthread_mutex_unlock(&a->mu);
        return known ? DB_OK : DB_NOT_FOUND;
    }
    pthread_mutex_unlock(&a->mu);

    int64_t wall = clock_wall_ms();
    struct db_token t;
    int rc = db_token_lookup(a->db, hash, wall, &t);
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
    int64_t expires = now + (rc == DB_OK ? known_ttl(&t, wall) : AUTH_NEGATIVE_TTL_MS);
    if (e) {
        e->known = rc == DB_OK;
        e->admin = rc == DB_OK && t.admin;
        snprintf(e->owner, sizeof e->owner, "%s", rc == DB_OK ? t.owner : "");
        e->expires = expires;
    }
    if (rc == DB_OK) {
        memcpy(owner, t.owner, DB_OWNER_MAX);
        note_used(a, hash, wall);
        memo_set(a, token, len, owner, hash, expires);
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int auth_admin(struct auth *a, const char *hash, bool *admin)
{
    int rc = DB_NOT_FOUND;
    bool cached = false;
    pthread_mutex_lock(&a->mu);
    struct auth_entry *e;
    HASH_FIND_STR(a->cache, hash, e);
    if (e && e->expires > clock_mono_ms()) {
        cached = true;
        rc = e->known ? DB_OK : DB_NOT_FOUND;
        *admin = e->known && e->admin;
    }
    pthread_mutex_unlock(&a->mu);
    if (cached)
        return rc;
    struct db_token t;
    rc = db_token_lookup(a->db, hash, clock_wall_ms(), &t);
    *admin = rc == DB_OK && t.admin;
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

int auth_flush(struct auth *a)
{
    pthread_mutex_lock(&a->mu);
    struct auth_use *batch = a->used;
    size_t n = a->nused;
    a->used = NULL;
    a->nused = 0;
    pthread_mutex_unlock(&a->mu);
    if (n == 0)
        return DB_OK;
    struct db_token_use *rows = calloc(n, sizeof *rows);
    int rc = DB_ERROR;
    if (rows) {
        size_t i = 0;
        for (struct auth_use *u = batch; u; u = u->hh.next)
            rows[i++] = (struct db_token_use){.hash = u->hash, .at = u->at};
        rc = db_token_touch(a->db, rows, n);
        free(rows);
    }
    if (rc == DB_OK) {
        uses_free(batch);
        return DB_OK;
    }
    /* Kept for the next flush, with any use noted meanwhile. */
    pthread_mutex_lock(&a->mu);
    struct auth_use *u, *tmp;
    HASH_ITER(hh, batch, u, tmp)
    {
        HASH_DEL(batch, u);
        note_used(a, u->hash, u->at);
        free(u);
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}
