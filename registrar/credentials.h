/*
 * credentials.h - the files that tie mcplocal to one mcpd: `credentials`
 * (where mcpd is and the token to present) and `provider-session` (the
 * session id mcpd minted, kept so a restart adopts the same rows).
 *
 * Pure file handling: no logging. Messages name the file and, for JSON, the
 * line.
 */
#ifndef MCPLOCAL_CREDENTIALS_H
#define MCPLOCAL_CREDENTIALS_H

#include <stdbool.h>
#include <stddef.h>

#define SESSION_ID_MAX 128

struct credentials {
    char *mcpd_url; /* without a trailing slash */
    char *token;
    char *ca_file; /* "caFile": a PEM file of CAs trusted besides the system's, or NULL */
};

/* Parses credentials text; path is used in messages. Returns 0 (release
 * with credentials_release()), or CONFIG_ERR_INVALID with err set. */
int credentials_parse(const char *text, size_t len, const char *path, struct credentials *out,
                      char *err, size_t errlen);
/* Reads and parses path. *insecure is set when group or others may read or
 * write it. Returns 0, CONFIG_ERR_MISSING or CONFIG_ERR_INVALID. */
int credentials_load(const char *path, struct credentials *out, bool *insecure, char *err,
                     size_t errlen);
void credentials_release(struct credentials *c);
/* True when both are set and equal, caFile included (NULL-safe). */
bool credentials_equal(const struct credentials *a, const struct credentials *b);

/* True for 1..SESSION_ID_MAX visible ASCII characters (it travels in a
 * header). */
bool session_id_valid(const char *id);
/* Reads the session id from path into out (SESSION_ID_MAX + 1 bytes).
 * Returns 0, CONFIG_ERR_MISSING, or CONFIG_ERR_INVALID with err set. */
int session_load(const char *path, char *out, char *err, size_t errlen);
/* Writes "id\n" to path atomically with mode 0600. Returns 0 or -1 (errno). */
int session_store(const char *path, const char *id);

#endif
