#include "config.h"

#include "file.h"
#include "jsonloc.h"
#include "protocol.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WAIT_SECONDS_LIMIT 86400.0

/* Validation context: where we are, for messages. */
struct vctx {
    const char *file;
    const char *text;
    size_t len;
    char *err;
    size_t errlen;
    struct config *cfg;
};

static void verr(struct vctx *v, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void verr(struct vctx *v, const char *path, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    jsonloc_error(v->err, v->errlen, "config", v->file, v->text, v->len, path, "%s", reason);
}

/* out = path + "." + key (truncated if it must be: paths are for messages). */
static const char *subpath(char *out, size_t n, const char *path, const char *key)
{
    if (snprintf(out, n, "%s.%s", path, key) < 0)
        out[0] = '\0';
    return out;
}

static int add_warning(struct vctx *v, const char *path)
{
    char msg[600];
    jsonloc_error(msg, sizeof msg, "config", v->file, v->text, v->len, path,
                  "unknown field, ignored");
    char **w = realloc(v->cfg->warnings, (v->cfg->n_warnings + 1) * sizeof *w);
    if (!w)
        return -1;
    v->cfg->warnings = w;
    w[v->cfg->n_warnings] = strdup(msg);
    if (!w[v->cfg->n_warnings])
        return -1;
    v->cfg->n_warnings++;
    return 0;
}

static int warn_unknown(struct vctx *v, json_t *obj, const char *path, const char *const known[])
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        bool found = false;
        for (size_t i = 0; known[i]; i++)
            if (strcmp(key, known[i]) == 0)
                found = true;
        if (found)
            continue;
        char p[256];
        snprintf(p, sizeof p, "%s%s%s", path, path[0] ? "." : "", key);
        if (add_warning(v, p) < 0) {
            snprintf(v->err, v->errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Optional string member: NULL (absent or null) or a new copy in *out. */
static int opt_string(struct vctx *v, json_t *obj, const char *path, const char *key, char **out,
                      bool nonempty)
{
    char p[256];
    snprintf(p, sizeof p, "%s.%s", path, key);
    json_t *j = json_object_get(obj, key);
    *out = NULL;
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_string(j)) {
        verr(v, p, "must be a string");
        return -1;
    }
    if (nonempty && json_string_length(j) == 0) {
        verr(v, p, "must not be empty");
        return -1;
    }
    if (strlen(json_string_value(j)) != json_string_length(j)) {
        verr(v, p, "must not contain NUL characters");
        return -1;
    }
    *out = strdup(json_string_value(j));
    if (!*out) {
        snprintf(v->err, v->errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int req_string(struct vctx *v, json_t *obj, const char *path, const char *key, char **out)
{
    if (opt_string(v, obj, path, key, out, true) < 0)
        return -1;
    if (!*out) {
        verr(v, path, "missing \"%s\" (a non-empty string)", key);
        return -1;
    }
    return 0;
}

static bool is_http_url(const char *u)
{
    return (strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8]);
}

static void strip_slashes(char *u)
{
    size_t n = strlen(u);
    while (n > 0 && u[n - 1] == '/')
        u[--n] = '\0';
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr("!#$%&'*+-.^_`|~", *s) && !(*s >= '0' && *s <= '9') &&
            !(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z'))
            return false;
    return true;
}

static int parse_wake_http(struct vctx *v, json_t *w, const char *path, struct wake_recipe *r)
{
    static const char *const known[] = {"type",           "url", "method", "headers", "body",
                                        "maxWaitSeconds", NULL};
    char p[256];
    if (warn_unknown(v, w, path, known) < 0)
        return -1;
    if (req_string(v, w, path, "url", &r->url) < 0)
        return -1;
    if (!is_http_url(r->url)) {
        subpath(p, sizeof p, path, "url");
        verr(v, p, "must start with http:// or https://");
        return -1;
    }
    if (opt_string(v, w, path, "method", &r->method, true) < 0)
        return -1;
    if (!r->method) {
        r->method = strdup("POST");
        if (!r->method)
            return -1;
    }
    if (!is_token(r->method)) {
        subpath(p, sizeof p, path, "method");
        verr(v, p, "'%s' is not an HTTP method", r->method);
        return -1;
    }
    if (opt_string(v, w, path, "body", &r->body, false) < 0)
        return -1;
    subpath(p, sizeof p, path, "headers");
    json_t *h = json_object_get(w, "headers");
    size_t nh = (h && json_is_object(h)) ? json_object_size(h) : 0;
    if (h && !json_is_null(h) && !json_is_object(h)) {
        verr(v, p, "must be an object of strings");
        return -1;
    }
    r->headers = calloc(nh + 1, sizeof *r->headers);
    if (!r->headers)
        return -1;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(h, key, val)
    {
        char hp[300];
        snprintf(hp, sizeof hp, "%s.%s", p, key);
        if (!json_is_string(val)) {
            verr(v, hp, "must be a string");
            return -1;
        }
        if (!is_token(key)) {
            verr(v, hp, "'%s' is not a valid header name", key);
            return -1;
        }
        if (has_ctl(json_string_value(val))) {
            verr(v, hp, "must not contain control characters");
            return -1;
        }
        size_t n = strlen(key) + json_string_length(val) + 3;
        r->headers[i] = malloc(n);
        if (!r->headers[i])
            return -1;
        snprintf(r->headers[i], n, "%s: %s", key, json_string_value(val));
        i++;
    }
    return 0;
}

static int parse_wake_command(struct vctx *v, json_t *w, const char *path, struct wake_recipe *r)
{
    static const char *const known[] = {"type", "command", "args", "maxWaitSeconds", NULL};
    char p[256];
    if (warn_unknown(v, w, path, known) < 0)
        return -1;
    char *cmd = NULL;
    if (req_string(v, w, path, "command", &cmd) < 0)
        return -1;
    subpath(p, sizeof p, path, "args");
    json_t *a = json_object_get(w, "args");
    if (a && !json_is_null(a) && !json_is_array(a)) {
        free(cmd);
        verr(v, p, "must be an array of strings");
        return -1;
    }
    size_t na = json_is_array(a) ? json_array_size(a) : 0;
    r->argv = calloc(na + 2, sizeof *r->argv);
    if (!r->argv) {
        free(cmd);
        return -1;
    }
    r->argv[0] = cmd;
    r->argc = 1;
    for (size_t i = 0; i < na; i++) {
        json_t *s = json_array_get(a, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
            char ap[300];
            snprintf(ap, sizeof ap, "%s[%zu]", p, i);
            verr(v, ap, "must be a string");
            return -1;
        }
        r->argv[r->argc] = strdup(json_string_value(s));
        if (!r->argv[r->argc])
            return -1;
        r->argc++;
    }
    return 0;
}

static int parse_wake(struct vctx *v, json_t *w, const char *path, struct wake_recipe *r)
{
    char p[256];
    if (!json_is_object(w)) {
        verr(v, path, "must be an object");
        return -1;
    }
    char *type = NULL;
    if (req_string(v, w, path, "type", &type) < 0)
        return -1;
    int rc;
    if (strcmp(type, "http") == 0) {
        r->type = WAKE_HTTP;
        rc = parse_wake_http(v, w, path, r);
    } else if (strcmp(type, "command") == 0) {
        r->type = WAKE_COMMAND;
        rc = parse_wake_command(v, w, path, r);
    } else {
        subpath(p, sizeof p, path, "type");
        verr(v, p, "unknown wake type '%s' (want \"http\" or \"command\")", type);
        rc = -1;
    }
    free(type);
    if (rc < 0)
        return -1;
    r->max_wait_ms = WAKE_DEFAULT_MAX_WAIT_MS;
    json_t *m = json_object_get(w, "maxWaitSeconds");
    if (m && !json_is_null(m)) {
        subpath(p, sizeof p, path, "maxWaitSeconds");
        double s = json_is_number(m) ? json_number_value(m) : -1;
        if (!json_is_number(m) || !(s > 0) || s > MAX_WAIT_SECONDS_LIMIT) {
            verr(v, p, "must be a number of seconds above 0 and at most %.0f",
                 MAX_WAIT_SECONDS_LIMIT);
            return -1;
        }
        r->max_wait_ms = (int64_t)(s * 1000.0 + 0.5);
        if (r->max_wait_ms < 1)
            r->max_wait_ms = 1;
    }
    return 0;
}

static int parse_provider(struct vctx *v, json_t *o, const char *path, struct provider_cfg *pc)
{
    static const char *const known[] = {"name",      "type",     "model",       "url",
                                        "apiKeyEnv", "tier",     "description", "extraConfig",
                                        "publish",   "poolName", "wake",        NULL};
    char p[256];
    if (!json_is_object(o)) {
        verr(v, path, "must be an object");
        return -1;
    }
    if (warn_unknown(v, o, path, known) < 0)
        return -1;
    if (req_string(v, o, path, "name", &pc->name) < 0)
        return -1;
    if (!mcp_name_valid(pc->name)) {
        subpath(p, sizeof p, path, "name");
        verr(v, p,
             "'%s' is not a valid name (1-%d characters of A-Z a-z 0-9 . _ -, starting with a "
             "letter or digit)",
             pc->name, MCP_NAME_MAX);
        return -1;
    }
    if (req_string(v, o, path, "type", &pc->type) < 0)
        return -1;
    if (strcmp(pc->type, "openai") != 0) {
        subpath(p, sizeof p, path, "type");
        verr(v, p, "unsupported provider type '%s' (want \"openai\")", pc->type);
        return -1;
    }
    if (req_string(v, o, path, "model", &pc->model) < 0)
        return -1;
    if (req_string(v, o, path, "url", &pc->url) < 0)
        return -1;
    if (!is_http_url(pc->url)) {
        subpath(p, sizeof p, path, "url");
        verr(v, p, "must start with http:// or https://");
        return -1;
    }
    strip_slashes(pc->url);
    if (opt_string(v, o, path, "apiKeyEnv", &pc->api_key_env, true) < 0 ||
        opt_string(v, o, path, "tier", &pc->tier, false) < 0 ||
        opt_string(v, o, path, "description", &pc->description, false) < 0 ||
        opt_string(v, o, path, "poolName", &pc->pool_name, false) < 0)
        return -1;
    json_t *x = json_object_get(o, "extraConfig");
    if (x && !json_is_null(x)) {
        subpath(p, sizeof p, path, "extraConfig");
        if (!json_is_object(x)) {
            verr(v, p, "must be an object");
            return -1;
        }
        pc->extra_config = json_dumps(x, JSON_COMPACT);
        if (!pc->extra_config)
            return -1;
    }
    json_t *pub = json_object_get(o, "publish");
    if (pub && !json_is_null(pub)) {
        if (!json_is_boolean(pub)) {
            subpath(p, sizeof p, path, "publish");
            verr(v, p, "must be true or false");
            return -1;
        }
        pc->publish = json_is_true(pub);
    }
    json_t *w = json_object_get(o, "wake");
    if (w && !json_is_null(w)) {
        subpath(p, sizeof p, path, "wake");
        if (parse_wake(v, w, p, &pc->wake) < 0)
            return -1;
    }
    return 0;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static void provider_release(struct provider_cfg *p)
{
    free(p->name);
    free(p->type);
    free(p->model);
    free(p->url);
    free(p->api_key_env);
    free(p->tier);
    free(p->description);
    free(p->pool_name);
    free(p->extra_config);
    free(p->wake.url);
    free(p->wake.method);
    free_strv(p->wake.headers);
    free(p->wake.body);
    free_strv(p->wake.argv);
}

static void config_free(struct config *c)
{
    for (size_t i = 0; i < c->n_providers; i++)
        provider_release(&c->providers[i]);
    free(c->providers);
    for (size_t i = 0; i < c->n_warnings; i++)
        free(c->warnings[i]);
    free(c->warnings);
    free(c->text);
    free(c);
}

int config_parse(const char *text, size_t len, const char *path, struct config **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "config '%s' line %d, column %d: %s", path, je.line, je.column,
                 je.text);
        return CONFIG_ERR_INVALID;
    }
    int rc = CONFIG_ERR_INVALID;
    struct config *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    c->refs = 1;
    c->text = malloc(len + 1);
    if (!c->text) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memcpy(c->text, text, len);
    c->text[len] = '\0';
    struct vctx v = {path, text, len, err, errlen, c};
    if (!json_is_object(root)) {
        verr(&v, "", "the top level must be an object");
        goto out;
    }
    json_t *llm = json_object_get(root, "llm");
    if (llm && !json_is_null(llm) && !json_is_object(llm)) {
        verr(&v, "llm", "must be an object");
        goto out;
    }
    json_t *provs = llm ? json_object_get(llm, "providers") : NULL;
    if (provs && !json_is_null(provs) && !json_is_array(provs)) {
        verr(&v, "llm.providers", "must be an array");
        goto out;
    }
    size_t n = json_is_array(provs) ? json_array_size(provs) : 0;
    if (n > 0) {
        c->providers = calloc(n, sizeof *c->providers);
        if (!c->providers) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char p[64];
        snprintf(p, sizeof p, "llm.providers[%zu]", i);
        c->n_providers = i + 1;
        if (parse_provider(&v, json_array_get(provs, i), p, &c->providers[i]) < 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->providers[j].name, c->providers[i].name) == 0) {
                char np[80];
                snprintf(np, sizeof np, "%s.name", p);
                verr(&v, np, "duplicate provider name '%s' (also llm.providers[%zu])",
                     c->providers[i].name, j);
                goto out;
            }
        }
    }
    *out = c;
    c = NULL;
    rc = 0;
out:
    if (c)
        config_free(c);
    json_decref(root);
    return rc;
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(path, CONFIG_MAX_FILE, &text, &len);
    if (rc == -1 && errno == ENOENT)
        return CONFIG_ERR_MISSING;
    if (rc == -2) {
        snprintf(err, errlen, "config '%s': larger than %d bytes", path, CONFIG_MAX_FILE);
        return CONFIG_ERR_INVALID;
    }
    if (rc < 0) {
        snprintf(err, errlen, "cannot read config '%s': %s", path, strerror(errno));
        return CONFIG_ERR_INVALID;
    }
    rc = config_parse(text, len, path, out, err, errlen);
    free(text);
    return rc;
}

struct config *config_ref(struct config *c)
{
    if (c)
        c->refs++;
    return c;
}

void config_unref(struct config *c)
{
    if (c && --c->refs == 0)
        config_free(c);
}

size_t config_published(const struct config *c)
{
    size_t n = 0;
    for (size_t i = 0; c && i < c->n_providers; i++)
        if (c->providers[i].publish)
            n++;
    return n;
}

const struct provider_cfg *config_find(const struct config *c, const char *name)
{
    for (size_t i = 0; c && i < c->n_providers; i++)
        if (strcmp(c->providers[i].name, name) == 0)
            return &c->providers[i];
    return NULL;
}

char *config_home(const char *flag, const char *env_home, const char *user_home)
{
    if (flag && *flag)
        return strdup(flag);
    if (env_home && *env_home)
        return strdup(env_home);
    if (!user_home || !*user_home)
        return NULL;
    size_t n = strlen(user_home) + sizeof "/.mcpctl";
    char *h = malloc(n);
    if (h)
        snprintf(h, n, "%s/.mcpctl", user_home);
    return h;
}

const char *config_initial_status(const struct provider_cfg *p, bool available)
{
    if (p->wake.type != WAKE_NONE && !available)
        return MCP_STATUS_HIBERNATING;
    return MCP_STATUS_ACTIVE;
}
