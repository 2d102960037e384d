/* usage.c - usage accounting rows: counts per UTC day, owner and Llm,
 * added to in batches (server/usage.c keeps them in memory until then). */
#include "db_internal.h"

static void bind_row(sqlite3_stmt *st, const void *rows, size_t i)
{
    const struct db_usage *u = (const struct db_usage *)rows + i;
    db_bind_text(st, 1, u->day);
    db_bind_text(st, 2, u->owner);
    db_bind_text(st, 3, u->llm);
    sqlite3_bind_int64(st, 4, u->requests);
    sqlite3_bind_int64(st, 5, u->errors);
    sqlite3_bind_int64(st, 6, u->prompt_tokens);
    sqlite3_bind_int64(st, 7, u->completion_tokens);
}

int db_usage_add(struct db *db, const struct db_usage *rows, size_t n)
{
    static const char sql[] =
        "INSERT INTO Usage (day, owner, llm, requests, errors, prompt_tokens, completion_tokens)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, owner, llm) DO UPDATE SET"
        " requests = requests + excluded.requests, errors = errors + excluded.errors,"
        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = completion_tokens + excluded.completion_tokens";
    return db_batch(db, sql, rows, n, bind_row);
}

int db_usage_list(struct db *db, const struct db_usage_filter *f,
                  void (*fn)(void *ud, const struct db_usage *row), void *ud)
{
    static const char sql[] =
        "SELECT day, owner, llm, requests, errors, prompt_tokens, completion_tokens FROM Usage"
        " WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR day <= ?2)"
        " AND (?3 IS NULL OR owner = ?3) AND (?4 IS NULL OR llm = ?4)"
        " ORDER BY day, owner, llm";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, f->since);
        db_bind_text(st, 2, f->until);
        db_bind_text(st, 3, f->owner);
        db_bind_text(st, 4, f->llm);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            struct db_usage row = {
                .day = (const char *)sqlite3_column_text(st, 0),
                .owner = (const char *)sqlite3_column_text(st, 1),
                .llm = (const char *)sqlite3_column_text(st, 2),
                .requests = sqlite3_column_int64(st, 3),
                .errors = sqlite3_column_int64(st, 4),
                .prompt_tokens = sqlite3_column_int64(st, 5),
                .completion_tokens = sqlite3_column_int64(st, 6),
            };
            fn(ud, &row);
        }
        rc = s == SQLITE_DONE ? DB_OK : DB_ERROR;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}
