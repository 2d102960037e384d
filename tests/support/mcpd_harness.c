#include "mcpd_harness.h"
#include "tmpdir.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *mcpd_create_token(const char *db, const char *owner)
{
    return mcpd_create_token_with(db, owner, NULL, NULL);
}

char *mcpd_create_token_with(const char *db, const char *owner, const char *const flags[],
                             long long *id)
{
    const char *argv[32] = {MCPD_BIN, "token", "create", "--owner", owner, "--db", db};
    int argc = 7;
    for (int i = 0; flags && flags[i] && argc < 31; i++)
        argv[argc++] = flags[i];
    argv[argc] = NULL;
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, NULL, NULL, &out, &err, 30000);
    char *token = NULL;
    const char *at = err ? strstr(err, "created token ") : NULL;
    if (id && (!at || sscanf(at, "created token %lld", id) != 1))
        rc = -1;
    if (rc == 0 && out) {
        size_t n = strlen(out);
        while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
            out[--n] = '\0';
        char *last = strrchr(out, '\n');
        token = strdup(last ? last + 1 : out);
    } else {
        fprintf(stderr, "mcpd token create failed (%d): %s\n", rc, err ? err : "");
    }
    free(out);
    free(err);
    return token;
}

int mcpd_start(struct mcpd *m, const char *dir, const char *const extra_args[])
{
    memset(m, 0, sizeof *m);
    m->dir = (char *)dir;
    m->db = tmpdir_path(dir, "mcpd.db");
    char *tok = mcpd_create_token(m->db, "alice");
    if (!tok)
        return -1;
    snprintf(m->token, sizeof m->token, "%s", tok);
    free(tok);

    const char *argv[64] = {MCPD_BIN, "--listen", "127.0.0.1:0", "--db", m->db};
    int n = 5;
    for (int i = 0; extra_args && extra_args[i] && n < 62; i++)
        argv[n++] = extra_args[i];
    argv[n] = NULL;
    m->proc = proc_start(argv, NULL, dir);
    if (!m->proc || proc_wait_for(m->proc, "listening on http://", 20000) < 0)
        goto fail;
    /* The line is complete once its newline has arrived. */
    for (int tries = 0; tries < 100; tries++) {
        char *log = proc_output(m->proc);
        char *p = strstr(log, "listening on http://");
        char *nl = p ? strchr(p, '\n') : NULL;
        if (nl) {
            char *colon = strrchr(p + strlen("listening on http://"), ':');
            m->port = colon && colon < nl ? atoi(colon + 1) : 0;
            free(log);
            break;
        }
        free(log);
        proc_wait_for(m->proc, "\n", 10);
    }
    if (m->port <= 0)
        goto fail;
    snprintf(m->url, sizeof m->url, "http://127.0.0.1:%d", m->port);
    return 0;
fail : {
    char *log = m->proc ? proc_output(m->proc) : NULL;
    fprintf(stderr, "mcpd did not start:\n%s\n", log ? log : "");
    free(log);
    return -1;
}
}

int mcpd_stop(struct mcpd *m)
{
    int rc = -1;
    if (m->proc) {
        proc_signal(m->proc, SIGTERM);
        rc = proc_wait_exit(m->proc, 20000);
        if (rc != 0) {
            char *log = proc_output(m->proc);
            fprintf(stderr, "mcpd exit %d, log:\n%s\n", rc, log);
            free(log);
        }
        proc_free(m->proc);
        m->proc = NULL;
    }
    free(m->db);
    m->db = NULL;
    return rc;
}

char *mcpd_url(const struct mcpd *m, const char *path)
{
    size_t n = strlen(m->url) + strlen(path) + 1;
    char *u = malloc(n);
    snprintf(u, n, "%s%s", m->url, path);
    return u;
}
