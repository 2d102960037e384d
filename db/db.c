#include "db_internal.h"
#include "migrations.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

sqlite3_stmt *db_stmt(struct db *db, const char *sql)
{
    int i;
    for (i = 0; i < DB_STMT_CACHE && db->stmts[i].sql; i++)
        if (db->stmts[i].sql == sql)
            return db->stmts[i].st;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    if (i < DB_STMT_CACHE) {
        db->stmts[i].sql = sql;
        db->stmts[i].st = st;
    }
    /* A full cache is a programming error: more distinct statements than
     * DB_STMT_CACHE. The statement still works but leaks until close. */
    return st;
}

sqlite3_stmt *db_read_stmt(struct db *db, const char *sql)
{
    if (!db->rconn) {
        pthread_mutex_lock(&db->mu);
        return db_stmt(db, sql);
    }
    pthread_mutex_lock(&db->rmu);
    int i;
    for (i = 0; i < DB_READ_STMTS && db->rstmts[i].sql; i++)
        if (db->rstmts[i].sql == sql)
            return db->rstmts[i].st;
    if (i == DB_READ_STMTS)
        return NULL; /* more routing reads than DB_READ_STMTS: a programming error */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db->rconn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    db->rstmts[i].sql = sql;
    db->rstmts[i].st = st;
    return st;
}

void db_read_done(struct db *db, sqlite3_stmt *st)
{
    db_done(st);
    pthread_mutex_unlock(db->rconn ? &db->rmu : &db->mu);
}

void db_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

int db_exec(struct db *db, const char *sql)
{
    return sqlite3_exec(db->conn, sql, NULL, NULL, NULL) == SQLITE_OK ? DB_OK : DB_ERROR;
}

int db_batch(struct db *db, const char *sql, const void *rows, size_t n,
             void (*bind)(sqlite3_stmt *st, const void *rows, size_t i))
{
    if (n == 0)
        return DB_OK;
    pthread_mutex_lock(&db->mu);
    int rc = db_exec(db, "BEGIN IMMEDIATE");
    if (rc == DB_OK) {
        sqlite3_stmt *st = db_stmt(db, sql);
        rc = st ? DB_OK : DB_ERROR;
        for (size_t i = 0; rc == DB_OK && i < n; i++) {
            bind(st, rows, i);
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = DB_ERROR;
            db_done(st);
        }
        rc = rc == DB_OK ? db_exec(db, "COMMIT") : rc;
        if (rc != DB_OK)
            db_exec(db, "ROLLBACK");
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

void db_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (s)
        sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, idx);
}

void db_bind_time(sqlite3_stmt *st, int idx, int64_t v)
{
    if (v)
        sqlite3_bind_int64(st, idx, v);
    else
        sqlite3_bind_null(st, idx);
}

char *db_col_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? strdup((const char *)s) : NULL;
}

void db_route_changed(struct db *db)
{
    atomic_fetch_add(&db->route_gen, 1);
}

uint64_t db_route_generation(struct db *db)
{
    return atomic_load(&db->route_gen);
}

const char *db_errmsg(struct db *db)
{
    return sqlite3_errmsg(db->conn);
}

int db_latest_version(void)
{
    return db_migrations_count > 0 ? db_migrations[db_migrations_count - 1].version : 0;
}

static int read_version(sqlite3 *conn)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(conn, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int db_schema_version(struct db *db)
{
    pthread_mutex_lock(&db->mu);
    int v = read_version(db->conn);
    pthread_mutex_unlock(&db->mu);
    return v;
}

static int migrate(sqlite3 *conn, const char *path, char *err, size_t errlen)
{
    int current = read_version(conn);
    if (current < 0) {
        snprintf(err, errlen, "cannot read schema version of '%s': %s", path, sqlite3_errmsg(conn));
        return DB_ERROR;
    }
    int latest = db_latest_version();
    if (current > latest) {
        snprintf(err, errlen,
                 "database '%s' has schema version %d but this mcpd knows only up to %d: "
                 "use a newer mcpd",
                 path, current, latest);
        return DB_TOO_NEW;
    }
    for (int i = 0; i < db_migrations_count; i++) {
        const struct migration *m = &db_migrations[i];
        if (m->version <= current)
            continue;
        char *msg = NULL;
        char setv[64];
        snprintf(setv, sizeof setv, "PRAGMA user_version = %d", m->version);
        if (sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(conn, m->sql, NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(conn, setv, NULL, NULL, &msg) != SQLITE_OK ||
            sqlite3_exec(conn, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(err, errlen, "migration %s failed: %s", m->name,
                     msg ? msg : sqlite3_errmsg(conn));
            sqlite3_free(msg);
            sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
            return DB_ERROR;
        }
    }
    return DB_OK;
}

/* A new database file is created readable by its owner alone: it holds the
 * token hashes. SQLite gives the -wal and -shm files the main file's mode. */
static int create_private(const char *path, char *err, size_t errlen)
{
    if (strcmp(path, ":memory:") == 0 || path[0] == '\0')
        return DB_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return DB_OK;
    }
    if (errno == EEXIST)
        return DB_OK;
    snprintf(err, errlen, "cannot open database '%s': %s", path, strerror(errno));
    return DB_ERROR;
}

int db_open(const char *path, struct db **out, char *err, size_t errlen)
{
    sqlite3 *conn = NULL;
    if (create_private(path, err, errlen) != DB_OK)
        return DB_ERROR;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2(path, &conn, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database '%s': %s", path,
                 conn ? sqlite3_errmsg(conn) : "out of memory");
        sqlite3_close(conn);
        return DB_ERROR;
    }
    sqlite3_busy_timeout(conn, 5000);
    char *msg = NULL;
    if (sqlite3_exec(conn,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "PRAGMA foreign_keys=ON;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database '%s': %s", path,
                 msg ? msg : sqlite3_errmsg(conn));
        sqlite3_free(msg);
        sqlite3_close(conn);
        return DB_ERROR;
    }
    int rc = migrate(conn, path, err, errlen);
    if (rc != DB_OK) {
        sqlite3_close(conn);
        return rc;
    }
    struct db *db = calloc(1, sizeof *db);
    if (!db) {
        sqlite3_close(conn);
        snprintf(err, errlen, "out of memory");
        return DB_ERROR;
    }
    db->conn = conn;
    atomic_init(&db->route_gen, 1);
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->rmu, NULL);
    if (strcmp(path, ":memory:") != 0 && path[0] != '\0') {
        if (sqlite3_open_v2(path, &db->rconn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "cannot open database '%s' for reading: %s", path,
                     db->rconn ? sqlite3_errmsg(db->rconn) : "out of memory");
            db_close(db);
            return DB_ERROR;
        }
        sqlite3_busy_timeout(db->rconn, 5000);
    }
    *out = db;
    return DB_OK;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    for (int i = 0; i < DB_STMT_CACHE && db->stmts[i].sql; i++)
        sqlite3_finalize(db->stmts[i].st);
    for (int i = 0; i < DB_READ_STMTS && db->rstmts[i].sql; i++)
        sqlite3_finalize(db->rstmts[i].st);
    sqlite3_close_v2(db->rconn);
    sqlite3_close_v2(db->conn);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->rmu);
    free(db);
}
