/*
 * db_internal.h - what db.c, llm.c, token.c and usage.c share. Not for other modules.
 */
#ifndef MCP_DB_INTERNAL_H
#define MCP_DB_INTERNAL_H

#include "db.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#define DB_STMT_CACHE 48
#define DB_READ_STMTS 4 /* statements of the routing reads */

struct db {
    sqlite3 *conn;
    pthread_mutex_t mu;
    /* A second, read-only connection for the routing reads: in WAL mode it
     * reads the last commit while the writer works, so a cache refill on
     * the relay's path never waits behind a GC batch or a checkpoint.
     * NULL for an in-memory database (a second connection would see
     * another database). */
    sqlite3 *rconn;
    pthread_mutex_t rmu;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } rstmts[DB_READ_STMTS];
    atomic_uint_fast64_t route_gen; /* bumped after writes that may change routing */
    struct {
        const char *sql; /* a string literal: cached by its address */
        sqlite3_stmt *st;
    } stmts[DB_STMT_CACHE];
};

/* Returns the prepared statement for sql (a string literal), preparing it on
 * first use and keeping it for the connection's life; NULL on error. Call
 * db_done() after use, with the mutex still held. */
sqlite3_stmt *db_stmt(struct db *db, const char *sql);
/* Marks that a committed write may have changed a row's kind, status or
 * session (see db_route_generation()). */
void db_route_changed(struct db *db);
/* A routing read's statement for sql (a string literal), prepared on the
 * read connection (or, for an in-memory database, the writer's) with that
 * connection's lock taken; NULL on error, still locked. Always end with
 * db_read_done(). */
sqlite3_stmt *db_read_stmt(struct db *db, const char *sql);
/* Resets st (may be NULL) and releases the lock db_read_stmt() took. */
void db_read_done(struct db *db, sqlite3_stmt *st);
/* Resets a statement from db_stmt() and clears its bindings. */
void db_done(sqlite3_stmt *st);
/* Runs sql with no results. DB_OK or DB_ERROR. */
int db_exec(struct db *db, const char *sql);
/* Runs sql (a string literal) once per row, all n in one transaction:
 * bind(st, rows, i) binds row i's parameters. DB_OK, or DB_ERROR with
 * nothing written. Takes the mutex. */
int db_batch(struct db *db, const char *sql, const void *rows, size_t n,
             void (*bind)(sqlite3_stmt *st, const void *rows, size_t i));
/* Binds text or NULL. */
void db_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* Binds an integer, or NULL when v is 0 and zero_is_null. */
void db_bind_time(sqlite3_stmt *st, int idx, int64_t v);
/* Column text as a new string, or NULL for SQL NULL. */
char *db_col_strdup(sqlite3_stmt *st, int col);

#endif
