#include "wire.h"

#include "buf.h"
#include "jsonscan.h"
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int64_t seconds_ms(json_t *j, int64_t dflt)
{
    if (!json_is_number(j))
        return dflt;
    double s = json_number_value(j);
    if (!(s > 0) || s > 86400.0 * 365)
        return dflt;
    int64_t ms = (int64_t)(s * 1000.0 + 0.5);
    return ms > 0 ? ms : 1;
}

static int64_t millis(json_t *j, int64_t dflt)
{
    if (!json_is_integer(j) || json_integer_value(j) <= 0)
        return dflt;
    return (int64_t)json_integer_value(j);
}

int wire_parse_hello(const char *data, size_t len, struct hello_frame *out)
{
    memset(out, 0, sizeof *out);
    out->heartbeat_ms = MCP_DEFAULT_HEARTBEAT_INTERVAL_MS;
    out->ping_ms = MCP_DEFAULT_PING_INTERVAL_MS;
    json_t *root = json_loadb(data, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    const char *s = json_string_value(json_object_get(root, "providerSessionId"));
    if (s && session_id_valid(s))
        snprintf(out->session, sizeof out->session, "%s", s);
    out->heartbeat_ms = seconds_ms(json_object_get(root, "heartbeatIntervalSeconds"),
                                   MCP_DEFAULT_HEARTBEAT_INTERVAL_MS);
    out->ping_ms =
        seconds_ms(json_object_get(root, "pingIntervalSeconds"), MCP_DEFAULT_PING_INTERVAL_MS);
    /* mcpd also sends the exact values in ms (seconds are rounded up). */
    out->heartbeat_ms = millis(json_object_get(root, "heartbeatIntervalMs"), out->heartbeat_ms);
    out->ping_ms = millis(json_object_get(root, "pingIntervalMs"), out->ping_ms);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(root, "features"), i, f)
    {
        const char *name = json_string_value(f);
        if (name && strcmp(name, MCP_FEATURE_RESULT_STREAM) == 0)
            out->result_stream = true;
    }
    json_decref(root);
    return 0;
}

bool wire_task_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > TASK_ID_MAX)
        return false;
    /* "." and ".." would be dot segments in the result URL's path. */
    if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    for (const char *c = id; *c; c++)
        if (!strchr("._-", *c) && !(*c >= '0' && *c <= '9') && !(*c >= 'a' && *c <= 'z') &&
            !(*c >= 'A' && *c <= 'Z'))
            return false;
    return true;
}

