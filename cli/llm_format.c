#include "llm_format.h"

#include "table.h"
#include "clock.h"
#include "timefmt.h"
#include "yaml_out.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int llm_output_parse(const char *s, enum llm_output *out)
{
    if (strcmp(s, "table") == 0)
        *out = LLM_OUTPUT_TABLE;
    else if (strcmp(s, "wide") == 0)
        *out = LLM_OUTPUT_WIDE;
    else if (strcmp(s, "json") == 0)
        *out = LLM_OUTPUT_JSON;
    else if (strcmp(s, "yaml") == 0)
        *out = LLM_OUTPUT_YAML;
    else
        return -1;
    return 0;
}

/* A non-empty string member, or NULL. */
static const char *str_field(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && *s ? s : NULL;
}

/* Adds llm's row; a table of the default width takes the first eight cells. */
static int add_llm_row(struct table *t, const json_t *llm, int64_t now_ms)
{
    char age[TIMEFMT_AGE_MAX], heartbeat[TIMEFMT_AGE_MAX];
    timefmt_age(str_field(llm, "createdAt"), now_ms, age, sizeof age);
    timefmt_age(str_field(llm, "lastHeartbeatAt"), now_ms, heartbeat, sizeof heartbeat);
    const char *cells[] = {
        str_field(llm, "name"),     str_field(llm, "kind"),
        str_field(llm, "status"),   str_field(llm, "type"),
        str_field(llm, "model"),    str_field(llm, "tier"),
        str_field(llm, "poolName"), age,
        str_field(llm, "owner"),    heartbeat,
    };
    return table_add_row(t, cells);
}

static int write_table(const json_t *llms, bool wide, int64_t now_ms, FILE *out)
{
    static const char *const cols[] = {"NAME", "KIND", "STATUS", "TYPE",  "MODEL",
                                       "TIER", "POOL", "AGE",    "OWNER", "LAST-HEARTBEAT"};
    size_t ncols = wide ? sizeof cols / sizeof cols[0] : 8; /* up to AGE */
    struct table *t = table_new(ncols, cols);
    int rc = -1;
    if (!t)
        return -1;
    if (json_is_array(llms)) {
        size_t i;
        json_t *llm;
        json_array_foreach(llms, i, llm)
        {
            if (add_llm_row(t, llm, now_ms) < 0)
                goto out;
        }
    } else if (add_llm_row(t, llms, now_ms) < 0) {
        goto out;
    }
    rc = table_write(t, out);
out:
    table_free(t);
    return rc;
}

int llm_format_table(const json_t *llms, int64_t now_ms, FILE *out)
{
    return write_table(llms, false, now_ms, out);
}

int llm_format_wide(const json_t *llms, int64_t now_ms, FILE *out)
{
    return write_table(llms, true, now_ms, out);
}

int llm_format_write(enum llm_output fmt, const json_t *value, int64_t now_ms, FILE *out)
{
    switch (fmt) {
    case LLM_OUTPUT_JSON:
        if (json_dumpf(value, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
            return -1;
        fputc('\n', out);
        return ferror(out) ? -1 : 0;
    case LLM_OUTPUT_YAML:
        return yaml_out_write(value, out);
    case LLM_OUTPUT_WIDE:
        return llm_format_wide(value, now_ms, out);
    case LLM_OUTPUT_TABLE:
    default:
        return llm_format_table(value, now_ms, out);
    }
}

/* ---- describe ---- */

enum field_kind { F_TEXT, F_TIME, F_JSON };

struct field {
    const char *key;
    const char *label;
    enum field_kind kind;
    bool optional; /* left out entirely when absent */
};

static const struct field describe_fields[] = {
    {"name", "Name", F_TEXT, false},
    {"id", "ID", F_TEXT, false},
    {"kind", "Kind", F_TEXT, false},
    {"status", "Status", F_TEXT, false},
    {"type", "Type", F_TEXT, false},
    {"model", "Model", F_TEXT, false},
    {"tier", "Tier", F_TEXT, false},
    {"poolName", "Pool", F_TEXT, false},
    {"description", "Description", F_TEXT, false},
    {"owner", "Owner", F_TEXT, false},
    {"providerSessionId", "Session", F_TEXT, true},
    {"lastHeartbeatAt", "Last heartbeat", F_TIME, false},
    {"inactiveSince", "Inactive since", F_TIME, false},
    {"createdAt", "Created", F_TIME, false},
    {"updatedAt", "Updated", F_TIME, false},
    {"extraConfig", "Extra config", F_JSON, false},
};
#define NFIELDS (sizeof describe_fields / sizeof describe_fields[0])
#define LABEL_COL 18 /* values start here: longest label + ':' + padding */

static bool known_key(const char *key)
{
    for (size_t i = 0; i < NFIELDS; i++)
        if (strcmp(describe_fields[i].key, key) == 0)
            return true;
    return false;
}

static void put_label(FILE *out, const char *label)
{
    int n = fprintf(out, "%s:", label);
    for (int i = n < 0 ? 0 : n; i < LABEL_COL; i++)
        fputc(' ', out);
}

/* Writes text, indenting every continuation line to the value column. */
static void put_text(FILE *out, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\r')
            continue;
        fputc(*p, out);
        if (*p == '\n' && p[1])
            for (int i = 0; i < LABEL_COL; i++)
                fputc(' ', out);
    }
    fputc('\n', out);
}

/* A scalar as text: strings bare, anything else as compact JSON. Caller frees. */
static char *value_text(const json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}

static void put_time(FILE *out, const json_t *v, int64_t now_ms)
{
    const char *ts = json_string_value(v);
    int64_t then;
    if (!ts || !*ts) {
        fputs("<none>\n", out);
        return;
    }
    if (clock_parse_rfc3339(ts, &then) < 0) {
        fprintf(out, "%s\n", ts);
        return;
    }
    char age[TIMEFMT_AGE_MAX];
    timefmt_age(ts, now_ms, age, sizeof age);
    fprintf(out, "%s (%s ago)\n", ts, age);
}

/* Writes the label, then an object's members one per line below it. */
static void put_json(FILE *out, const char *label, const json_t *v)
{
    if (!v || json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0)) {
        put_label(out, label);
        fputs("<none>\n", out);
        return;
    }
    if (!json_is_object(v)) {
        char *s = value_text(v);
        put_label(out, label);
        put_text(out, s ? s : "?");
        free(s);
        return;
    }
    fprintf(out, "%s:\n", label);
    const char *key;
    json_t *child;
    json_object_foreach((json_t *)v, key, child)
    {
        char *s = value_text(child);
        fprintf(out, "  %s: ", key);
        put_text(out, s ? s : "?");
        free(s);
    }
}

