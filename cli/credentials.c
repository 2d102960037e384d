#include "credentials.h"

#include "file.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
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
    memset(s, 0, sizeof *s);
    s->env_url = getenv(CREDS_ENV_URL);
    s->env_token = getenv(CREDS_ENV_TOKEN);
    s->env_cacert = getenv(CREDS_ENV_CACERT);
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

/* The CA file for an https:// URL: --cacert, else MCPCTL_CACERT, else the
 * file's caFile. *root is the file's content when it was loaded already
 * (*loaded), else it is loaded here, and a file that cannot be read or
 * parsed then gives no CA: the URL and token did not need it. */
static int resolve_cafile(const struct creds_sources *s, json_t **root, bool *loaded,
                          struct creds *out, struct cli_error *err)
{
    const char *ca = NULL;
    if (nonempty(s->flag_cacert)) {
        ca = s->flag_cacert;
        out->cafile_from = "--cacert";
    } else if (nonempty(s->env_cacert)) {
        ca = s->env_cacert;
        out->cafile_from = CREDS_ENV_CACERT;
    } else if (out->path) {
        if (!*loaded) {
            struct cli_error ignored = {0};
            if (load_file(out->path, root, &ignored) < 0)
                *root = NULL;
            *loaded = true;
        }
        if (*root && file_string(*root, "caFile", out->path, &ca, err) < 0)
            return -1;
        out->cafile_from = "the credentials file";
    }
    if (!ca) {
        out->cafile_from = NULL;
        return 0;
    }
    if (creds_check_cafile(ca, out->cafile_from, err) < 0)
        return -1;
    out->cafile = strdup(ca);
    if (!out->cafile)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    return 0;
}

int creds_resolve(const struct creds_sources *s, bool need_url, bool need_token, struct creds *out,
                  struct cli_error *err)
{
    memset(out, 0, sizeof *out);
    json_t *root = NULL;
    bool loaded = false;
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
        loaded = true;
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
    if (out->url && strncasecmp(out->url, "https://", 8) == 0 &&
        resolve_cafile(s, &root, &loaded, out, err) < 0)
        goto out;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void creds_release(struct creds *c)
{
    free(c->url);
    free(c->token);
    free(c->cafile);
    free(c->path);
    c->url = c->token = c->cafile = c->path = NULL;
}

/* What to do about a bad CA file, by where it came from. */
static const char *cafile_hint(const char *from)
{
    if (from && strcmp(from, CREDS_ENV_CACERT) == 0)
        return "; fix or unset " CREDS_ENV_CACERT;
    if (from && strcmp(from, "--cacert") == 0)
        return "; pass the PEM file of the CA that signed mcpd's certificate";
    return "; run 'mcpctl login --server URL --token TOKEN --cacert FILE' with the PEM file of "
           "the CA that signed mcpd's certificate";
}

/* Counts the PEM certificates in data. 0 when every one could be read (and
 * the rest is not PEM at all), else -1 with libcrypto's reason in why. */
static int count_pem_certificates(const char *data, size_t len, int *count, char *why,
                                  size_t whylen)
{
    *count = 0;
    why[0] = '\0';
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (!bio) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    ERR_clear_error();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        (*count)++;
    }
    /* The loop ends at "no start line" once the certificates are used up;
     * anything else is a certificate that could not be decoded. */
    unsigned long e = ERR_peek_last_error();
    int rc = 0;
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        const char *r = ERR_reason_error_string(e);
        snprintf(why, whylen, "%s", r ? r : "unknown error");
        rc = -1;
    }
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

int creds_check_cafile(const char *path, const char *from, struct cli_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int count = 0;
    char why[256];
    const char *src = from ? from : "--cacert";
    int rc = file_read_all(path, CREDS_CAFILE_MAX, &text, &len);
    if (rc == -2)
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "the CA file '%s' from %s is larger than %d MiB%s", path, src,
                             CREDS_CAFILE_MAX >> 20, cafile_hint(from));
    if (rc < 0)
        return cli_error_set(err, CLI_EXIT_USAGE, "cannot read the CA file '%s' from %s: %s%s",
                             path, src, cli_strerror(errno), cafile_hint(from));
    rc = count_pem_certificates(text, len, &count, why, sizeof why);
    free(text);
    if (rc < 0)
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "the CA file '%s' from %s holds a PEM certificate that cannot be "
                             "read (%s)%s",
                             path, src, why, cafile_hint(from));
    if (count == 0)
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "the CA file '%s' from %s holds no PEM certificate (no '-----BEGIN "
                             "CERTIFICATE-----' block)%s",
                             path, src, cafile_hint(from));
    return 0;
}

int creds_absolute_path(const char *path, char **out, struct cli_error *err)
{
    *out = NULL;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return cli_error_set(err, CLI_EXIT_USAGE, "'%s' names a directory, not a CA file", path);
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    char *real = realpath(dir, NULL);
    int saved = errno;
    free(dir);
    if (!real)
        return cli_error_set(err, CLI_EXIT_USAGE, "cannot read the CA file '%s': %s", path,
                             cli_strerror(saved));
    size_t n = strlen(real) + strlen(name) + 2;
    *out = malloc(n);
    if (*out)
        snprintf(*out, n, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", name);
    free(real);
    if (!*out)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    return 0;
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

int creds_save(const char *path, const char *url, const char *token, const char *cafile,
               struct cli_error *err)
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
        json_object_set_new(root, "token", json_string(token)) < 0 ||
        (cafile && json_object_set_new(root, "caFile", json_string(cafile)) < 0)) {
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
