/*
 * config.h - mcplocal's config.json: the local model servers, which of them
 * to publish, and how to wake the ones that sleep.
 *
 * Parsing is strict about what matters (a provider without a model, a wake
 * recipe without a command, a non-positive maxWaitSeconds) and reports the
 * file, line and reason. Unknown fields are tolerated but listed in
 * config.warnings so typos ("pubish") do not go unnoticed. Pure: no logging.
 *
 * A parsed config is immutable and reference-counted: a running task keeps
 * the config it started with even when SIGHUP loads a new one.
 */
#ifndef MCPLOCAL_CONFIG_H
#define MCPLOCAL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_ERR_INVALID (-1) /* err says where and why */
#define CONFIG_ERR_MISSING (-2) /* the file does not exist */

#define CONFIG_MAX_FILE (1024 * 1024)
#define WAKE_DEFAULT_MAX_WAIT_MS (60 * 1000)

enum wake_type { WAKE_NONE = 0, WAKE_HTTP, WAKE_COMMAND };

struct wake_recipe {
    enum wake_type type;
    /* WAKE_HTTP */
    char *url;
    char *method;   /* default "POST" */
    char **headers; /* "Name: value" lines, NULL-terminated (may be empty) */
    char *body;     /* NULL for none */
    /* WAKE_COMMAND: argv[0] is the command, NULL-terminated */
    char **argv;
    size_t argc;
    int64_t max_wait_ms;
};

struct provider_cfg {
    char *name;
    char *type; /* "openai" */
    char *model;
    char *url;          /* base URL without a trailing slash */
    char *api_key_env;  /* NULL when none */
    char *tier;         /* NULL when none */
    char *description;  /* NULL when none */
    char *pool_name;    /* NULL when none */
    char *extra_config; /* JSON text of an object, or NULL */
    bool publish;
    struct wake_recipe wake;
};

struct config {
    struct provider_cfg *providers;
    size_t n_providers;
    char **warnings; /* one message per unknown field, with file and line */
    size_t n_warnings;
    char *text; /* the source text, to tell whether a reload changed it */
    int refs;
};

/* Parses config text; path is used in messages only. Returns 0 and a new
 * config in *out (refs = 1; release with config_unref()), or
 * CONFIG_ERR_INVALID with the reason in err. */
int config_parse(const char *text, size_t len, const char *path, struct config **out, char *err,
                 size_t errlen);
/* Reads and parses path. Returns 0, CONFIG_ERR_MISSING, or
 * CONFIG_ERR_INVALID with the reason in err (unreadable files included). */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

struct config *config_ref(struct config *c);
/* Drops a reference; frees the config with the last. NULL is a no-op. */
void config_unref(struct config *c);

/* Number of providers with publish: true. */
size_t config_published(const struct config *c);
/* The provider called name, or NULL; borrowed from c. */
const struct provider_cfg *config_find(const struct config *c, const char *name);

/* The home directory: flag if set, else env_home (MCPCTL_HOME) if set and
 * not empty, else user_home + "/.mcpctl". Returns a new string (free()), or
 * NULL when none of them is usable. */
char *config_home(const char *flag, const char *env_home, const char *user_home);

/* The initialStatus rule: "hibernating" only for a provider with a wake
 * recipe whose backend did not answer at publish time, else "active". */
const char *config_initial_status(const struct provider_cfg *p, bool available);

#endif
