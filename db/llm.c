/* llm.c - Llm rows and provider sessions: the register upsert, heartbeats,
 * stream-close deactivation, listing and the GC sweep. */
#include "db_internal.h"
#include "ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLM_COLUMNS                                                                                \
    "id, name, kind, status, type, model, tier, description, extra_config, pool_name, owner, "     \
    "provider_session_id, last_heartbeat_at, inactive_since, created_at, updated_at"

void llm_row_release(struct llm_row *r)
{
    char **fields[] = {&r->id,           &r->name,      &r->kind,  &r->status,
                       &r->type,         &r->model,     &r->tier,  &r->description,
                       &r->extra_config, &r->pool_name, &r->owner, &r->provider_session_id};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

void llm_rows_free(struct llm_row *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        llm_row_release(&rows[i]);
    free(rows);
}

/* arr with room for element count (of size bytes; *cap of them fit now):
 * the same array, a larger one, or NULL (arr still valid) when out of
 * memory. */
static void *room_for(void *arr, size_t *cap, size_t count, size_t size)
{
    if (count < *cap)
        return arr;
    size_t n = *cap ? *cap * 2 : 16;
    void *p = realloc(arr, n * size);
    if (p)
        *cap = n;
    return p;
}

static void read_row(sqlite3_stmt *st, struct llm_row *r)
{
    r->id = db_col_strdup(st, 0);
    r->name = db_col_strdup(st, 1);
    r->kind = db_col_strdup(st, 2);
    r->status = db_col_strdup(st, 3);
    r->type = db_col_strdup(st, 4);
    r->model = db_col_strdup(st, 5);
    r->tier = db_col_strdup(st, 6);
    r->description = db_col_strdup(st, 7);
    r->extra_config = db_col_strdup(st, 8);
    r->pool_name = db_col_strdup(st, 9);
    r->owner = db_col_strdup(st, 10);
    r->provider_session_id = db_col_strdup(st, 11);
    r->last_heartbeat_at = sqlite3_column_int64(st, 12);
    r->inactive_since = sqlite3_column_int64(st, 13);
    r->created_at = sqlite3_column_int64(st, 14);
    r->updated_at = sqlite3_column_int64(st, 15);
}

/* Looks a session up; DB_OK with owner copied, DB_NOT_FOUND, or DB_ERROR. */
static int session_owner(struct db *db, const char *session, char owner[DB_OWNER_MAX])
{
    static const char sql[] = "SELECT owner FROM ProviderSession WHERE id = ?";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, session);
    int s = sqlite3_step(st);
    int rc = DB_ERROR;
    if (s == SQLITE_ROW) {
        snprintf(owner, DB_OWNER_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = DB_OK;
    } else if (s == SQLITE_DONE) {
        rc = DB_NOT_FOUND;
    }
    db_done(st);
    return rc;
}

static int session_touch(struct db *db, const char *session, int64_t now)
{
    static const char sql[] = "UPDATE ProviderSession SET last_seen_at = ? WHERE id = ?";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    sqlite3_bind_int64(st, 1, now);
    db_bind_text(st, 2, session);
    int rc = sqlite3_step(st) == SQLITE_DONE ? DB_OK : DB_ERROR;
    db_done(st);
    return rc;
}

static int session_insert(struct db *db, const char *session, const char *owner, int64_t now)
{
    static const char sql[] =
        "INSERT INTO ProviderSession (id, owner, created_at, last_seen_at) VALUES (?, ?, ?, ?)";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, session);
    db_bind_text(st, 2, owner);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int64(st, 4, now);
    int rc = sqlite3_step(st) == SQLITE_DONE ? DB_OK : DB_ERROR;
    db_done(st);
    return rc;
}

/* The fields of the row named name that decide the upsert. */
struct existing {
    int found;
    char kind[16];
    char status[16];
    char owner[DB_OWNER_MAX];
    char session[DB_SESSION_ID_LEN + 8];
};

