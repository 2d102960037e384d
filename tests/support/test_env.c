#include "test_env.h"
#include "fake_publisher.h"
#include "tmpdir.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct test_env *test_env_start(const char *const extra_args[])
{
    struct test_env *env = calloc(1, sizeof *env);
    env->dir = tmpdir_create("mcpd-test");
    if (mcpd_start(&env->mcpd, env->dir, extra_args) < 0) {
        mcpd_stop(&env->mcpd);
        tmpdir_remove(env->dir);
        free(env);
        return NULL;
    }
    return env;
}

int test_env_stop(struct test_env *env)
{
    if (!env)
        return -1;
    int rc = mcpd_stop(&env->mcpd);
    tmpdir_remove(env->dir);
    free(env);
    return rc;
}

int test_call(struct test_env *env, const char *method, const char *path, const char *token,
              const char *const headers[], const char *body, struct http_resp *out)
{
    char *url = mcpd_url(&env->mcpd, path);
    int rc = http_do(method, url, token, headers, body, out);
    free(url);
    return rc;
}

char *test_register(struct test_env *env, const char *token, const char *session,
                    const char *providers_json, long *status)
{
    static const char *const json_hdr[] = {"Content-Type: application/json", NULL};
    char body[2048];
    if (session)
        snprintf(body, sizeof body, "{\"providerSessionId\":\"%s\",\"providers\":%s}", session,
                 providers_json);
    else
        snprintf(body, sizeof body, "{\"providers\":%s}", providers_json);
    struct http_resp r;
    test_call(env, "POST", "/api/v1/llms/_provider-register", token, json_hdr, body, &r);
    *status = r.status;
    char *sid = NULL;
    if (r.status == 200) {
        json_t *o = json_loads(r.body, 0, NULL);
        const char *s = json_string_value(json_object_get(o, "providerSessionId"));
        sid = s ? strdup(s) : NULL;
        json_decref(o);
    }
    http_resp_free(&r);
    return sid;
}

char *test_llm_status(struct test_env *env, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/llms/%s", name);
    struct http_resp r;
    test_call(env, "GET", path, env->mcpd.token, NULL, NULL, &r);
    char *status = NULL;
    if (r.status == 200) {
        json_t *o = json_loads(r.body, 0, NULL);
        const char *s = json_string_value(json_object_get(o, "status"));
        status = s ? strdup(s) : NULL;
        json_decref(o);
    }
    http_resp_free(&r);
    return status;
}

int test_wait_status(struct test_env *env, const char *name, const char *status, int timeout_ms)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        char *s = test_llm_status(env, name);
        int match = s && strcmp(s, status) == 0;
        free(s);
        if (match)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed > timeout_ms)
            return -1;
        struct timespec pause = {0, 10 * 1000000L}; /* polling the API between checks */
        nanosleep(&pause, NULL);
    }
}

struct fixture *fixture_start(const char *const extra_args[], const char *providers_json)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->env = test_env_start(extra_args);
    if (f->env)
        f->fp = fake_publisher_start(f->env->mcpd.url, f->env->mcpd.token, providers_json, NULL);
    if (!f->fp) {
        test_env_stop(f->env);
        free(f);
        return NULL;
    }
    return f;
}

int fixture_stop(struct fixture *f)
{
    fake_publisher_stop(f->fp);
    int rc = test_env_stop(f->env);
    free(f);
    return rc;
}
