/*
 * provider.c - the publisher-facing bookkeeping routes (register, heartbeat)
 * and the read routes (list, get, /v1/models).
 */
#include "clock.h"
#include "log.h"
#include "protocol.h"
#include "routes.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *time_or_null(int64_t ms)
{
    if (!ms)
        return json_null();
    char ts[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(ms, ts);
    return json_string(ts);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* The LlmView of a row as seen by viewer (providerSessionId only to its owner). */
static json_t *llm_view(const struct llm_row *row, const char *viewer)
{
    json_t *extra = json_loads(row->extra_config ? row->extra_config : "{}", 0, NULL);
    if (!json_is_object(extra)) {
        json_decref(extra);
        extra = json_object();
    }
    bool mine = viewer && row->owner && strcmp(viewer, row->owner) == 0;
    return json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o}", "id", row->id, "name",
        row->name, "kind", row->kind, "status", row->status, "type", row->type, "model", row->model,
        "tier", str_or_null(row->tier), "description", str_or_null(row->description), "extraConfig",
        extra, "poolName", str_or_null(row->pool_name), "owner", row->owner, "providerSessionId",
        mine ? str_or_null(row->provider_session_id) : json_null(), "lastHeartbeatAt",
        time_or_null(row->last_heartbeat_at), "inactiveSince", time_or_null(row->inactive_since),
        "createdAt", time_or_null(row->created_at), "updatedAt", time_or_null(row->updated_at));
}

static enum MHD_Result reply_json_value(struct req *r, unsigned status, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!text)
        return http_reply_error(r, 500, "out of memory");
    enum MHD_Result rc = http_reply_json(r, status, text, strlen(text));
    free(text);
    return rc;
}

static enum MHD_Result db_failure(struct req *r)
{
    log_error("database error: %s", db_errmsg(r->srv->db));
    return http_reply_error(r, 500, "database error");
}

/* Reads an optional string member; NULL when absent or null. Returns -1 when
 * present with another type. */
static int opt_string(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* The register body's "features": unknown names are ignored, so that an
 * older mcpd takes a newer publisher. */
static int parse_features(json_t *arr, unsigned *out)
{
    *out = 0;
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *f = json_string_value(v);
        if (!f)
            return -1;
        if (strcmp(f, "paths") == 0)
            *out |= BROKER_FEAT_PATHS;
        else if (strcmp(f, "streamed-results") == 0)
            *out |= BROKER_FEAT_STREAMED;
    }
    return 0;
}

