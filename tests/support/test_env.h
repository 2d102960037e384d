/*
 * test_env.h - per-test fixture for mcpd integration tests: a temp dir and
 * a running mcpd, plus helpers to call it.
 */
#ifndef TEST_ENV_H
#define TEST_ENV_H

#include "http.h"
#include "mcpd_harness.h"

struct test_env {
    char *dir;
    struct mcpd mcpd;
};

/* Starts mcpd in a fresh temp dir with extra_args (NULL-terminated or NULL).
 * Returns a new env, or NULL. */
struct test_env *test_env_start(const char *const extra_args[]);
/* Stops mcpd (its exit code must be 0 for a clean shutdown; returned) and
 * removes the temp dir. */
int test_env_stop(struct test_env *env);

/* mcpd plus a fake publisher that registered providers_json and holds its
 * stream: the fixture of the relay and wake tests. */
struct fixture {
    struct test_env *env;
    struct fake_publisher *fp;
};

/* Starts both (mcpd with extra_args); returns a new fixture or NULL. */
struct fixture *fixture_start(const char *const extra_args[], const char *providers_json);
/* Stops both; returns mcpd's exit code (0 after a clean shutdown). */
int fixture_stop(struct fixture *f);

/* Calls path on env's mcpd with the given token (NULL = none); headers and
 * body as for http_do(). */
int test_call(struct test_env *env, const char *method, const char *path, const char *token,
              const char *const headers[], const char *body, struct http_resp *out);
/* Registers providers_json (a JSON array) with token, under session when
 * not NULL; *status gets the answer's status. Returns the session id, a new
 * string, when it is 200, else NULL. */
char *test_register(struct test_env *env, const char *token, const char *session,
                    const char *providers_json, long *status);
/* Fetches GET /api/v1/llms/NAME's "status" into a new string (or NULL). */
char *test_llm_status(struct test_env *env, const char *name);
/* Waits until test_llm_status(name) equals status. 0 or -1. */
int test_wait_status(struct test_env *env, const char *name, const char *status, int timeout_ms);

#endif
