/*
 * auth.h - API tokens: minting, hashing, the bearer check, and when each
 * token was last used.
 *
 * A token is "mcp_" + 64 hex digits (256 random bits), shown once. The
 * database keeps only its SHA-256 (hex). Lookups are cached for a few
 * seconds so the relay's hot path does not query SQLite per request, and
 * each thread remembers the last token it accepted for as long as that
 * cached answer lives; a revocation takes effect within AUTH_CACHE_TTL_MS.
 * A cached answer never outlives the token's expiry: an expired token is
 * refused from that millisecond on.
 *
 * "Last used" is kept here, in memory (at most one update per thread and
 * token every AUTH_USED_EVERY_MS), and written by auth_flush(), which the
 * housekeeper calls every few seconds and mcpd at shutdown: no request
 * writes to the database for it.
 */
#ifndef MCPD_AUTH_H
#define MCPD_AUTH_H

#include "db.h"

#include <stdbool.h>
#include <stddef.h>

#define AUTH_TOKEN_LEN 69 /* "mcp_" + 64 hex + NUL */
#define AUTH_HASH_LEN 65  /* 64 hex + NUL */
#define AUTH_CACHE_TTL_MS 5000
#define AUTH_NEGATIVE_TTL_MS 1000
#define AUTH_USED_EVERY_MS 1000 /* the resolution of "last used" */

struct auth;

/* Returns a new authenticator over db (borrowed), or NULL. */
struct auth *auth_new(struct db *db);
/* Frees it; uses not flushed are lost (call auth_flush() first). NULL is a
 * no-op. */
void auth_free(struct auth *a);

/* Mints a token for owner, stores its hash; token receives it. expires_at
 * is the wall time it stops working (0: never). DB_* code. */
int auth_token_create(struct db *db, const char *owner, bool admin, int64_t expires_at,
                      char token[AUTH_TOKEN_LEN], int64_t *id);

/* Hex SHA-256 of token. */
void auth_hash(const char *token, char out[AUTH_HASH_LEN]);

/* Checks an Authorization header value ("Bearer TOKEN"). Returns DB_OK with
 * the owner copied (and the token's hash, when hash is not NULL),
 * DB_NOT_FOUND for a missing/unknown/revoked/expired token, or DB_ERROR.
 * Tokens found unknown are remembered for AUTH_NEGATIVE_TTL_MS, so a client
 * retrying a bad token costs a hash and no query. An accepted token is
 * noted as used. */
int auth_check(struct auth *a, const char *header, char owner[DB_OWNER_MAX],
               char hash[AUTH_HASH_LEN]);
/* The same for the token itself (leading spaces skipped): an x-api-key. */
int auth_check_token(struct auth *a, const char *token, char owner[DB_OWNER_MAX],
                     char hash[AUTH_HASH_LEN]);

/* Whether the live token with this hash is an admin token: DB_OK with
 * *admin set, DB_NOT_FOUND (unknown, revoked or expired) or DB_ERROR. From
 * the cache when it knows the token. */
int auth_admin(struct auth *a, const char *hash, bool *admin);

/* Drops what is cached about a token (by its hash): it was revoked or
 * expired. */
void auth_forget(struct auth *a, const char *hash);

/* Writes the "last used" times noted since the last flush, in one
 * transaction. On failure they are kept for the next one. DB_OK or
 * DB_ERROR. Any thread; not on the relay's path. */
int auth_flush(struct auth *a);

#endif
