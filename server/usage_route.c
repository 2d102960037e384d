/*
 * usage_route.c - GET /api/v1/usage: the usage counts per UTC day, owner
 * and Llm, filtered by since, until, llm and owner. A token that is not an
 * admin's reads its own owner's rows only.
 */
#include "clock.h"
#include "log.h"
#include "protocol.h"
#include "routes.h"
#include "usage.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct usage_query {
    char since[CLOCK_DAY_LEN];
    char until[CLOCK_DAY_LEN];
    const char *llm; /* libmicrohttpd's, valid for the request */
    const char *owner;
    bool has_since, has_until;
    char err[256];
};

/* A day as "YYYY-MM-DD", from that form (a date that exists) or an RFC
 * 3339 time (the UTC day it falls on). 0 or -1. */
static int parse_day(const char *s, char day[CLOCK_DAY_LEN])
{
    int64_t ms;
    if (strlen(s) == CLOCK_DAY_LEN - 1) {
        char midnight[32];
        snprintf(midnight, sizeof midnight, "%sT00:00:00Z", s);
        if (clock_parse_rfc3339(midnight, &ms) < 0)
            return -1;
        clock_format_day(ms, day);
        return strcmp(day, s) == 0 ? 0 : -1; /* 2026-02-30 is no day */
    }
    if (clock_parse_rfc3339(s, &ms) < 0)
        return -1;
    clock_format_day(ms, day);
    return 0;
}

static enum MHD_Result take_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    struct usage_query *q = cls;
    bool day = strcmp(key, "since") == 0 || strcmp(key, "until") == 0;
    if (!day && strcmp(key, "llm") != 0 && strcmp(key, "owner") != 0) {
        snprintf(q->err, sizeof q->err,
                 "unknown query parameter '%.64s' (known: since, until, llm, owner)", key);
        return MHD_NO;
    }
    bool *seen = key[0] == 's' ? &q->has_since : key[0] == 'u' ? &q->has_until : NULL;
    const char **str = key[0] == 'l' ? &q->llm : key[0] == 'o' ? &q->owner : NULL;
    if ((seen && *seen) || (str && *str)) {
        snprintf(q->err, sizeof q->err, "query parameter '%s' given twice", key);
        return MHD_NO;
    }
    if (!value || !*value) {
        snprintf(q->err, sizeof q->err, "query parameter '%s' needs a value", key);
        return MHD_NO;
    }
    if (day) {
        if (parse_day(value, key[0] == 's' ? q->since : q->until) < 0) {
            snprintf(q->err, sizeof q->err,
                     "%s must be a date (YYYY-MM-DD) or an RFC 3339 time, got '%.64s'", key, value);
            return MHD_NO;
        }
        *seen = true;
    } else if (key[0] == 'l' && !mcp_name_valid(value)) {
        snprintf(q->err, sizeof q->err, "llm must be an Llm name, got '%.64s'", value);
        return MHD_NO;
    } else if (key[0] == 'o' && strlen(value) >= DB_OWNER_MAX) {
        snprintf(q->err, sizeof q->err, "owner is longer than %d characters", DB_OWNER_MAX - 1);
        return MHD_NO;
    } else {
        *str = value;
    }
    return MHD_YES;
}

struct usage_out {
    json_t *rows;
    int64_t requests, errors, prompt, completion;
};

static void add_row(void *ud, const struct db_usage *row)
{
    struct usage_out *o = ud;
    json_array_append_new(
        o->rows, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I}", "day", row->day, "owner", row->owner,
                           "llm", row->llm, "requests", (json_int_t)row->requests, "errors",
                           (json_int_t)row->errors, "promptTokens", (json_int_t)row->prompt_tokens,
                           "completionTokens", (json_int_t)row->completion_tokens));
    o->requests += row->requests;
    o->errors += row->errors;
    o->prompt += row->prompt_tokens;
    o->completion += row->completion_tokens;
}

enum MHD_Result usage_route(struct req *r)
{
    struct server *srv = r->srv;
    struct usage_query q = {0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, take_param, &q);
    if (q.err[0])
        return http_reply_error(r, 400, "%s", q.err);
    if (q.has_since && q.has_until && strcmp(q.since, q.until) > 0)
        return http_reply_error(r, 400, "until (%s) is before since (%s)", q.until, q.since);
    bool admin = false;
    int rc = auth_admin(srv->auth, r->token_hash, &admin);
    if (rc == DB_NOT_FOUND)
        return http_reply_error(r, 401, "token not recognised");
    if (rc != DB_OK)
        return http_reply_error(r, 500, "database error");
    if (!admin && q.owner && strcmp(q.owner, r->owner) != 0)
        return http_reply_error(r, 403, "only an admin token may read the usage of another owner");
    /* What is counted but not yet written is written first. */
    if (usage_flush(srv->usage) != DB_OK)
        log_error("usage: cannot write the counts: %s", db_errmsg(srv->db));
    struct db_usage_filter f = {
        .since = q.has_since ? q.since : NULL,
        .until = q.has_until ? q.until : NULL,
        .owner = admin ? q.owner : r->owner,
        .llm = q.llm,
    };
    struct usage_out o = {.rows = json_array()};
    if (!o.rows)
        return http_reply_error(r, 500, "out of memory");
    if (db_usage_list(srv->db, &f, add_row, &o) != DB_OK) {
        json_decref(o.rows);
        log_error("usage: database error: %s", db_errmsg(srv->db));
        return http_reply_error(r, 500, "database error");
    }
    json_t *v = json_pack("{s:o,s:{s:I,s:I,s:I,s:I}}", "usage", o.rows, "totals", "requests",
                          (json_int_t)o.requests, "errors", (json_int_t)o.errors, "promptTokens",
                          (json_int_t)o.prompt, "completionTokens", (json_int_t)o.completion);
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    if (!text)
        return http_reply_error(r, 500, "out of memory");
    enum MHD_Result ret = http_reply_json(r, 200, text, strlen(text));
    free(text);
    return ret;
}