/* The general path: any valid JSON, escapes included. */
static int parse_task_tree(const char *data, size_t len, struct task_frame *out, char *err,
                           size_t errlen)
{
    json_t *root = json_loadb(data, len, 0, NULL);
    int rc = -1;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "task frame is not a JSON object");
        goto out;
    }
    const char *id = json_string_value(json_object_get(root, "taskId"));
    if (!id || !wire_task_id_valid(id)) {
        snprintf(err, errlen, "task frame without a valid taskId");
        goto out;
    }
    snprintf(out->task_id, sizeof out->task_id, "%s", id);
    const char *kind = json_string_value(json_object_get(root, "kind"));
    if (kind && strcmp(kind, MCP_TASK_INFER) == 0) {
        out->kind = TASK_INFER;
    } else if (kind && strcmp(kind, MCP_TASK_WAKE) == 0) {
        out->kind = TASK_WAKE;
    } else {
        snprintf(err, errlen, "unknown task kind '%s'", kind ? kind : "(none)");
        goto out;
    }
    const char *llm = json_string_value(json_object_get(root, "llmName"));
    if (!llm || !mcp_name_valid(llm)) {
        snprintf(err, errlen, "task frame without a valid llmName");
        goto out;
    }
    snprintf(out->llm, sizeof out->llm, "%s", llm);
    out->streaming = json_is_true(json_object_get(root, "streaming"));
    if (out->kind == TASK_INFER) {
        json_t *path = json_object_get(root, "path");
        if (path && !json_is_null(path)) {
            const char *ps = json_string_value(path);
            if (!ps || strlen(ps) != json_string_length(path) || !wire_task_path_valid(ps)) {
                snprintf(err, errlen, "task frame with an invalid path");
                goto out;
            }
            snprintf(out->path, sizeof out->path, "%s", ps);
        }
        json_t *body = json_object_get(root, "body");
        if (!json_is_object(body)) {
            snprintf(err, errlen, "infer task without a request body");
            goto out;
        }
        out->body_owned = json_dumps(body, JSON_COMPACT);
        if (!out->body_owned) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        out->body = out->body_owned;
        out->body_len = strlen(out->body_owned);
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static bool has_escape(const char *s, size_t n)
{
    return memchr(s, '\\', n) != NULL;
}

/* True when the scan recorded every member and no key has an escape, so
 * members can be found and compared by their raw bytes. */
static bool scan_is_plain(const struct jsonscan *js)
{
    if (js->n >= JSONSCAN_MAX_FIELDS)
        return false;
    for (size_t i = 0; i < js->n; i++)
        if (has_escape(js->f[i].key, js->f[i].key_len))
            return false;
    return true;
}

/* The raw text of a string member without its quotes, or NULL when the
 * member is missing or not a string. *escaped tells whether it has escapes. */
static const char *raw_string(const struct jsonscan *js, const char *key, size_t *len,
                              bool *escaped)
{
    const struct json_field *f = jsonscan_find(js, key);
    if (!f || f->kind != JSON_K_STRING)
        return NULL;
    *len = f->val_len - 2;
    if (has_escape(f->val + 1, *len))
        *escaped = true;
    return f->val + 1;
}

/* Copies a raw string into out (size outsz) when it fits. */
static bool copy_raw(char *out, size_t outsz, const char *s, size_t len)
{
    if (!s || len >= outsz)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

int wire_parse_task(const char *data, size_t len, struct task_frame *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    memcpy(out->path, TASK_PATH_DEFAULT, sizeof TASK_PATH_DEFAULT);
    struct jsonscan js;
    if (jsonscan_parse(&js, data, len) < 0) {
        snprintf(err, errlen, "task frame is not a JSON object");
        return -1;
    }
    if (!scan_is_plain(&js))
        return parse_task_tree(data, len, out, err, errlen);
    size_t id_len = 0, kind_len = 0, llm_len = 0;
    bool escaped = false;
    const char *id = raw_string(&js, "taskId", &id_len, &escaped);
    const char *kind = raw_string(&js, "kind", &kind_len, &escaped);
    const char *llm = raw_string(&js, "llmName", &llm_len, &escaped);
    size_t path_len = 0;
    const char *path = raw_string(&js, "path", &path_len, &escaped);
    if (escaped)
        return parse_task_tree(data, len, out, err, errlen);

    char tmp[TASK_ID_MAX + 1];
    if (!copy_raw(tmp, sizeof tmp, id, id_len) || !wire_task_id_valid(tmp)) {
        snprintf(err, errlen, "task frame without a valid taskId");
        return -1;
    }
    memcpy(out->task_id, tmp, id_len + 1);
    if (kind && kind_len == strlen(MCP_TASK_INFER) && memcmp(kind, MCP_TASK_INFER, kind_len) == 0) {
        out->kind = TASK_INFER;
    } else if (kind && kind_len == strlen(MCP_TASK_WAKE) &&
               memcmp(kind, MCP_TASK_WAKE, kind_len) == 0) {
        out->kind = TASK_WAKE;
    } else {
        /* %.*s stops at a NUL; the raw text has none (it has no escapes). */
        snprintf(err, errlen, "unknown task kind '%.*s'", kind ? (int)kind_len : 6,
                 kind ? kind : "(none)");
        return -1;
    }
    char name[MCP_NAME_MAX + 1];
    if (!copy_raw(name, sizeof name, llm, llm_len) || !mcp_name_valid(name)) {
        snprintf(err, errlen, "task frame without a valid llmName");
        return -1;
    }
    memcpy(out->llm, name, llm_len + 1);
    const struct json_field *st = jsonscan_find(&js, "streaming");
    out->streaming = st && st->kind == JSON_K_TRUE;
    if (out->kind == TASK_INFER) {
        const struct json_field *pf = jsonscan_find(&js, "path");
        if (pf && pf->kind != JSON_K_NULL) {
            char tmp_path[TASK_PATH_MAX + 1];
            if (!copy_raw(tmp_path, sizeof tmp_path, path, path_len) ||
                !wire_task_path_valid(tmp_path)) {
                snprintf(err, errlen, "task frame with an invalid path");
                return -1;
            }
            memcpy(out->path, tmp_path, path_len + 1);
        }
        const struct json_field *body = jsonscan_find(&js, "body");
        if (!body || body->kind != JSON_K_OBJECT) {
            snprintf(err, errlen, "infer task without a request body");
            return -1;
        }
        out->body = body->val;
        out->body_len = body->val_len;
    }
    return 0;
}

void wire_task_release(struct task_frame *t)
{
    free(t->body_owned);
    t->body_owned = NULL;
    t->body = NULL;
    t->body_len = 0;
}

int wire_parse_cancel(const char *data, size_t len, char *task_id)
{
    task_id[0] = '\0';
    json_t *root = json_loadb(data, len, 0, NULL);
    const char *id = json_string_value(json_object_get(root, "taskId"));
    int rc = -1;
    if (id && wire_task_id_valid(id)) {
        snprintf(task_id, TASK_ID_MAX + 1, "%s", id);
        rc = 0;
    }
    json_decref(root);
    return rc;
}

bool wire_task_path_valid(const char *path)
{
    size_t n = strlen(path);
    if (n < 2 || n > TASK_PATH_MAX || path[0] != '/')
        return false;
    const char *query = strchr(path, '?');
    size_t plen = query ? (size_t)(query - path) : n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("-._~!$&'()*+,;=:@/%", c) || (c == '?' && i >= plen);
        if (!ok || c == 0)
            return false;
    }
    /* Segments of the path part: none empty, ".", or "..". */
    size_t seg = 1;
    for (size_t i = 1; i <= plen; i++) {
        if (i == plen || path[i] == '/') {
            size_t sl = i - seg;
            if (sl == 0 || (sl == 1 && path[seg] == '.') ||
                (sl == 2 && path[seg] == '.' && path[seg + 1] == '.'))
                return false;
            seg = i + 1;
        }
    }
    return true;
}

static int set_opt_string(json_t *o, const char *key, const char *val)
{
    if (!val)
        return 0;
    return json_object_set_new(o, key, json_string(val));
}

char *wire_register_body(const char *session, const struct provider_cfg *const *providers,
                         const char *const *statuses, size_t n)
{
    char *out = NULL;
    json_t *root = json_object();
    json_t *arr = json_array();
    if (!root || !arr)
        goto out;
    if (session && json_object_set_new(root, "providerSessionId", json_string(session)) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const struct provider_cfg *p = providers[i];
        json_t *o = json_object();
        if (!o || json_array_append_new(arr, o) < 0)
            goto out;
        if (set_opt_string(o, "name", p->name) < 0 || set_opt_string(o, "type", p->type) < 0 ||
            set_opt_string(o, "model", p->model) < 0 || set_opt_string(o, "tier", p->tier) < 0 ||
            set_opt_string(o, "description", p->description) < 0 ||
            set_opt_string(o, "poolName", p->pool_name) < 0 ||
            set_opt_string(o, "initialStatus", statuses[i]) < 0)
            goto out;
        if (p->extra_config) {
            json_t *x = json_loads(p->extra_config, 0, NULL);
            if (!x || json_object_set_new(o, "extraConfig", x) < 0)
                goto out;
        }
    }
    if (json_object_set(root, "providers", arr) < 0)
        goto out;
    json_t *features = json_loads(WIRE_FEATURES, 0, NULL);
    if (!features || json_object_set_new(root, "features", features) < 0)
        goto out;
    out = json_dumps(root, JSON_COMPACT);
out:
    json_decref(arr);
    json_decref(root);
    return out;
}

char *wire_result_status(long status, const char *body, size_t len)
{
    enum json_kind kind;
    if (jsonscan_validate_value(body, len, &kind) < 0)
        return NULL;
    struct buf b;
    buf_init(&b, len + 64);
    if (buf_printf(&b, "{\"status\":%ld,\"body\":", status) < 0 || buf_append(&b, body, len) < 0 ||
        buf_append(&b, "}", 1) < 0) {
        buf_release(&b);
        return NULL;
    }
    return buf_steal(&b);
}

static char *json_quote(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (!j)
        return NULL;
    char *out = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return out;
}

bool wire_header_passes(const char *name)
{
    return strcasecmp(name, "retry-after") == 0 || strncasecmp(name, "x-ratelimit-", 12) == 0 ||
           strcasecmp(name, "x-request-id") == 0 || strcasecmp(name, "content-type") == 0;
}

/* bytes as a JSON string; invalid UTF-8 sequences become U+FFFD. */
static char *quote_bytes(const char *s, size_t len)
{
    char *out = json_quote(s, len);
    if (out || len == 0)
        return out;
    /* jansson refuses invalid UTF-8: replace the bad bytes. */
    struct buf b;
    buf_init(&b, len * 3 + 1);
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = k > 0 && i + k <= len;
        for (size_t j = 1; ok && j < k; j++)
            ok = ((unsigned char)s[i + j] >> 6) == 2;
        if (ok && k > 1) {
            json_t *probe = json_stringn(s + i, k);
            ok = probe != NULL;
            json_decref(probe);
        }
        if (ok) {
            if (buf_append(&b, s + i, k) < 0)
                goto fail;
            i += k;
        } else {
            if (buf_append(&b, "\xEF\xBF\xBD", 3) < 0)
                goto fail;
            i++;
        }
    }
    out = json_quote(b.data ? b.data : "", b.len);
fail:
    buf_release(&b);
    return out;
}

