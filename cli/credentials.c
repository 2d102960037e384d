#include "credentials.h"

#include "file.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

void creds_sources_from_env(struct creds_sources *s)
{
    s->env_url = getenv(CREDS_ENV_URL);
    s->env_token = getenv(CREDS_ENV_TOKEN);
    s->env_home = getenv(CREDS_ENV_HOME);
    s->user_home = getenv("HOME");
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

char *creds_file_path(const struct creds_sources *s)
{
    if (nonempty(s->env_home))
        return join(s->env_home, CREDS_FILE_NAME);
    if (nonempty(s->user_home))
        return join(s->user_home, ".mcpctl/" CREDS_FILE_NAME);
    return NULL;
}

bool creds_token_valid(const char *token)
{
    if (!token || !*token)
        return false;
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

int creds_normalize_url(const char *url, char **out, struct cli_error *err)
{
    const char *host = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        host = url + 8;
    bool bad = !host || *host == '\0' || *host == '/';
    for (const char *p = url; !bad && *p; p++)
        if ((unsigned char)*p <= ' ')
            bad = true;
    if (bad)
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "invalid server URL '%s': expected http://HOST[:PORT] or "
                             "https://HOST[:PORT]",
                             url);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    *out = strndup(url, n);
    if (!*out)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    return 0;
}

/* Loads the file at path into *root (NULL when it does not exist). */
static int load_file(const char *path, json_t **root, struct cli_error *err)
{
    *root = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(path, CREDS_FILE_MAX, &text, &len);
    if (rc == -1 && errno == ENOENT)
        return 0;
    if (rc == -2)
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "credentials file '%s' is larger than %d bytes; fix or remove it",
                             path, CREDS_FILE_MAX);
    if (rc < 0)
        return cli_error_set(err, CLI_EXIT_ERROR, "cannot read credentials file '%s': %s", path,
                             cli_strerror(errno));
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "credentials file '%s' is not a JSON object; fix it or run "
                             "'mcpctl login --server URL --token TOKEN'",
                             path);
    }
    *root = j;
    return 0;
}

static int file_string(const json_t *root, const char *key, const char *path, const char **out,
                       struct cli_error *err)
{
    *out = NULL;
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "credentials file '%s': '%s' must be a string; fix it or run "
                             "'mcpctl login --server URL --token TOKEN'",
                             path, key);
    *out = nonempty(json_string_value(v));
    return 0;
}

int creds_resolve(const struct creds_sources *s, bool need_url, bool need_token, struct creds *out,
                  struct cli_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = NULL;
    int rc = -1;
    const char *url = NULL, *token = NULL;

    if (s->flag_url && !*s->flag_url)
        return cli_error_set(err, CLI_EXIT_USAGE, "'--server' needs a URL, got an empty value");
    if (s->flag_token && !*s->flag_token)
        return cli_error_set(err, CLI_EXIT_USAGE, "'--token' needs a token, got an empty value");

    out->path = creds_file_path(s);
    if (need_url) {
        if (s->flag_url) {
            url = s->flag_url;
            out->url_from = "--server";
        } else if (nonempty(s->env_url)) {
            url = s->env_url;
            out->url_from = CREDS_ENV_URL;
        }
    }
    if (need_token) {
        if (s->flag_token) {
            token = s->flag_token;
            out->token_from = "--token";
        } else if (nonempty(s->env_token)) {
            token = s->env_token;
            out->token_from = CREDS_ENV_TOKEN;
        }
    }
    if (((need_url && !url) || (need_token && !token)) && out->path) {
        if (load_file(out->path, &root, err) < 0)
            goto out;
        if (root && need_url && !url) {
            if (file_string(root, "mcpdUrl", out->path, &url, err) < 0)
                goto out;
            out->url_from = "the credentials file";
        }
        if (root && need_token && !token) {
            if (file_string(root, "token", out->path, &token, err) < 0)
                goto out;
            out->token_from = "the credentials file";
        }
    }
    if (need_url && !url) {
        cli_error_set(err, CLI_EXIT_USAGE,
                      "no mcpd server configured; pass --server URL, set MCPCTL_URL, or run "
                      "'mcpctl login --server URL --token TOKEN'");
        goto out;
    }
    if (need_token && !token) {
        cli_error_set(err, CLI_EXIT_USAGE,
                      "no API token configured; pass --token TOKEN, set MCPCTL_TOKEN, or run "
                      "'mcpctl login --server URL --token TOKEN'");
        goto out;
    }
    if (url && creds_normalize_url(url, &out->url, err) < 0)
        goto out;
    if (token && !creds_token_valid(token)) {
        cli_error_set(err, CLI_EXIT_USAGE,
                      "the token from %s contains spaces or control characters; check it",
                      out->token_from);
        goto out;
    }
    if (token) {
        out->token = strdup(token);
        if (!out->token) {
            cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void creds_release(struct creds *c)
{
    free(c->url);
    free(c->token);
    free(c->path);
    c->url = c->token = c->path = NULL;
}

/* mkdir -p for the directory part of path, new directories mode 0700. */
static int make_parent_dirs(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    int rc = 0;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        goto out;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            rc = -1;
            goto out;
        }
        *p = '/';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        rc = -1;
out : {
    int saved = errno;
    free(dir);
    errno = saved;
}
    return rc;
}

int creds_save(const char *path, const char *url, const char *token, struct cli_error *err)
{
    json_t *root = NULL;
    char *text = NULL;
    int rc = -1;
    if (load_file(path, &root, err) < 0) {
        if (err && err->code == CLI_EXIT_USAGE)
            cli_error_set(err, CLI_EXIT_ERROR,
                          "cannot update credentials file '%s': it is not a JSON object or "
                          "too large; fix or remove it",
                          path);
        goto out;
    }
    if (!root)
        root = json_object();
    if (!root || json_object_set_new(root, "mcpdUrl", json_string(url)) < 0 ||
        json_object_set_new(root, "token", json_string(token)) < 0) {
        cli_error_set(err, CLI_EXIT_ERROR, "cannot encode the credentials (invalid UTF-8?)");
        goto out;
    }
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
        goto out;
    }
    size_t n = strlen(text);
    char *nl = realloc(text, n + 2);
    if (!nl) {
        cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
        goto out;
    }
    text = nl;
    text[n++] = '\n';
    text[n] = '\0';
    if (make_parent_dirs(path) < 0) {
        cli_error_set(err, CLI_EXIT_ERROR, "cannot create the directory of '%s': %s", path,
                      cli_strerror(errno));
        goto out;
    }
    if (file_write_atomic(path, text, n, 0600) < 0) {
        cli_error_set(err, CLI_EXIT_ERROR, "cannot write credentials file '%s': %s", path,
                      cli_strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(text);
    json_decref(root);
    return rc;
}
