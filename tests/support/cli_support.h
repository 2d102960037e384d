/*
 * cli_support.h - helpers for mcpctl's tests: run the mcpctl binary in an
 * isolated environment, and read its YAML output back as JSON.
 *
 * Exported names start with cli_t_ so they cannot clash with mcpctl_core,
 * which unit tests link next to this library.
 */
#ifndef TEST_CLI_SUPPORT_H
#define TEST_CLI_SUPPORT_H

#include "fake_publisher.h"
#include "test_env.h"

#include <jansson.h>
#include <stddef.h>

struct cli_t_result {
    int code;  /* exit code as proc_run() reports it */
    char *out; /* stdout, never NULL after cli_t_run() */
    char *err; /* stderr, never NULL after cli_t_run() */
};

/* Runs MCPCTL_BIN with args (NULL-terminated, without argv[0]). The
 * environment is the test's own with MCPCTL_HOME=home and MCPCTL_URL,
 * MCPCTL_TOKEN, MCPCTL_CACERT emptied (unset for mcpctl), then env (NULL-terminated "K=V"
 * list, may be NULL) on top. stdin_data may be NULL. Returns r->code. */
int cli_t_run(const char *home, const char *const env[], const char *stdin_data,
              const char *const args[], struct cli_t_result *r);
void cli_t_result_free(struct cli_t_result *r);

/* Marks every open descriptor above 2 close-on-exec. libcurl's sockets are
 * not, so without this a child would keep a copy of, say, a fake
 * publisher's control stream open after the publisher closed it, and mcpd
 * would never see it go. cli_t_run() calls it before each run. */
void cli_t_cloexec_all(void);

/* A running mcpd (owner "alice" has env->mcpd.token), optionally a fake
 * publisher holding its control stream, and a home directory for mcpctl. */
struct cli_t_env {
    struct test_env *env;
    struct fake_publisher *pub; /* NULL when no providers were given */
    char *home;                 /* MCPCTL_HOME for mcpctl runs (empty at start) */
    char url_kv[128];           /* "MCPCTL_URL=http://127.0.0.1:PORT" */
    char token_kv[256];         /* "MCPCTL_TOKEN=<alice's token>" */
};

/* Starts mcpd with mcpd_args (NULL-terminated or NULL) and, when
 * providers_json (a JSON array of ProviderInput) is not NULL, a fake
 * publisher for alice. Returns 0 or -1 (details on stderr). */
int cli_t_env_start(struct cli_t_env *e, const char *const mcpd_args[], const char *providers_json);
/* Stops the publisher and mcpd and removes the files. Returns mcpd's exit
 * code (0 for a clean shutdown). */
int cli_t_env_stop(struct cli_t_env *e);
/* cli_t_run() with e's home and MCPCTL_URL/MCPCTL_TOKEN set for alice. */
int cli_t_run_env(struct cli_t_env *e, const char *stdin_data, const char *const args[],
                  struct cli_t_result *r);

/* cli_t_run_env() that fails the running cmocka test, showing both
 * outputs, unless mcpctl exits with want. */
void cli_t_run_env_expect(struct cli_t_env *e, int want, const char *stdin_data,
                          const char *const args[], struct cli_t_result *r);

/* A TCP port on 127.0.0.1 that nothing listens on (bound, then closed). */
int cli_t_closed_port(void);

/* Parses one YAML document into a new JSON value (caller decrefs): mappings
 * become objects, sequences arrays; quoted scalars are strings; plain ones
 * are resolved like YAML 1.2's core schema (null, true/false, integers,
 * floats, else strings). Returns NULL with a message in err on failure.
 * libyaml is loaded at run time, as this library does not link it. */
json_t *cli_t_yaml_to_json(const char *text, char *err, size_t errlen);

/* Writes text to path (mode 0600). Returns 0 or -1. */
int cli_t_write_file(const char *path, const char *text);

#endif