static int find_existing(struct db *db, const char *name, struct existing *e)
{
    static const char sql[] =
        "SELECT kind, status, owner, provider_session_id FROM Llm WHERE name = ?";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, name);
    memset(e, 0, sizeof *e);
    int s = sqlite3_step(st);
    int rc = DB_ERROR;
    if (s == SQLITE_ROW) {
        const char *sess = (const char *)sqlite3_column_text(st, 3);
        e->found = 1;
        snprintf(e->kind, sizeof e->kind, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(e->status, sizeof e->status, "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(e->owner, sizeof e->owner, "%s", (const char *)sqlite3_column_text(st, 2));
        snprintf(e->session, sizeof e->session, "%s", sess ? sess : "");
        rc = DB_OK;
    } else if (s == SQLITE_DONE) {
        rc = DB_OK;
    }
    db_done(st);
    return rc;
}

static int insert_llm(struct db *db, const struct provider_input *p, const char *owner,
                      const char *session, int64_t now)
{
    static const char sql[] =
        "INSERT INTO Llm (id, name, kind, status, type, model, tier, description, extra_config,"
        " pool_name, owner, provider_session_id, last_heartbeat_at, inactive_since, created_at,"
        " updated_at, registered_status)"
        " VALUES (?, ?, 'virtual', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?3)";
    char id[DB_SESSION_ID_LEN];
    if (id_random_hex(id, 16) < 0)
        return DB_ERROR;
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, p->name);
    db_bind_text(st, 3, p->initial_status);
    db_bind_text(st, 4, p->type);
    db_bind_text(st, 5, p->model);
    db_bind_text(st, 6, p->tier);
    db_bind_text(st, 7, p->description);
    db_bind_text(st, 8, p->extra_config ? p->extra_config : "{}");
    db_bind_text(st, 9, p->pool_name);
    db_bind_text(st, 10, owner);
    db_bind_text(st, 11, session);
    sqlite3_bind_int64(st, 12, now);
    sqlite3_bind_int64(st, 13, now);
    sqlite3_bind_int64(st, 14, now);
    int rc = sqlite3_step(st) == SQLITE_DONE ? DB_OK : DB_ERROR;
    db_done(st);
    return rc;
}

/* Rules 2 and 3: update the row's fields, (re)bind it to session, set status. */
static int update_llm(struct db *db, const struct provider_input *p, const char *session,
                      int64_t now)
{
    static const char sql[] =
        "UPDATE Llm SET status = ?1, type = ?2, model = ?3, tier = ?4, description = ?5,"
        " extra_config = ?6, pool_name = ?7, provider_session_id = ?8, last_heartbeat_at = ?9,"
        " inactive_since = NULL, updated_at = ?10, registered_status = ?1 WHERE name = ?11";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, p->initial_status);
    db_bind_text(st, 2, p->type);
    db_bind_text(st, 3, p->model);
    db_bind_text(st, 4, p->tier);
    db_bind_text(st, 5, p->description);
    db_bind_text(st, 6, p->extra_config ? p->extra_config : "{}");
    db_bind_text(st, 7, p->pool_name);
    db_bind_text(st, 8, session);
    sqlite3_bind_int64(st, 9, now);
    sqlite3_bind_int64(st, 10, now);
    db_bind_text(st, 11, p->name);
    int rc = sqlite3_step(st) == SQLITE_DONE ? DB_OK : DB_ERROR;
    db_done(st);
    return rc;
}

/* DB_POOL_CONFLICT when a row named pool exists outside pool. */
static int pool_clash_row(struct db *db, const char *pool)
{
    static const char sql[] = "SELECT 1 FROM Llm WHERE name = ?1 AND"
                              " (pool_name IS NULL OR pool_name <> ?1)";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, pool);
    int s = sqlite3_step(st);
    db_done(st);
    return s == SQLITE_ROW ? DB_POOL_CONFLICT : s == SQLITE_DONE ? DB_OK : DB_ERROR;
}

/* DB_POOL_CONFLICT, with the name in *clash, when p's pool is named like
 * a row outside it, or p is named like a pool it is not in. */
