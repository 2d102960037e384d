#include "credentials.h"

#include "config.h"
#include "file.h"
#include "jsonloc.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CREDENTIALS_MAX_FILE (64 * 1024)
#define CREDENTIALS_MAX_FIELD 1024

static int get_string(const char *path, const char *text, size_t len, json_t *root, const char *key,
                      char **out, char *err, size_t errlen)
{
    json_t *j = json_object_get(root, key);
    if (!j) {
        jsonloc_error(err, errlen, "credentials", path, text, len, "",
                      "missing \"%s\" (a non-empty string)", key);
        return -1;
    }
    if (!json_is_string(j) || json_string_length(j) == 0) {
        jsonloc_error(err, errlen, "credentials", path, text, len, key,
                      "must be a non-empty string");
        return -1;
    }
    const char *s = json_string_value(j);
    if (strlen(s) != json_string_length(j)) {
        jsonloc_error(err, errlen, "credentials", path, text, len, key,
                      "must not contain NUL characters");
        return -1;
    }
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
            jsonloc_error(err, errlen, "credentials", path, text, len, key,
                          "must not contain spaces or control characters");
            return -1;
        }
    }
    if (strlen(s) > CREDENTIALS_MAX_FIELD) {
        jsonloc_error(err, errlen, "credentials", path, text, len, key, "longer than %d characters",
                      CREDENTIALS_MAX_FIELD);
        return -1;
    }
    *out = strdup(s);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* "caFile": optional; a path (spaces allowed), relative ones taken from the
 * credentials file's directory. */
static int get_ca_file(const char *path, const char *text, size_t len, json_t *root, char **out,
                       char *err, size_t errlen)
{
    json_t *j = json_object_get(root, "caFile");
    if (!j || json_is_null(j))
        return 0;
    const char *s = json_string_value(j);
    if (!s || json_string_length(j) == 0 || strlen(s) != json_string_length(j)) {
        jsonloc_error(err, errlen, "credentials", path, text, len, "caFile",
                      "must be the path of a PEM file");
        return -1;
    }
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            jsonloc_error(err, errlen, "credentials", path, text, len, "caFile",
                          "must not contain control characters");
            return -1;
        }
    }
    if (strlen(s) > CREDENTIALS_MAX_FIELD) {
        jsonloc_error(err, errlen, "credentials", path, text, len, "caFile",
                      "longer than %d characters", CREDENTIALS_MAX_FIELD);
        return -1;
    }
    const char *slash = s[0] == '/' ? NULL : strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    size_t n = dir + strlen(s) + 1;
    *out = malloc(n);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(*out, n, "%.*s%s", (int)dir, path, s);
    return 0;
}

int credentials_parse(const char *text, size_t len, const char *path, struct credentials *out,
                      char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "credentials '%s' line %d, column %d: %s", path, je.line, je.column,
                 je.text);
        return CONFIG_ERR_INVALID;
    }
    int rc = CONFIG_ERR_INVALID;
    if (!json_is_object(root)) {
        jsonloc_error(err, errlen, "credentials", path, text, len, "",
                      "the top level must be an object");
        goto out;
    }
    if (get_string(path, text, len, root, "mcpdUrl", &out->mcpd_url, err, errlen) < 0 ||
        get_string(path, text, len, root, "token", &out->token, err, errlen) < 0 ||
        get_ca_file(path, text, len, root, &out->ca_file, err, errlen) < 0)
        goto out;
    if (strncmp(out->mcpd_url, "http://", 7) != 0 && strncmp(out->mcpd_url, "https://", 8) != 0) {
        jsonloc_error(err, errlen, "credentials", path, text, len, "mcpdUrl",
                      "must start with http:// or https://");
        goto out;
    }
    size_t n = strlen(out->mcpd_url);
    while (n > 0 && out->mcpd_url[n - 1] == '/')
        out->mcpd_url[--n] = '\0';
    rc = 0;
out:
    if (rc != 0)
        credentials_release(out);
    json_decref(root);
    return rc;
}

int credentials_load(const char *path, struct credentials *out, bool *insecure, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    *insecure = false;
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(path, CREDENTIALS_MAX_FILE, &text, &len);
    if (rc == -1 && errno == ENOENT)
        return CONFIG_ERR_MISSING;
    if (rc == -2) {
        snprintf(err, errlen, "credentials '%s': larger than %d bytes", path, CREDENTIALS_MAX_FILE);
        return CONFIG_ERR_INVALID;
    }
    if (rc < 0) {
        snprintf(err, errlen, "cannot read credentials '%s': %s", path, strerror(errno));
        return CONFIG_ERR_INVALID;
    }
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        *insecure = true;
    rc = credentials_parse(text, len, path, out, err, errlen);
    free(text);
    return rc;
}

void credentials_release(struct credentials *c)
{
    free(c->mcpd_url);
    free(c->token);
    free(c->ca_file);
    c->mcpd_url = NULL;
    c->token = NULL;
    c->ca_file = NULL;
}

bool credentials_equal(const struct credentials *a, const struct credentials *b)
{
    if (!a->mcpd_url || !b->mcpd_url || !a->token || !b->token)
        return false;
    if ((a->ca_file == NULL) != (b->ca_file == NULL))
        return false;
    if (a->ca_file && strcmp(a->ca_file, b->ca_file) != 0)
        return false;
    return strcmp(a->mcpd_url, b->mcpd_url) == 0 && strcmp(a->token, b->token) == 0;
}

bool session_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > SESSION_ID_MAX)
        return false;
    for (const unsigned char *c = (const unsigned char *)id; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            return false;
    return true;
}

int session_load(const char *path, char *out, char *err, size_t errlen)
{
    out[0] = '\0';
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(path, 4096, &text, &len);
    if (rc == -1 && errno == ENOENT)
        return CONFIG_ERR_MISSING;
    if (rc < 0) {
        snprintf(err, errlen, "cannot read session file '%s': %s", path,
                 rc == -2 ? "too large" : strerror(errno));
        return CONFIG_ERR_INVALID;
    }
    while (len > 0 && strchr(" \t\r\n", text[len - 1]))
        text[--len] = '\0';
    const char *s = text;
    while (*s && strchr(" \t\r\n", *s))
        s++;
    if (!session_id_valid(s)) {
        snprintf(err, errlen, "session file '%s' does not hold a valid session id", path);
        free(text);
        return CONFIG_ERR_INVALID;
    }
    snprintf(out, SESSION_ID_MAX + 1, "%s", s);
    free(text);
    return 0;
}

int session_store(const char *path, const char *id)
{
    char line[SESSION_ID_MAX + 2];
    int n = snprintf(line, sizeof line, "%s\n", id);
    if (n < 0 || (size_t)n >= sizeof line) {
        errno = EINVAL;
        return -1;
    }
    return file_write_atomic(path, line, (size_t)n, 0600);
}
