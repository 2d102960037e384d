/* token.c - API token rows. Only hashes are stored; see server/auth.c. */
#include "db_internal.h"

#include <stdio.h>
#include <string.h>

int db_token_insert(struct db *db, const char *hash, const char *owner, bool admin, int64_t now,
                    int64_t expires_at, int64_t *id)
{
    static const char sql[] =
        "INSERT INTO ApiToken (hash, owner, admin, created_at, expires_at) VALUES (?, ?, ?, ?, ?)";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, hash);
        db_bind_text(st, 2, owner);
        sqlite3_bind_int(st, 3, admin ? 1 : 0);
        sqlite3_bind_int64(st, 4, now);
        db_bind_time(st, 5, expires_at);
        if (sqlite3_step(st) == SQLITE_DONE) {
            *id = sqlite3_last_insert_rowid(db->conn);
            rc = DB_OK;
        }
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

#define TOKEN_COLUMNS "id, owner, admin, created_at, expires_at, last_used_at, revoked_at"

static void read_token(sqlite3_stmt *st, struct db_token *t)
{
    memset(t, 0, sizeof *t);
    t->id = sqlite3_column_int64(st, 0);
    snprintf(t->owner, sizeof t->owner, "%s", (const char *)sqlite3_column_text(st, 1));
    t->admin = sqlite3_column_int(st, 2) != 0;
    t->created_at = sqlite3_column_int64(st, 3);
    t->expires_at = sqlite3_column_int64(st, 4);
    t->last_used_at = sqlite3_column_int64(st, 5);
    t->revoked_at = sqlite3_column_int64(st, 6);
}

int db_token_lookup(struct db *db, const char *hash, int64_t now, struct db_token *out)
{
    static const char sql[] = "SELECT " TOKEN_COLUMNS " FROM ApiToken WHERE hash = ? AND "
                              "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, hash);
        sqlite3_bind_int64(st, 2, now);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            read_token(st, out);
            rc = DB_OK;
        } else if (s == SQLITE_DONE) {
            rc = DB_NOT_FOUND;
        }
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_token_list(struct db *db, void (*fn)(void *ud, const struct db_token *t), void *ud)
{
    static const char sql[] = "SELECT " TOKEN_COLUMNS " FROM ApiToken ORDER BY id";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            struct db_token t;
            read_token(st, &t);
            fn(ud, &t);
        }
        rc = s == SQLITE_DONE ? DB_OK : DB_ERROR;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_token_revoke(struct db *db, int64_t id, int64_t now)
{
    static const char sql[] =
        "UPDATE ApiToken SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, id);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = sqlite3_changes(db->conn) > 0 ? DB_OK : DB_NOT_FOUND;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_token_ended_since(struct db *db, int64_t since, int64_t now,
                         void (*fn)(void *ud, const char *hash), void *ud)
{
    static const char sql[] = "SELECT hash FROM ApiToken WHERE revoked_at >= ?1 OR "
                              "(expires_at >= ?1 AND expires_at <= ?2)";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, since);
        sqlite3_bind_int64(st, 2, now);
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW)
            fn(ud, (const char *)sqlite3_column_text(st, 0));
        rc = step == SQLITE_DONE ? DB_OK : DB_ERROR;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

static void bind_use(sqlite3_stmt *st, const void *rows, size_t i)
{
    const struct db_token_use *u = (const struct db_token_use *)rows + i;
    db_bind_text(st, 1, u->hash);
    sqlite3_bind_int64(st, 2, u->at);
}

int db_token_touch(struct db *db, const struct db_token_use *uses, size_t n)
{
    static const char sql[] = "UPDATE ApiToken SET last_used_at = ?2 WHERE hash = ?1 AND "
                              "(last_used_at IS NULL OR last_used_at < ?2)";
    return db_batch(db, sql, uses, n, bind_use);
}
