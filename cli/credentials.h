/*
 * credentials.h - where mcpctl finds mcpd's URL, its API token, and the CA
 * file that vouches for mcpd's TLS certificate.
 *
 * Each value is taken from the first source that has it:
 *   1. the command line (--server URL, --token TOKEN; --cacert FILE, which
 *      only `login` takes)
 *   2. the environment (MCPCTL_URL, MCPCTL_TOKEN, MCPCTL_CACERT)
 *   3. the credentials file: $MCPCTL_HOME/credentials, else
 *      $HOME/.mcpctl/credentials, a JSON object {"mcpdUrl": "...", "token":
 *      "...", "caFile": "/abs/ca.pem"} shared with mcplocal. Other keys in it
 *      are kept when mcpctl rewrites it.
 * Empty environment variables count as unset. The file is read only when the
 * URL or the token is still missing after 1 and 2, so a broken file does not
 * get in the way of flags; for an https:// URL it is also read for its
 * caFile, and then a file that cannot be read or parsed simply gives none.
 *
 * The CA file is used only for https:// URLs, where it is checked up front
 * (readable, at least one PEM certificate) so a bad one is reported with its
 * source instead of as a TLS failure. It is trusted in addition to the
 * system's CAs.
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
#define CREDS_ENV_CACERT "MCPCTL_CACERT"
#define CREDS_CAFILE_MAX (4 * 1024 * 1024)

/* Where values may come from; every pointer is borrowed and may be NULL. */
struct creds_sources {
    const char *flag_url;    /* --server */
    const char *flag_token;  /* --token */
    const char *flag_cacert; /* login's --cacert, made absolute */
    const char *env_url;     /* $MCPCTL_URL */
    const char *env_token;   /* $MCPCTL_TOKEN */
    const char *env_cacert;  /* $MCPCTL_CACERT */
    const char *env_home;    /* $MCPCTL_HOME */
    const char *user_home;   /* $HOME */
};

/* The resolved values. Strings are owned; release with creds_release(). */
struct creds {
    char *url;               /* normalised: no trailing '/'; NULL when not needed */
    char *token;             /* NULL when not needed */
    const char *url_from;    /* static: "--server", "MCPCTL_URL" or "the credentials file" */
    const char *token_from;  /* likewise for the token */
    char *cafile;            /* CA file to trust besides the system's; NULL when there is
                                none or the URL is not https:// */
    const char *cafile_from; /* static: "--cacert", "MCPCTL_CACERT" or "the credentials file" */
    char *path;              /* the credentials file path, or NULL when no home is known */
};

/* Fills s with the environment variables above (borrowed from environ);
 * every other field is cleared. */
void creds_sources_from_env(struct creds_sources *s);

/* Returns a new string with the credentials file path (caller frees), or NULL
 * when neither MCPCTL_HOME nor HOME is set. */
char *creds_file_path(const struct creds_sources *s);

/* Resolves the URL and the CA file (when need_url) and the token (when
 * need_token) in the order above. Returns 0 with *out filled, or -1:
 * CLI_EXIT_USAGE when a needed value is missing or invalid (a CA file that
 * cannot be used included), CLI_EXIT_ERROR when the file cannot be read.
 * *out is always safe to release. */
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

/* Checks that path can serve as a CA file: it can be read, is at most
 * CREDS_CAFILE_MAX bytes, and holds one or more PEM certificates, all
 * readable. from names where path came from, for the message (static:
 * "--cacert", "MCPCTL_CACERT" or "the credentials file"). 0, or -1 with a
 * CLI_EXIT_USAGE error. */
int creds_check_cafile(const char *path, const char *from, struct cli_error *err);

/* The absolute form of path for saving: relative paths are taken from the
 * working directory, and the directory part is resolved (symbolic links
 * included) while the file name is kept as given, so a link that is later
 * pointed at a renewed certificate keeps working. Returns 0 with a new
 * string in *out (caller frees), or -1 with a CLI_EXIT_USAGE error when the
 * directory does not exist. */
int creds_absolute_path(const char *path, char **out, struct cli_error *err);

/* Writes url and token, and cafile unless it is NULL, to the credentials
 * file at path, atomically and with mode 0600, creating its directory (mode
 * 0700) when missing and keeping the other keys of an existing file (a
 * caFile included when cafile is NULL). A file that is not a JSON object is
 * left alone and reported. Returns 0 or -1. */
int creds_save(const char *path, const char *url, const char *token, const char *cafile,
               struct cli_error *err);

#endif
