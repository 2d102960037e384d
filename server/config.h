/*
 * config.h - mcpd's settings: defaults, MCPD_* environment variables and
 * command-line flags (flags win). Durations are in milliseconds.
 */
#ifndef MCPD_CONFIG_H
#define MCPD_CONFIG_H

#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MCPD_DEFAULT_DB, the default --db, is defined in CMakeLists.txt. */

struct server_config {
    char listen_addr[64]; /* host part of --listen */
    int listen_port;
    char db_path[4096];
    int threads;
    int64_t heartbeat_timeout_ms;
    int64_t gc_interval_ms;
    int64_t inactive_retention_ms;
    int64_t ping_interval_ms;
    int64_t heartbeat_interval_ms; /* told to publishers in hello */
    int64_t max_body;
    int64_t infer_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t wake_timeout_ms;
    int max_inflight;              /* in-flight tasks per provider session */
    int max_held;                  /* callers held per Llm while it wakes */
    int gc_batch;                  /* rows changed per GC tick at most */
    int max_connections;           /* 0: as many as the open-file limit allows */
    int64_t connection_timeout_ms; /* idle connections are closed after this */
    char tls_cert[4096];           /* PEM files; both empty: plain HTTP */
    char tls_key[4096];
    char cors_origins[4096]; /* origins allowed to call /v1 from a browser; "" none, "*" any */
    char access_log[4096];   /* a file, "-" (stderr) or "off" */
    bool result_stream;      /* offer publishers a result stream */
    enum log_level log_level;
};

/* Fills cfg with the defaults. */
void config_defaults(struct server_config *cfg);

/* Applies MCPD_* variables, then argv[first..argc). Returns 0; 1 when --help
 * or --version was asked (usage or "mcpd VERSION" printed to stdout); -1
 * with a message in err naming the flag. */
int config_parse(struct server_config *cfg, int argc, char **argv, int first, char *err,
                 size_t errlen);

/* Prints the usage text to stdout. */
void config_usage(void);

/* Returns mcpd's version, e.g. "0.1.0" (static): the CMake project's. */
const char *mcpd_version(void);

#endif
