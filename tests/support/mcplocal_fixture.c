#include "mcplocal_fixture.h"

#include "fake_backend.h"
#include "fake_mcpd.h"
#include "proc.h"
#include "tmpdir.h"

#include <stdio.h>
#include <stdlib.h>

struct mlfx *mlfx_new(const char *name)
{
    struct mlfx *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->dir = tmpdir_create(name);
    x->fm = fake_mcpd_start();
    x->fb = fake_backend_start();
    if (!x->dir || !x->fm || !x->fb) {
        mlfx_free(x);
        return NULL;
    }
    return x;
}

int mlfx_launch(struct mlfx *x, const char *config_json, const char *const env_extra[])
{
    char creds[512];
    snprintf(creds, sizeof creds, "{\"mcpdUrl\": \"%s\", \"token\": \"t\"}", fake_mcpd_url(x->fm));
    tmpdir_write(x->dir, "credentials", creds, 0600);
    tmpdir_write(x->dir, "config.json", config_json, 0644);
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->dir, "--log-level", "debug", NULL};
    const char *env[16] = {"MCPLOCAL_BACKOFF_MIN_MS=20", "MCPLOCAL_BACKOFF_MAX_MS=200",
                           "MCPLOCAL_SHUTDOWN_GRACE_MS=3000"};
    for (size_t i = 0, n = 3; env_extra && env_extra[i] && n + 1 < 16; i++)
        env[n++] = env_extra[i];
    x->p = proc_start(argv, env, x->dir);
    if (!x->p || fake_mcpd_wait_stream(x->fm, 1, MLFX_WAIT_MS) != 0 ||
        proc_wait_for(x->p, "stream up", MLFX_WAIT_MS) != 0) {
        if (x->p)
            proc_dump(x->p);
        return -1;
    }
    return 0;
}

int mlfx_free(struct mlfx *x)
{
    if (!x)
        return 0;
    int rc = x->p ? proc_stop(x->p, MLFX_WAIT_MS) : 0;
    fake_mcpd_stop(x->fm);
    fake_backend_stop(x->fb);
    if (x->dir)
        tmpdir_remove(x->dir);
    free(x);
    return rc;
}