enum MHD_Result provider_register(struct req *r)
{
    struct server *srv = r->srv;
    json_error_t jerr;
    json_t *root = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &jerr);
    struct provider_input *in = NULL;
    char **extras = NULL;
    size_t n = 0;
    enum MHD_Result rc;
    if (!root || !json_is_object(root)) {
        rc = http_reply_error(r, 400, "body is not a JSON object: %s",
                              root ? "wrong type" : jerr.text);
        goto out;
    }
    const char *session_in = NULL;
    if (opt_string(root, "providerSessionId", &session_in) < 0) {
        rc = http_reply_error(r, 400, "providerSessionId must be a string");
        goto out;
    }
    unsigned features = 0;
    if (parse_features(json_object_get(root, "features"), &features) < 0) {
        rc = http_reply_error(r, 400, "features must be an array of strings");
        goto out;
    }
    json_t *providers = json_object_get(root, "providers");
    if (!json_is_array(providers) || json_array_size(providers) == 0) {
        rc = http_reply_error(r, 400, "providers must be a non-empty array");
        goto out;
    }
    n = json_array_size(providers);
    if (n > 1000) {
        rc = http_reply_error(r, 400, "providers: at most 1000 per call");
        goto out;
    }
    in = calloc(n, sizeof *in);
    extras = calloc(n, sizeof *extras);
    if (!in || !extras) {
        rc = http_reply_error(r, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(providers, i);
        struct provider_input *pi = &in[i];
        if (!json_is_object(p)) {
            rc = http_reply_error(r, 400, "providers[%zu] must be an object", i);
            goto out;
        }
        static const char *const required[] = {"name", "type", "model"};
        const char **dst[] = {&pi->name, &pi->type, &pi->model};
        for (int k = 0; k < 3; k++) {
            json_t *v = json_object_get(p, required[k]);
            if (!json_is_string(v) || json_string_length(v) == 0) {
                rc = http_reply_error(r, 400, "providers[%zu].%s must be a non-empty string", i,
                                      required[k]);
                goto out;
            }
            *dst[k] = json_string_value(v);
        }
        if (!mcp_name_valid(pi->name)) {
            rc = http_reply_error(r, 400,
                                  "providers[%zu].name '%s' is invalid: 1-100 characters of "
                                  "[A-Za-z0-9._-], starting with a letter or digit",
                                  i, pi->name);
            goto out;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(in[j].name, pi->name) == 0) {
                rc =
                    http_reply_error(r, 400, "providers[%zu].name '%s' appears twice", i, pi->name);
                goto out;
            }
        }
        static const char *const optional[] = {"tier", "description", "poolName"};
        const char **odst[] = {&pi->tier, &pi->description, &pi->pool_name};
        for (int k = 0; k < 3; k++) {
            if (opt_string(p, optional[k], odst[k]) < 0) {
                rc = http_reply_error(r, 400, "providers[%zu].%s must be a string", i, optional[k]);
                goto out;
            }
        }
        if (pi->pool_name && !mcp_name_valid(pi->pool_name)) {
            rc = http_reply_error(r, 400,
                                  "providers[%zu].poolName '%s' is invalid: 1-100 characters of "
                                  "[A-Za-z0-9._-], starting with a letter or digit",
                                  i, pi->pool_name);
            goto out;
        }
        json_t *extra = json_object_get(p, "extraConfig");
        if (extra && !json_is_null(extra)) {
            if (!json_is_object(extra)) {
                rc = http_reply_error(r, 400, "providers[%zu].extraConfig must be an object", i);
                goto out;
            }
            extras[i] = json_dumps(extra, JSON_COMPACT);
            pi->extra_config = extras[i];
        }
        const char *st = NULL;
        if (opt_string(p, "initialStatus", &st) < 0 ||
            (st && strcmp(st, MCP_STATUS_ACTIVE) != 0 && strcmp(st, MCP_STATUS_HIBERNATING) != 0)) {
            rc = http_reply_error(r, 400,
                                  "providers[%zu].initialStatus must be \"active\" or "
                                  "\"hibernating\"",
                                  i);
            goto out;
        }
        pi->initial_status = st ? st : MCP_STATUS_ACTIVE;
    }

    char session[DB_SESSION_ID_LEN];
    char conflict[MCP_NAME_BUF] = "";
    int drc = db_register(srv->db, r->owner, session_in, in, n, clock_wall_ms(), session, conflict,
                          sizeof conflict);
    if (drc == DB_NOT_FOUND) {
        rc = http_reply_error(r, 404, "no such provider session");
        goto out;
    }
    if (drc == DB_CONFLICT || drc == DB_POOL_CONFLICT) {
        json_t *e = json_pack("{s:s,s:s}", "error",
                              drc == DB_CONFLICT
                                  ? "name is held by a public Llm, another live session or "
                                    "another owner; nothing was registered"
                                  : "a pool may not be named like an Llm outside it: the name is "
                                    "both a pool's and another Llm's; nothing was registered",
                              "name", conflict);
        rc = reply_json_value(r, 409, e);
        goto out;
    }
    if (drc != DB_OK) {
        rc = db_failure(r);
        goto out;
    }
    if (broker_session_registered(srv->broker, session, r->owner, features, clock_mono_ms()) < 0) {
        rc = http_reply_error(r, 500, "out of memory");
        goto out;
    }
    struct llm_row *rows = NULL;
    size_t nrows = 0;
    if (db_llm_list(srv->db, session, &rows, &nrows) != DB_OK) {
        rc = db_failure(r);
        goto out;
    }
    json_t *views = json_array();
    for (size_t i = 0; i < nrows; i++)
        json_array_append_new(views, llm_view(&rows[i], r->owner));
    llm_rows_free(rows, nrows);
    log_info("session %.8s… of '%s' registered %zu provider(s)", session, r->owner, n);
    rc = reply_json_value(r, 200,
                          json_pack("{s:s,s:o}", "providerSessionId", session, "llms", views));
out:
    if (extras)
        for (size_t i = 0; i < n; i++)
            free(extras[i]);
    free(extras);
    free(in);
    json_decref(root);
    return rc;
}