static int pool_name_check(struct db *db, const struct provider_input *p, const char **clash)
{
    static const char sql[] = "SELECT 1 FROM Llm WHERE pool_name = ?1 LIMIT 1";
    *clash = p->name;
    if (p->pool_name) {
        int rc = pool_clash_row(db, p->pool_name);
        if (rc == DB_POOL_CONFLICT)
            *clash = p->pool_name;
        if (rc != DB_OK || strcmp(p->pool_name, p->name) == 0)
            return rc;
    }
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return DB_ERROR;
    db_bind_text(st, 1, p->name);
    int s = sqlite3_step(st);
    db_done(st);
    return s == SQLITE_ROW ? DB_POOL_CONFLICT : s == SQLITE_DONE ? DB_OK : DB_ERROR;
}

static int register_locked(struct db *db, const char *owner, const char *session_in,
                           const struct provider_input *in, size_t n, int64_t now,
                           char session_out[DB_SESSION_ID_LEN], char *conflict, size_t conflict_len)
{
    int rc;
    char sess_owner[DB_OWNER_MAX];
    int have_session = 0;
    if (session_in && *session_in) {
        rc = session_owner(db, session_in, sess_owner);
        if (rc == DB_ERROR)
            return rc;
        if (rc == DB_OK) {
            if (strcmp(sess_owner, owner) != 0)
                return DB_NOT_FOUND;
            if (strlen(session_in) >= DB_SESSION_ID_LEN)
                return DB_ERROR;
            snprintf(session_out, DB_SESSION_ID_LEN, "%s", session_in);
            have_session = 1;
        }
    }
    if (have_session) {
        rc = session_touch(db, session_out, now);
    } else {
        if (id_random_hex(session_out, 16) < 0)
            return DB_ERROR;
        rc = session_insert(db, session_out, owner, now);
    }
    if (rc != DB_OK)
        return rc;

    for (size_t i = 0; i < n; i++) {
        const struct provider_input *p = &in[i];
        struct existing e;
        if ((rc = find_existing(db, p->name, &e)) != DB_OK)
            return rc;
        if (!e.found) {
            rc = insert_llm(db, p, owner, session_out, now); /* rule 1 */
        } else if (strcmp(e.kind, "virtual") == 0 && strcmp(e.owner, owner) == 0 &&
                   (strcmp(e.session, session_out) == 0 || strcmp(e.status, "inactive") == 0)) {
            rc = update_llm(db, p, session_out, now); /* rules 2 and 3 */
        } else {
            snprintf(conflict, conflict_len, "%s", p->name); /* rule 4 */
            return DB_CONFLICT;
        }
        if (rc != DB_OK)
            return rc;
    }
    /* Checked once every row is written, so that names within the call
     * count too. */
    for (size_t i = 0; i < n; i++) {
        const char *clash;
        if ((rc = pool_name_check(db, &in[i], &clash)) != DB_OK) {
            if (rc == DB_POOL_CONFLICT)
                snprintf(conflict, conflict_len, "%s", clash);
            return rc;
        }
    }
    return DB_OK;
}

