/*
 * db.h - mcpd's durable store: one SQLite database in WAL mode.
 *
 * All SQL lives in this directory. A struct db owns one connection (the only
 * writer) and a mutex; every function here takes the mutex, so a struct db may
 * be shared by all threads. Timestamps are ms since the epoch, passed in by
 * the caller (mcpd's clock), so rules can be tested with a fake clock.
 *
 * Functions return DB_OK (0) or a negative DB_E* code.
 */
#ifndef MCP_DB_H
#define MCP_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    DB_OK = 0,
    DB_ERROR = -1,         /* SQLite failed; see db_errmsg() */
    DB_NOT_FOUND = -2,     /* no such row, or it belongs to another owner */
    DB_CONFLICT = -3,      /* a register name is held by someone else */
    DB_TOO_NEW = -4,       /* the database was written by a newer mcpd */
    DB_POOL_CONFLICT = -5, /* a pool name equals the name of a row outside the pool */
};

#define DB_SESSION_ID_LEN 33 /* 128 random bits as hex + NUL */
#define DB_NAME_BUF 101      /* an Llm or pool name (<= 100 characters) + NUL */
#define DB_OWNER_MAX 128

struct db;

/* Opens (creating if needed) the database at path, applies the settings and
 * every pending migration. Returns DB_OK with *out set, or an error with a
 * message in err (errlen bytes). */
int db_open(const char *path, struct db **out, char *err, size_t errlen);
/* Closes the connection. NULL is a no-op. */
void db_close(struct db *db);
/* The last SQLite error message on this connection (borrowed). */
const char *db_errmsg(struct db *db);
/* The schema version (PRAGMA user_version). */
int db_schema_version(struct db *db);
/* The newest schema version this binary knows. */
int db_latest_version(void);

/* ---- API tokens (token.c) ---- */

struct db_token {
    int64_t id;
    char owner[DB_OWNER_MAX];
    bool admin;
    int64_t created_at;
    int64_t expires_at;   /* 0: never */
    int64_t last_used_at; /* 0: never (as last written; see db_token_touch()) */
    int64_t revoked_at;   /* 0 when live */
};

/* Stores a token hash for owner; expires_at is 0 for a token that never
 * expires. *id receives the new row id. */
int db_token_insert(struct db *db, const char *hash, const char *owner, bool admin, int64_t now,
                    int64_t expires_at, int64_t *id);
/* Finds a token hash that is live at now (neither revoked nor expired):
 * DB_OK with *out filled (expires_at and last_used_at included), or
 * DB_NOT_FOUND. */
int db_token_lookup(struct db *db, const char *hash, int64_t now, struct db_token *out);
/* Calls fn for every token, oldest first. */
int db_token_list(struct db *db, void (*fn)(void *ud, const struct db_token *t), void *ud);
/* Revokes token id: DB_OK, or DB_NOT_FOUND when there is no live token id. */
int db_token_revoke(struct db *db, int64_t id, int64_t now);
/* Calls fn with the hash of every token that ended at or after since (ms):
 * revoked then, or expired between since and now. */
int db_token_ended_since(struct db *db, int64_t since, int64_t now,
                         void (*fn)(void *ud, const char *hash), void *ud);

/* A token seen in use: its hash and when. */
struct db_token_use {
    const char *hash;
    int64_t at;
};
/* Records when tokens were last used, in one transaction; a time older
 * than the one stored is ignored. */
int db_token_touch(struct db *db, const struct db_token_use *uses, size_t n);

/* ---- usage accounting (usage.c) ---- */

/* One row of counts: a UTC day, the caller's owner and an Llm. */
struct db_usage {
    const char *day; /* "YYYY-MM-DD" */
    const char *owner;
    const char *llm;
    int64_t requests;
    int64_t errors;
    int64_t prompt_tokens;
    int64_t completion_tokens;
};

/* Adds each row's counts to the stored ones (a missing row starts at 0),
 * all in one transaction. */
int db_usage_add(struct db *db, const struct db_usage *rows, size_t n);

/* Which rows db_usage_list() returns; NULL members do not filter. */
struct db_usage_filter {
    const char *since; /* first day, "YYYY-MM-DD", inclusive */
    const char *until; /* last day, inclusive */
    const char *owner;
    const char *llm;
};

/* Calls fn for every row that matches, ordered by day, owner and Llm. The
 * row's strings are borrowed for the call. */
int db_usage_list(struct db *db, const struct db_usage_filter *f,
                  void (*fn)(void *ud, const struct db_usage *row), void *ud);

/* ---- Llm rows and provider sessions (llm.c) ---- */

struct llm_row {
    char *id;
    char *name;
    char *kind;
    char *status;
    char *type;
    char *model;
    char *tier;         /* NULL when unset */
    char *description;  /* NULL when unset */
    char *extra_config; /* JSON object text */
    char *pool_name;    /* NULL when unset */
    char *owner;
    char *provider_session_id; /* NULL when unset */
    int64_t last_heartbeat_at; /* 0 when unset */
    int64_t inactive_since;    /* 0 when unset */
    int64_t created_at;
    int64_t updated_at;
};

