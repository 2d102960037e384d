/*
 * credentials.h - where mcpctl finds mcpd's URL and its API token.
 *
 * Each of the two values is taken from the first source that has it:
 *   1. the command line (--server URL, --token TOKEN)
 *   2. the environment (MCPCTL_URL, MCPCTL_TOKEN)
 *   3. the credentials file: $MCPCTL_HOME/credentials, else
 *      $HOME/.mcpctl/credentials, a JSON object {"mcpdUrl": "...", "token": "..."}
 *      shared with mcplocal. Other keys in it are kept when mcpctl rewrites it.
 * Empty environment variables count as unset. The file is read only when a
 * value is still missing after 1 and 2, so a broken file does not get in the
 * way of flags.
 *
 * This module reads no environment itself (creds_sources_from_env() does),
 * never prints and never exits.
 */
#ifndef MCPCTL_CREDENTIALS_H
#define MCPCTL_CREDENTIALS_H

#include "errors.h"

#include <stdbool.h>

#define CREDS_FILE_NAME "credentials"
#define CREDS_FILE_MAX (64 * 1024)
#define CREDS_ENV_URL "MCPCTL_URL"
#define CREDS_ENV_TOKEN "MCPCTL_TOKEN"
#define CREDS_ENV_HOME "MCPCTL_HOME"

/* Where values may come from; every pointer is borrowed and may be NULL. */
struct creds_sources {
    const char *flag_url;   /* --server */
    const char *flag_token; /* --token */
    const char *env_url;    /* $MCPCTL_URL */
    const char *env_token;  /* $MCPCTL_TOKEN */
    const char *env_home;   /* $MCPCTL_HOME */
    const char *user_home;  /* $HOME */
};

/* The resolved values. Strings are owned; release with creds_release(). */
struct creds {
    char *url;              /* normalised: no trailing '/'; NULL when not needed */
    char *token;            /* NULL when not needed */
    const char *url_from;   /* static: "--server", "MCPCTL_URL" or "the credentials file" */
    const char *token_from; /* likewise for the token */
    char *path;             /* the credentials file path, or NULL when no home is known */
};

/* Fills s with the environment variables above (borrowed from environ). */
void creds_sources_from_env(struct creds_sources *s);

/* Returns a new string with the credentials file path (caller frees), or NULL
 * when neither MCPCTL_HOME nor HOME is set. */
char *creds_file_path(const struct creds_sources *s);

/* Resolves the URL (when need_url) and the token (when need_token) in the
 * order above. Returns 0 with *out filled, or -1: CLI_EXIT_USAGE when a
 * needed value is missing or invalid, CLI_EXIT_ERROR when the file cannot be
 * read. *out is always safe to release. */
int creds_resolve(const struct creds_sources *s, bool need_url, bool need_token, struct creds *out,
                  struct cli_error *err);
/* Frees the strings of c. */
void creds_release(struct creds *c);

/* Checks that url is an http:// or https:// URL with a host and returns a
 * new copy without trailing slashes in *out (caller frees). 0, or -1 with a
 * CLI_EXIT_USAGE error. */
int creds_normalize_url(const char *url, char **out, struct cli_error *err);

/* True when token can travel in an Authorization header: non-empty, no
 * spaces, no control characters. */
bool creds_token_valid(const char *token);

/* Writes url and token to the credentials file at path, atomically and with
 * mode 0600, creating its directory (mode 0700) when missing and keeping the
 * other keys of an existing file. A file that is not a JSON object is left
 * alone and reported. Returns 0 or -1. */
int creds_save(const char *path, const char *url, const char *token, struct cli_error *err);

#endif