enum MHD_Result provider_heartbeat(struct req *r)
{
    struct server *srv = r->srv;
    const char *session = http_session_header(r);
    if (!session)
        return http_reply_error(r, 400, "missing header " MCP_HEADER_SESSION);
    if (r->body.len > 0) {
        json_t *b = json_loadb(r->body.data, r->body.len, 0, NULL);
        bool ok = json_is_object(b);
        json_decref(b);
        if (!ok)
            return http_reply_error(r, 400, "body must be a JSON object or empty");
    }
    /* A heartbeat revives rows only while a stream is bound: without one,
     * "active" would promise callers a publisher that cannot be reached. */
    int revived = 0;
    pthread_mutex_lock(&srv->life_mu);
    bool live = broker_session_live(srv->broker, session);
    int rc = db_heartbeat(srv->db, session, r->owner, clock_wall_ms(), live, &revived);
    pthread_mutex_unlock(&srv->life_mu);
    if (rc == DB_NOT_FOUND)
        return http_reply_error(r, 404, "no such provider session");
    if (rc != DB_OK)
        return db_failure(r);
    if (revived)
        log_info("session %.8s… heartbeat revived %d row(s)", session, revived);
    char body[64];
    int len = snprintf(body, sizeof body, "{\"ok\":true,\"revived\":%d}", revived);
    return http_reply_json(r, 200, body, (size_t)len);
}

enum MHD_Result provider_list(struct req *r)
{
    struct llm_row *rows = NULL;
    size_t n = 0;
    if (db_llm_list(r->srv->db, NULL, &rows, &n) != DB_OK)
        return db_failure(r);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, llm_view(&rows[i], r->owner));
    llm_rows_free(rows, n);
    return reply_json_value(r, 200, arr);
}

enum MHD_Result provider_get(struct req *r, const char *name)
{
    struct llm_row row;
    int rc = db_llm_get(r->srv->db, name, &row);
    if (rc == DB_NOT_FOUND)
        return http_reply_error(r, 404, "no Llm named '%s'", name);
    if (rc != DB_OK)
        return db_failure(r);
    json_t *v = llm_view(&row, r->owner);
    llm_row_release(&row);
    return reply_json_value(r, 200, v);
}

/* The OpenAI model object of a row; a pool member names its pool. */
static json_t *model_view(const struct llm_row *row)
{
    json_t *v = json_pack("{s:s,s:s,s:I,s:s,s:s,s:s}", "id", row->name, "object", "model",
                          "created", (json_int_t)(row->created_at / 1000), "owned_by", row->owner,
                          "status", row->status, "kind", row->kind);
    if (v && row->pool_name)
        json_object_set_new(v, "pool", json_string(row->pool_name));
    return v;
}

/* The model object of a pool from its members' rows (any order): NULL when
 * none is live. Its status is the best of theirs, owned_by their owner
 * (or "mcpd" when they have several), "members" their names. */
static json_t *pool_model_view(const char *pool, struct llm_row *const *rows, size_t n)
{
    const char *owner = NULL, *status = NULL;
    int64_t created = 0;
    json_t *names = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct llm_row *row = rows[i];
        if (strcmp(row->status, MCP_STATUS_INACTIVE) == 0)
            continue;
        if (!status || strcmp(row->status, MCP_STATUS_ACTIVE) == 0)
            status = row->status;
        owner = !owner || strcmp(owner, row->owner) == 0 ? row->owner : "mcpd";
        if (!created || row->created_at < created)
            created = row->created_at;
        json_array_append_new(names, json_string(row->name));
    }
    if (!status) {
        json_decref(names);
        return NULL;
    }
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:o}", "id", pool, "object", "model", "created",
                     (json_int_t)(created / 1000), "owned_by", owner, "status", status, "kind",
                     "pool", "members", names);
}