char *wire_result_response(long status, const char *const *names, const char *const *values,
                           size_t n, const char *body, size_t len)
{
    char *headers = NULL, *quoted = NULL, *out = NULL;
    if (n > 0) {
        json_t *h = json_object();
        if (!h)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            char lower[128];
            size_t k = 0;
            for (; names[i][k] && k + 1 < sizeof lower; k++)
                lower[k] = (char)((names[i][k] >= 'A' && names[i][k] <= 'Z') ? names[i][k] + 32
                                                                             : names[i][k]);
            lower[k] = '\0';
            json_t *v = json_string(values[i]);
            if (!v)
                v = json_string("");
            if (json_object_set_new(h, lower, v) < 0) {
                json_decref(h);
                return NULL;
            }
        }
        headers = json_dumps(h, JSON_COMPACT);
        json_decref(h);
        if (!headers)
            return NULL;
    }
    enum json_kind kind;
    const char *val = body;
    size_t vlen = len;
    if (len == 0 || jsonscan_validate_value(body, len, &kind) < 0) {
        quoted = quote_bytes(body, len);
        if (!quoted)
            goto out;
        val = quoted;
        vlen = strlen(quoted);
    }
    struct buf b;
    buf_init(&b, vlen + (headers ? strlen(headers) : 0) + 64);
    if (buf_printf(&b, "{\"status\":%ld,", status) < 0 ||
        (headers && (buf_append_str(&b, "\"headers\":") < 0 || buf_append_str(&b, headers) < 0 ||
                     buf_append(&b, ",", 1) < 0)) ||
        buf_append_str(&b, "\"body\":") < 0 || buf_append(&b, val, vlen) < 0 ||
        buf_append(&b, "}", 1) < 0) {
        buf_release(&b);
        goto out;
    }
    out = buf_steal(&b);
