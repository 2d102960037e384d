/*
 * mcpd_harness.h - start the real mcpd on port 0 in a temp dir for a test.
 *
 * mcpd logs "listening on http://ADDR:PORT" once it accepts connections; the
 * harness waits for that line and reads the port from it.
 */
#ifndef TEST_MCPD_HARNESS_H
#define TEST_MCPD_HARNESS_H

#include "proc.h"

struct mcpd {
    struct proc *proc;
    char *dir; /* borrowed from the test */
    char *db;  /* dir/mcpd.db */
    char url[64];
    int port;
    char token[128]; /* a token for owner "alice", made before start */
};

/* Creates a token for owner with `mcpd token create`; returns a new string,
 * or NULL on failure. */
char *mcpd_create_token(const char *db, const char *owner);
/* The same with more flags for `token create` (NULL-terminated, may be
 * NULL: "--admin", "--expires", "3s"); *id (when not NULL) gets the
 * token's id. */
char *mcpd_create_token_with(const char *db, const char *owner, const char *const flags[],
                             long long *id);

/* Starts mcpd with --listen 127.0.0.1:0 --db dir/mcpd.db plus extra_args
 * (NULL-terminated, may be NULL). Returns 0, or -1 (with the log on stderr). */
int mcpd_start(struct mcpd *m, const char *dir, const char *const extra_args[]);
/* Sends SIGTERM and waits; returns the exit code (-1 if it had to be killed). */
int mcpd_stop(struct mcpd *m);
/* Builds "http://127.0.0.1:PORT" + path into a new string. */
char *mcpd_url(const struct mcpd *m, const char *path);

#endif
