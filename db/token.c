/* token.c - API token rows. Only hashes are stored; see server/auth.c. */
#include "db_internal.h"

#include <stdio.h>
#include <string.h>

int db_token_insert(struct db *db, const char *hash, const char *owner, int64_t now, int64_t *id)
{
    static const char sql[] = "INSERT INTO ApiToken (hash, owner, created_at) VALUES (?, ?, ?)";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, hash);
        db_bind_text(st, 2, owner);
        sqlite3_bind_int64(st, 3, now);
        if (sqlite3_step(st) == SQLITE_DONE) {
            *id = sqlite3_last_insert_rowid(db->conn);
            rc = DB_OK;
        }
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_token_owner(struct db *db, const char *hash, char owner[DB_OWNER_MAX])
{
    static const char sql[] = "SELECT owner FROM ApiToken WHERE hash = ? AND revoked_at IS NULL";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, hash);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            snprintf(owner, DB_OWNER_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
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
    static const char sql[] = "SELECT id, owner, created_at, revoked_at FROM ApiToken ORDER BY id";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            struct db_token t = {0};
            t.id = sqlite3_column_int64(st, 0);
            snprintf(t.owner, sizeof t.owner, "%s", (const char *)sqlite3_column_text(st, 1));
            t.created_at = sqlite3_column_int64(st, 2);
            t.revoked_at = sqlite3_column_int64(st, 3);
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

int db_token_revoked_since(struct db *db, int64_t since, void (*fn)(void *ud, const char *hash),
                           void *ud)
{
    static const char sql[] = "SELECT hash FROM ApiToken WHERE revoked_at >= ?";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, since);
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW)
            fn(ud, (const char *)sqlite3_column_text(st, 0));
        rc = step == SQLITE_DONE ? DB_OK : DB_ERROR;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}