int db_register(struct db *db, const char *owner, const char *session_in,
                const struct provider_input *in, size_t n, int64_t now,
                char session_out[DB_SESSION_ID_LEN], char *conflict, size_t conflict_len)
{
    pthread_mutex_lock(&db->mu);
    int rc = db_exec(db, "BEGIN IMMEDIATE");
    if (rc == DB_OK) {
        rc =
            register_locked(db, owner, session_in, in, n, now, session_out, conflict, conflict_len);
        if (rc == DB_OK)
            rc = db_exec(db, "COMMIT");
        if (rc != DB_OK)
            db_exec(db, "ROLLBACK");
        else
            db_route_changed(db);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_session_check(struct db *db, const char *session, const char *owner)
{
    char sess_owner[DB_OWNER_MAX];
    pthread_mutex_lock(&db->mu);
    int rc = session_owner(db, session, sess_owner);
    if (rc == DB_OK && strcmp(sess_owner, owner) != 0)
        rc = DB_NOT_FOUND;
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_heartbeat(struct db *db, const char *session, const char *owner, int64_t now, bool revive,
                 int *revived)
{
    static const char revive_sql[] =
        "UPDATE Llm SET status = registered_status, inactive_since = NULL,"
        " last_heartbeat_at = ?, updated_at = ? WHERE provider_session_id = ? AND status = "
        "'inactive'";
    static const char bump_sql[] = "UPDATE Llm SET last_heartbeat_at = ? WHERE "
                                   "provider_session_id = ? AND status != 'inactive'";
    char sess_owner[DB_OWNER_MAX];
    pthread_mutex_lock(&db->mu);
    int rc = session_owner(db, session, sess_owner);
    if (rc == DB_OK && strcmp(sess_owner, owner) != 0)
        rc = DB_NOT_FOUND;
    if (rc == DB_OK)
        rc = db_exec(db, "BEGIN IMMEDIATE");
    if (rc == DB_OK) {
        sqlite3_stmt *bump = db_stmt(db, bump_sql);
        sqlite3_stmt *rev = db_stmt(db, revive_sql);
        rc = DB_ERROR;
        if (bump && rev) {
            sqlite3_bind_int64(bump, 1, now);
            db_bind_text(bump, 2, session);
            sqlite3_bind_int64(rev, 1, now);
            sqlite3_bind_int64(rev, 2, now);
            db_bind_text(rev, 3, session);
            *revived = 0;
            if (sqlite3_step(bump) == SQLITE_DONE &&
                (!revive || sqlite3_step(rev) == SQLITE_DONE)) {
                if (revive)
                    *revived = sqlite3_changes(db->conn);
                rc = session_touch(db, session, now);
            }
        }
        db_done(bump);
        db_done(rev);
        rc = rc == DB_OK ? db_exec(db, "COMMIT") : rc;
        if (rc != DB_OK)
            db_exec(db, "ROLLBACK");
        else if (*revived > 0)
            db_route_changed(db);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_session_deactivate(struct db *db, const char *session, int64_t now, int *changed)
{
    static const char sql[] =
        "UPDATE Llm SET status = 'inactive', inactive_since = ?, updated_at = ?"
        " WHERE provider_session_id = ? AND status != 'inactive'";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, now);
        db_bind_text(st, 3, session);
        if (sqlite3_step(st) == SQLITE_DONE) {
            if (changed)
                *changed = sqlite3_changes(db->conn);
            rc = DB_OK;
            db_route_changed(db);
        }
        db_done(st);
    }
    if (rc == DB_OK)
        rc = session_touch(db, session, now);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_llm_set_status(struct db *db, const char *name, const char *status, int64_t now)
{
    static const char sql[] =
        "UPDATE Llm SET status = ?1, updated_at = ?2,"
        " last_heartbeat_at = CASE WHEN ?1 = 'active' THEN ?2 ELSE last_heartbeat_at END,"
        " inactive_since = CASE WHEN ?1 = 'inactive' THEN ?2 ELSE NULL END WHERE name = ?3";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, status);
        sqlite3_bind_int64(st, 2, now);
        db_bind_text(st, 3, name);
        if (sqlite3_step(st) == SQLITE_DONE)
            rc = sqlite3_changes(db->conn) > 0 ? DB_OK : DB_NOT_FOUND;
        db_done(st);
        db_route_changed(db);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* The routing fields of a row from columns kind, status, session, pool. */
static void read_route(sqlite3_stmt *st, int col, struct llm_route *out)
{
    const char *sess = (const char *)sqlite3_column_text(st, col + 2);
    const char *pool = (const char *)sqlite3_column_text(st, col + 3);
    out->is_virtual = strcmp((const char *)sqlite3_column_text(st, col), "virtual") == 0;
    snprintf(out->status, sizeof out->status, "%s", (const char *)sqlite3_column_text(st, col + 1));
    snprintf(out->session, sizeof out->session, "%s", sess ? sess : "");
    snprintf(out->pool, sizeof out->pool, "%s", pool ? pool : "");
}

int db_llm_route(struct db *db, const char *name, struct llm_route *out)
{
    static const char sql[] =
        "SELECT kind, status, provider_session_id, pool_name FROM Llm WHERE name = ?";
    static const char pool_sql[] = "SELECT 1 FROM Llm WHERE pool_name = ? LIMIT 1";
    sqlite3_stmt *st = db_read_stmt(db, sql);
    int rc = DB_ERROR, step = SQLITE_ERROR;
    if (st) {
        db_bind_text(st, 1, name);
        step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            read_route(st, 0, out);
            rc = DB_OK;
        }
    }
    db_read_done(db, st);
    if (step != SQLITE_DONE)
        return rc;
    /* No row has that name: a pool may. */
    st = db_read_stmt(db, pool_sql);
    if (st) {
        db_bind_text(st, 1, name);
        step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            memset(out, 0, sizeof *out);
            out->is_virtual = true;
            snprintf(out->pool, sizeof out->pool, "%s", name);
            rc = DB_OK;
        } else if (step == SQLITE_DONE) {
            rc = DB_NOT_FOUND;
        }
    }
    db_read_done(db, st);
    return rc;
}

int db_pool_members(struct db *db, const char *pool, struct pool_member **out, size_t *n)
{
    static const char sql[] = "SELECT name, kind, status, provider_session_id, pool_name FROM Llm"
                              " WHERE pool_name = ? ORDER BY name";
    struct pool_member *m = NULL;
    size_t count = 0, cap = 0;
    int rc = DB_ERROR, step = SQLITE_ERROR;
    sqlite3_stmt *st = db_read_stmt(db, sql);
    if (st) {
        db_bind_text(st, 1, pool);
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            struct pool_member *p = room_for(m, &cap, count, sizeof *m);
            if (!p)
                break;
            m = p;
            snprintf(m[count].name, sizeof m[count].name, "%s",
                     (const char *)sqlite3_column_text(st, 0));
            read_route(st, 1, &m[count].route);
            count++;
        }
        if (step == SQLITE_DONE)
            rc = DB_OK;
    }
    db_read_done(db, st);
    if (rc != DB_OK) {
        free(m);
        return rc;
    }
    *out = m;
    *n = count;
    return DB_OK;
}

int db_llm_get(struct db *db, const char *name, struct llm_row *out)
{
    static const char sql[] = "SELECT " LLM_COLUMNS " FROM Llm WHERE name = ?";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        db_bind_text(st, 1, name);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            memset(out, 0, sizeof *out);
            read_row(st, out);
            rc = DB_OK;
        } else if (s == SQLITE_DONE) {
            rc = DB_NOT_FOUND;
        }
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_llm_count_by_status(struct db *db, unsigned counts[2][3])
{
    static const char sql[] =
        "SELECT CASE kind WHEN 'public' THEN 0 WHEN 'virtual' THEN 1 END, "
        "CASE status WHEN 'active' THEN 0 WHEN 'inactive' THEN 1 WHEN 'hibernating' THEN 2 END, "
        "count(*) FROM Llm GROUP BY kind, status";
    memset(counts, 0, 2 * sizeof counts[0]);
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            if (sqlite3_column_type(st, 0) == SQLITE_NULL ||
                sqlite3_column_type(st, 1) == SQLITE_NULL)
                continue;
            counts[sqlite3_column_int(st, 0)][sqlite3_column_int(st, 1)] +=
                (unsigned)sqlite3_column_int64(st, 2);
        }
        if (s == SQLITE_DONE)
            rc = DB_OK;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* The rows sql selects (LLM_COLUMNS, one text parameter when arg is set). */
static int list_rows(struct db *db, const char *sql, const char *arg, struct llm_row **rows,
                     size_t *n)
{
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    struct llm_row *out = NULL;
    size_t count = 0, cap = 0;
    if (st) {
        if (arg)
            db_bind_text(st, 1, arg);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            struct llm_row *p = room_for(out, &cap, count, sizeof *out);
            if (!p)
                break;
            out = p;
            memset(&out[count], 0, sizeof out[count]);
            read_row(st, &out[count++]);
        }
        if (s == SQLITE_DONE)
            rc = DB_OK;
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    if (rc != DB_OK) {
        llm_rows_free(out, count);
        return rc;
    }
    *rows = out;
    *n = count;
    return DB_OK;
}

int db_llm_list(struct db *db, const char *session, struct llm_row **rows, size_t *n)
{
    static const char all_sql[] = "SELECT " LLM_COLUMNS " FROM Llm ORDER BY name";
    static const char sess_sql[] =
        "SELECT " LLM_COLUMNS " FROM Llm WHERE provider_session_id = ? ORDER BY name";
    return list_rows(db, session ? sess_sql : all_sql, session, rows, n);
}

int db_llm_list_pool(struct db *db, const char *pool, struct llm_row **rows, size_t *n)
{
    static const char sql[] = "SELECT " LLM_COLUMNS " FROM Llm WHERE pool_name = ? ORDER BY name";
    return list_rows(db, sql, pool, rows, n);
}

int db_gc(struct db *db, int64_t now, int64_t hb_timeout_ms, int64_t retention_ms, int limit,
          void (*on_stale)(void *ud, const char *session), void *ud, int *inactivated, int *deleted)
{
    static const char stale_sql[] =
        "UPDATE Llm SET status = 'inactive', inactive_since = ?1, updated_at = ?1"
        " WHERE id IN (SELECT id FROM Llm WHERE kind = 'virtual'"
        " AND status IN ('active', 'hibernating') AND last_heartbeat_at < ?2 LIMIT ?3)"
        " RETURNING provider_session_id";
    static const char delete_sql[] =
        "DELETE FROM Llm WHERE id IN (SELECT id FROM Llm WHERE kind = 'virtual'"
        " AND status = 'inactive' AND inactive_since < ?1 LIMIT ?2)";
    static const char sessions_sql[] =
        "DELETE FROM ProviderSession WHERE id IN (SELECT s.id FROM ProviderSession s"
        " WHERE s.last_seen_at < ?1 AND NOT EXISTS"
        " (SELECT 1 FROM Llm l WHERE l.provider_session_id = s.id) LIMIT ?2)";
    pthread_mutex_lock(&db->mu);
    int rc = db_exec(db, "BEGIN IMMEDIATE");
    if (rc == DB_OK) {
        sqlite3_stmt *a = db_stmt(db, stale_sql);
        sqlite3_stmt *b = db_stmt(db, delete_sql);
        sqlite3_stmt *c = db_stmt(db, sessions_sql);
        rc = DB_ERROR;
        if (a && b && c) {
            sqlite3_bind_int64(a, 1, now);
            sqlite3_bind_int64(a, 2, now - hb_timeout_ms);
            sqlite3_bind_int(a, 3, limit);
            sqlite3_bind_int64(b, 1, now - retention_ms);
            sqlite3_bind_int(b, 2, limit);
            sqlite3_bind_int64(c, 1, now - retention_ms);
            sqlite3_bind_int(c, 2, limit);
            int step;
            *inactivated = 0;
            while ((step = sqlite3_step(a)) == SQLITE_ROW) {
                const char *sid = (const char *)sqlite3_column_text(a, 0);
                (*inactivated)++;
                if (sid && on_stale)
                    on_stale(ud, sid);
            }
            if (step == SQLITE_DONE) {
                if (sqlite3_step(b) == SQLITE_DONE) {
                    *deleted = sqlite3_changes(db->conn);
                    if (sqlite3_step(c) == SQLITE_DONE)
                        rc = DB_OK;
                }
            }
        }
        db_done(a);
        db_done(b);
        db_done(c);
        rc = rc == DB_OK ? db_exec(db, "COMMIT") : rc;
        if (rc != DB_OK)
            db_exec(db, "ROLLBACK");
        else if (*inactivated)
            db_route_changed(db);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_deactivate_all(struct db *db, int64_t now, int *changed)
{
    static const char sql[] =
        "UPDATE Llm SET status = 'inactive', inactive_since = ?1, updated_at = ?1"
        " WHERE kind = 'virtual' AND status != 'inactive'";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, now);
        if (sqlite3_step(st) == SQLITE_DONE) {
            if (changed)
                *changed = sqlite3_changes(db->conn);
            rc = DB_OK;
            db_route_changed(db);
        }
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int db_session_revive(struct db *db, const char *session, int64_t now, int *revived)
{
    static const char sql[] = "UPDATE Llm SET status = registered_status, inactive_since = NULL,"
                              " last_heartbeat_at = ?1, updated_at = ?1"
                              " WHERE provider_session_id = ?2 AND status = 'inactive'";
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc = DB_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, now);
        db_bind_text(st, 2, session);
        if (sqlite3_step(st) == SQLITE_DONE) {
            int n = sqlite3_changes(db->conn);
            if (revived)
                *revived = n;
            rc = DB_OK;
            if (n > 0)
                db_route_changed(db);
        }
        db_done(st);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}