int llm_format_describe_as(enum llm_output fmt, const json_t *llm, int64_t now_ms, FILE *out)
{
    if (fmt == LLM_OUTPUT_JSON || fmt == LLM_OUTPUT_YAML)
        return llm_format_write(fmt, llm, now_ms, out);
    return llm_format_describe(llm, now_ms, out);
}

int llm_format_describe(const json_t *llm, int64_t now_ms, FILE *out)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &describe_fields[i];
        json_t *v = json_object_get(llm, f->key);
        bool absent = !v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v));
        if (absent && f->optional)
            continue;
        if (f->kind == F_JSON) {
            put_json(out, f->label, v);
            continue;
        }
        put_label(out, f->label);
        if (f->kind == F_TIME) {
            put_time(out, v, now_ms);
        } else if (absent) {
            fputs("<none>\n", out);
        } else {
            char *s = value_text(v);
            put_text(out, s ? s : "?");
            free(s);
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)llm, key, v)
    {
        if (known_key(key))
            continue;
        put_label(out, key);
        if (json_is_null(v)) {
            fputs("<none>\n", out);
            continue;
        }
        char *s = value_text(v);
        put_text(out, s ? s : "?");
        free(s);
    }
    return ferror(out) ? -1 : 0;
}

/* ---- pools ---- */

/* The members of a pool but skip, as a table indented under a label. */
static int write_members(const json_t *members, const char *skip, int64_t now_ms, FILE *out)
{
    static const char *const cols[] = {"NAME", "STATUS", "OWNER", "LAST-HEARTBEAT"};
    struct table *t = table_new(4, cols);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = t ? open_memstream(&text, &len) : NULL;
    int rc = mem ? 0 : -1;
    size_t i;
    json_t *m;
    json_array_foreach((json_t *)members, i, m)
    {
        const char *name = str_field(m, "name");
        if (rc < 0 || (skip && name && strcmp(name, skip) == 0))
            continue;
        char heartbeat[TIMEFMT_AGE_MAX];
        timefmt_age(str_field(m, "lastHeartbeatAt"), now_ms, heartbeat, sizeof heartbeat);
        const char *cells[] = {name, str_field(m, "status"), str_field(m, "owner"), heartbeat};
        rc = table_add_row(t, cells);
    }
    if (rc == 0)
        rc = table_write(t, mem);
    if (mem && fclose(mem) != 0)
        rc = -1;
    for (const char *line = text; rc == 0 && line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
        fprintf(out, "  %.*s", (int)n, line);
        line += n;
    }
    free(text);
    table_free(t);
    return rc < 0 || ferror(out) ? -1 : 0;
}

int llm_format_pool(const json_t *pool, const char *self, int64_t now_ms, FILE *out)
{
    const json_t *members = json_object_get(pool, "members"); /* not an array: none */
    size_t n = 0, active = 0, i;
    json_t *m;
    json_array_foreach((json_t *)members, i, m)
    {
        const char *name = str_field(m, "name");
        if (self && name && strcmp(name, self) == 0)
            continue;
        n++;
        const char *status = str_field(m, "status");
        active += status && strcmp(status, "active") == 0;
    }
    const char *name = str_field(pool, "pool");
    int rc = 0;
    if (self) {
        put_label(out, "Siblings");
        if (n == 0)
            fputs("<none>\n", out);
        else
            fprintf(out, "%zu in pool '%s', %zu active\n", n, name ? name : "?", active);
    } else {
        put_label(out, "Pool");
        fprintf(out, "%s\n", name ? name : "?");
        put_label(out, "Members");
        fprintf(out, "%zu, %zu active\n", n, active);
    }
    if (n > 0)
        rc = write_members(members, self, now_ms, out);
    return rc < 0 || ferror(out) ? -1 : 0;
}
