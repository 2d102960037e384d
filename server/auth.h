/*
 * auth.h - API tokens: minting, hashing, and the bearer check.
 *
 * A token is "mcp_" + 64 hex digits (256 random bits), shown once. The
 * database keeps only its SHA-256 (hex). Lookups are cached for a few
 * seconds so the relay's hot path does not query SQLite per request, and
 * each thread remembers the last token it accepted for as long as that
 * cached answer lives; a revocation takes effect within AUTH_CACHE_TTL_MS.
 */
#ifndef MCPD_AUTH_H
#define MCPD_AUTH_H

#include "db.h"

#include <stddef.h>

#define AUTH_TOKEN_LEN 69 /* "mcp_" + 64 hex + NUL */
#define AUTH_HASH_LEN 65  /* 64 hex + NUL */
#define AUTH_CACHE_TTL_MS 5000
#define AUTH_NEGATIVE_TTL_MS 1000

struct auth;

/* Returns a new authenticator over db (borrowed), or NULL. */
struct auth *auth_new(struct db *db);
void auth_free(struct auth *a);

/* Mints a token for owner, stores its hash; token receives it. DB_* code. */
int auth_token_create(struct db *db, const char *owner, char token[AUTH_TOKEN_LEN], int64_t *id);

/* Hex SHA-256 of token. */
void auth_hash(const char *token, char out[AUTH_HASH_LEN]);

/* Checks an Authorization header value ("Bearer TOKEN"). Returns DB_OK with
 * the owner copied (and the token's hash, when hash is not NULL),
 * DB_NOT_FOUND for a missing/unknown/revoked token, or DB_ERROR. Tokens
 * found unknown are remembered for AUTH_NEGATIVE_TTL_MS, so a client
 * retrying a bad token costs a hash and no query. */
int auth_check(struct auth *a, const char *header, char owner[DB_OWNER_MAX],
               char hash[AUTH_HASH_LEN]);

/* Drops what is cached about a token (by its hash): it was revoked. */
void auth_forget(struct auth *a, const char *hash);

#endif