out:
    free(headers);
    free(quoted);
    return out;
}

char *wire_sse_error(const char *msg, const char *code)
{
    json_t *j = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type", "server_error",
                          "code", code);
    char *e = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!e)
        return NULL;
    size_t n = strlen(e) + 16;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "data: %s\n\n", e);
    free(e);
    return out;
}

char *wire_result_chunk(const char *data, size_t len)
{
    enum json_kind kind;
    char *quoted = NULL;
    const char *val = data;
    size_t vlen = len;
    if (jsonscan_validate_value(data, len, &kind) < 0 || kind != JSON_K_OBJECT) {
        quoted = json_quote(data, len);
        if (!quoted)
            return NULL;
        val = quoted;
        vlen = strlen(quoted);
    }
    struct buf b;
    buf_init(&b, vlen + 64);
    char *out = NULL;
    if (buf_append_str(&b, "{\"chunk\":{\"data\":") == 0 && buf_append(&b, val, vlen) == 0 &&
        buf_append_str(&b, "}}") == 0)
        out = buf_steal(&b);
    buf_release(&b);
    free(quoted);
    return out;
}

char *wire_result_done(void)
{
    return strdup("{\"chunk\":{\"done\":true}}");
}

char *wire_result_error(const char *msg)
{
    char *q = json_quote(msg, strlen(msg));
    if (!q)
        return NULL;
    size_t n = strlen(q) + 16;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "{\"error\":%s}", q);
    free(q);
    return out;
}