/* Frees the strings of a row filled by this module. */
void llm_row_release(struct llm_row *r);
/* Frees an array of n rows returned by db_llm_list*(). NULL is a no-op. */
void llm_rows_free(struct llm_row *rows, size_t n);

struct provider_input {
    const char *name;
    const char *type;
    const char *model;
    const char *tier;           /* may be NULL */
    const char *description;    /* may be NULL */
    const char *extra_config;   /* JSON object text; NULL means {} */
    const char *pool_name;      /* may be NULL */
    const char *initial_status; /* "active" or "hibernating" */
};

/* The register upsert, in one transaction (all rows or none).
 * session_in may be NULL or unknown (a fresh id is minted) or this owner's
 * session (reused); another owner's session gives DB_NOT_FOUND. A name held
 * by a public row, another session's live row or another owner gives
 * DB_CONFLICT with the name copied to conflict (MCP name max + 1 bytes).
 * A pool name that would equal the name of a row outside that pool (a
 * provider's poolName naming another row, or a provider named like
 * another row's pool) gives DB_POOL_CONFLICT with that name in conflict.
 * On DB_OK session_out holds the session id. */
int db_register(struct db *db, const char *owner, const char *session_in,
                const struct provider_input *in, size_t n, int64_t now,
                char session_out[DB_SESSION_ID_LEN], char *conflict, size_t conflict_len);

/* DB_OK when session exists and belongs to owner, else DB_NOT_FOUND. */
int db_session_check(struct db *db, const char *session, const char *owner);

/* Heartbeat: bumps last_heartbeat_at of every row of the session and, when
 * revive is set (the session has a live stream), revives inactive rows to
 * the status they were registered with;
 * *revived gets the count. DB_NOT_FOUND for unknown/foreign. */
int db_heartbeat(struct db *db, const char *session, const char *owner, int64_t now, bool revive,
                 int *revived);

/* A stream was bound for the session: its inactive rows go back to the
 * status they were registered with. */
int db_session_revive(struct db *db, const char *session, int64_t now, int *revived);

/* Every virtual row that is not inactive becomes inactive: at start (no
 * stream is bound yet) and at shutdown. */
int db_deactivate_all(struct db *db, int64_t now, int *changed);

/* The session's stream closed: its active/hibernating rows become inactive. */
int db_session_deactivate(struct db *db, const char *session, int64_t now, int *changed);

/* Sets one row's status. "active" also bumps last_heartbeat_at. */
int db_llm_set_status(struct db *db, const char *name, const char *status, int64_t now);

/* What routing an inference needs of a row. */
struct llm_route {
    bool is_virtual;
    char status[16];
    char session[DB_SESSION_ID_LEN]; /* "" when unset */
    char pool[DB_NAME_BUF];          /* the row's pool, or "" */
};

/* The routing fields of the row called name: DB_OK or DB_NOT_FOUND. A name
 * that is no row's but some rows' pool name gives DB_OK with only pool set
 * (to name). Read on a connection of its own, which does not wait for the
 * writer. */
int db_llm_route(struct db *db, const char *name, struct llm_route *out);

/* A pool member's name and routing fields. */
struct pool_member {
    char name[DB_NAME_BUF];
    struct llm_route route;
};

/* The rows whose pool is pool, sorted by name: DB_OK with *out (caller
 * frees; NULL when there are none) and *n. Read like db_llm_route(). */
int db_pool_members(struct db *db, const char *pool, struct pool_member **out, size_t *n);

/* The whole rows of pool's members sorted by name, as db_llm_list(). */
int db_llm_list_pool(struct db *db, const char *pool, struct llm_row **rows, size_t *n);

/* A counter that changes after every committed write that may change any
 * row's kind, status or session (register, revival, deactivation, GC, status
 * changes), and not after heartbeats that only bump timestamps. A cache of
 * llm_route read after observing generation g is valid while the counter
 * still reads g. */
uint64_t db_route_generation(struct db *db);

/* One row by name: DB_OK (caller releases *out) or DB_NOT_FOUND. */
int db_llm_get(struct db *db, const char *name, struct llm_row *out);
/* All rows sorted by name (session NULL), or one session's rows. */
int db_llm_list(struct db *db, const char *session, struct llm_row **rows, size_t *n);

/* Counts the rows by kind and status into counts[kind][status]: kind
 * public (0) or virtual (1), status active (0), inactive (1) or
 * hibernating (2). Rows of any other kind or status are not counted. */
int db_llm_count_by_status(struct db *db, unsigned counts[2][3]);

/* One GC tick: at most limit rows are flipped and at most limit deleted.
 * on_stale (may be NULL) is called, inside the transaction, with the session
 * of each row flipped to inactive (a session may come more than once).
 * Deleting rows that were inactive does not move the route generation: a
 * cached route of a deleted row still says inactive (503) until the next
 * change, and a sweep of deletions sends no relay to the database.
 * Virtual rows active/hibernating with last_heartbeat_at before now - hb_timeout
 * become inactive; rows inactive since before now - retention are deleted, and
 * so are sessions with no rows left that were last seen before that. */
int db_gc(struct db *db, int64_t now, int64_t hb_timeout_ms, int64_t retention_ms, int limit,
          void (*on_stale)(void *ud, const char *session), void *ud, int *inactivated,
          int *deleted);

#endif