enum MHD_Result provider_model(struct req *r, const char *id)
{
    struct llm_row row;
    int rc = db_llm_get(r->srv->db, id, &row);
    bool in_pool = rc == DB_OK && row.pool_name && strcmp(row.pool_name, id) == 0;
    if (rc == DB_NOT_FOUND || in_pool) {
        /* A pool's name: its model object, as /v1/models lists it. */
        if (in_pool)
            llm_row_release(&row);
        struct llm_row *rows = NULL;
        size_t n = 0;
        if (db_llm_list_pool(r->srv->db, id, &rows, &n) != DB_OK)
            return db_failure(r);
        struct llm_row **refs = calloc(n ? n : 1, sizeof *refs);
        for (size_t i = 0; refs && i < n; i++)
            refs[i] = &rows[i];
        json_t *v = refs ? pool_model_view(id, refs, n) : NULL;
        free(refs);
        llm_rows_free(rows, n);
        if (!v)
            return http_reply_error(r, 404, "The model '%s' does not exist%s", id,
                                    n ? " (its publishers are offline)" : "");
        return reply_json_value(r, 200, v);
    }
    if (rc != DB_OK)
        return db_failure(r);
    enum MHD_Result ret;
    if (strcmp(row.status, MCP_STATUS_INACTIVE) == 0)
        ret = http_reply_error(r, 404, "The model '%s' does not exist (its publisher is offline)",
                               id);
    else
        ret = reply_json_value(r, 200, model_view(&row));
    llm_row_release(&row);
    return ret;
}

static int cmp_row_pool(const void *a, const void *b)
{
    const struct llm_row *x = *(struct llm_row *const *)a, *y = *(struct llm_row *const *)b;
    int c = strcmp(x->pool_name, y->pool_name);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_model_id(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "id"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "id"));
    return strcmp(x ? x : "", y ? y : "");
}

enum MHD_Result provider_models(struct req *r)
{
    struct llm_row *rows = NULL;
    size_t n = 0;
    if (db_llm_list(r->srv->db, NULL, &rows, &n) != DB_OK)
        return db_failure(r);
    /* Every live row, and each pool once: a member named like its pool
     * gives way to the pool's object. */
    json_t **models = calloc(2 * n + 1, sizeof *models);
    struct llm_row **pooled = calloc(n + 1, sizeof *pooled);
    size_t nm = 0, np = 0;
    for (size_t i = 0; models && pooled && i < n; i++) {
        if (rows[i].pool_name)
            pooled[np++] = &rows[i];
        bool pool_itself = rows[i].pool_name && strcmp(rows[i].pool_name, rows[i].name) == 0;
        if (strcmp(rows[i].status, MCP_STATUS_INACTIVE) != 0 && !pool_itself)
            models[nm++] = model_view(&rows[i]);
    }
    if (pooled)
        qsort(pooled, np, sizeof *pooled, cmp_row_pool);
    for (size_t i = 0, j; models && pooled && i < np; i = j) {
        for (j = i + 1; j < np && strcmp(pooled[j]->pool_name, pooled[i]->pool_name) == 0; j++)
            ;
        json_t *v = pool_model_view(pooled[i]->pool_name, pooled + i, j - i);
        if (v)
            models[nm++] = v;
    }
    json_t *data = json_array();
    if (models) {
        qsort(models, nm, sizeof *models, cmp_model_id);
        for (size_t i = 0; i < nm; i++)
            json_array_append_new(data, models[i]);
    }
    free(models);
    free(pooled);
    llm_rows_free(rows, n);
    return reply_json_value(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

enum MHD_Result provider_members(struct req *r, const char *name)
{
    struct llm_row row;
    int rc = db_llm_get(r->srv->db, name, &row);
    if (rc != DB_OK && rc != DB_NOT_FOUND)
        return db_failure(r);
    char pool[MCP_NAME_BUF];
    snprintf(pool, sizeof pool, "%s", rc == DB_OK && row.pool_name ? row.pool_name : name);
    bool lone = rc == DB_OK && !row.pool_name;
    if (rc == DB_OK)
        llm_row_release(&row);
    if (lone)
        return http_reply_error(r, 404, "Llm '%s' is not in a pool", name);
    struct llm_row *rows = NULL;
    size_t n = 0;
    if (db_llm_list_pool(r->srv->db, pool, &rows, &n) != DB_OK)
        return db_failure(r);
    if (n == 0)
        return http_reply_error(r, 404, "no Llm or pool named '%s'", name);
    json_t *members = json_array();
    int active = 0;
    for (size_t i = 0; i < n; i++) {
        active += strcmp(rows[i].status, MCP_STATUS_ACTIVE) == 0;
        json_array_append_new(members, llm_view(&rows[i], r->owner));
    }
    llm_rows_free(rows, n);
    return reply_json_value(r, 200,
                            json_pack("{s:s,s:I,s:i,s:o}", "pool", pool, "size", (json_int_t)n,
                                      "activeCount", active, "members", members));
}