char *wire_result_wake_ok(int64_t ms)
{
    char tmp[96];
    snprintf(tmp, sizeof tmp, "{\"status\":200,\"body\":{\"ok\":true,\"ms\":%lld}}", (long long)ms);
    return strdup(tmp);
}

/* The general path for bodies whose keys have escapes or that have more
 * members than jsonscan records: through a jansson tree. */
static char *upstream_tree(const char *body, size_t len, const char *model, bool streaming,
                           bool touch_stream)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    char *out = NULL;
    if (!json_is_object(root))
        goto out;
    if (json_object_set_new(root, "model", json_string(model)) < 0)
        goto out;
    if (!touch_stream) {
        /* nothing else changes */
    } else if (streaming) {
        if (json_object_set_new(root, "stream", json_true()) < 0)
            goto out;
    } else {
        if (json_object_get(root, "stream") &&
            json_object_set_new(root, "stream", json_false()) < 0)
            goto out;
        json_object_del(root, "stream_options");
    }
    out = json_dumps(root, JSON_COMPACT);
out:
    json_decref(root);
    return out;
}

/* Writes s as a JSON string at p (at most 6 * strlen(s) + 2 bytes);
 * returns the end. s is UTF-8 (it came from a parsed config). */
static char *put_quoted(char *p, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            *p++ = '\\';
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static bool key_is(const struct json_field *f, const char *key, size_t n)
{
    return f->key_len == n && memcmp(f->key, key, n) == 0;
}

/* Walking the top-level members of text already known to be one valid
 * JSON object (so no checks beyond staying inside the text). */
struct members {
    const char *p, *end;
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at an opening quote; returns just past the closing one. */
static const char *skip_string(const char *p, const char *end)
{
    p++;
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            return end;
        /* Escaped when preceded by an odd number of backslashes (none of
         * which can lie before p: p follows a quote). */
        size_t bs = 0;
        for (const char *b = q; b > p && b[-1] == '\\'; b--)
            bs++;
        if (bs % 2 == 0)
            return q + 1;
        p = q + 1;
    }
}

static const char *skip_value(const char *p, const char *end)
{
    if (p < end && *p == '"')
        return skip_string(p, end);
    if (p < end && (*p == '{' || *p == '[')) {
        int depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p;
}

static void members_init(struct members *m, const char *text, size_t len)
{
    m->end = text + len;
    m->p = skip_ws(text, m->end);
    if (m->p < m->end)
        m->p++; /* { */
}

static bool members_next(struct members *m, struct json_field *f)
{
    const char *end = m->end;
    const char *p = skip_ws(m->p, end);
    if (p < end && *p == ',')
        p = skip_ws(p + 1, end);
    if (p >= end || *p != '"')
        return false;
    const char *k = skip_string(p, end);
    f->key = p + 1;
    f->key_len = (size_t)(k - 1 - f->key);
    p = skip_ws(k, end);
    if (p < end)
        p++; /* : */
    p = skip_ws(p, end);
    f->val = p;
    p = skip_value(p, end);
    f->val_len = (size_t)(p - f->val);
    m->p = p;
    return true;
}

#define SPLICE_MAX_MEMBERS 64

/* body is a valid JSON object. */
static char *splice_upstream(const char *body, size_t len, const char *model, bool streaming,
                             bool touch_stream, size_t *out_len)
{
    struct members m;
    struct json_field f[SPLICE_MAX_MEMBERS];
    size_t n = 0;
    bool has_stream = false, general = false;
    members_init(&m, body, len);
    while (members_next(&m, &f[n])) {
        /* "mod\u0065l" is "model" too: let jansson decode the keys. */
        if (has_escape(f[n].key, f[n].key_len) || n + 1 == SPLICE_MAX_MEMBERS) {
            general = true;
            break;
        }
        if (key_is(&f[n], "stream", 6))
            has_stream = true;
        n++;
    }
    if (general) {
        char *s = upstream_tree(body, len, model, streaming, touch_stream);
        if (s && out_len)
            *out_len = strlen(s);
        return s;
    }
    /* Every member is written as ,"key":value, never longer than it was in
     * body (which also has braces and separators); the rest is bounded. */
    size_t cap = len + 6 * strlen(model) + 64;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    char *p = put(out, "{\"model\":", 9);
    p = put_quoted(p, model);
    if (touch_stream && streaming)
        p = put(p, ",\"stream\":true", 14);
    else if (touch_stream && has_stream)
        p = put(p, ",\"stream\":false", 15);
    for (size_t i = 0; i < n; i++) {
        if (key_is(&f[i], "model", 5) ||
            (touch_stream &&
             (key_is(&f[i], "stream", 6) || (!streaming && key_is(&f[i], "stream_options", 14)))))
            continue;
        p = put(p, ",\"", 2);
        p = put(p, f[i].key, f[i].key_len);
        p = put(p, "\":", 2);
        p = put(p, f[i].val, f[i].val_len);
    }
    *p++ = '}';
    *p = '\0';
    if (out_len)
        *out_len = (size_t)(p - out);
    return out;
}

char *wire_upstream_request(const char *body, size_t len, const char *model, bool streaming,
                            size_t *out_len)
{
    enum json_kind kind;
    if (jsonscan_validate_value(body, len, &kind) < 0 || kind != JSON_K_OBJECT)
        return NULL;
    return splice_upstream(body, len, model, streaming, true, out_len);
}

char *wire_task_upstream(const struct task_frame *t, const char *model, size_t *out_len)
{
    if (t->kind != TASK_INFER || !t->body)
        return NULL;
    bool chat = t->path[0] == '\0' || strcmp(t->path, TASK_PATH_DEFAULT) == 0;
    return splice_upstream(t->body, t->body_len, model, t->streaming, chat, out_len);
}

void wire_backend_error(const char *body, size_t len, char *out, size_t outlen)
{
    out[0] = '\0';
    json_t *root = json_loadb(body, len, 0, NULL);
    const char *msg = NULL;
    if (json_is_object(root)) {
        json_t *e = json_object_get(root, "error");
        if (json_is_object(e))
            msg = json_string_value(json_object_get(e, "message"));
        else if (json_is_string(e))
            msg = json_string_value(e);
        if (!msg)
            msg = json_string_value(json_object_get(root, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(root, "detail"));
    }
    if (msg) {
        snprintf(out, outlen, "%s", msg);
    } else {
        size_t n = len < outlen - 1 ? len : outlen - 1;
        if (n > 200)
            n = 200;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            out[k++] = (body[i] == '\n' || body[i] == '\r' || body[i] == '\t') ? ' ' : body[i];
        out[k] = '\0';
    }
    json_decref(root);
}
