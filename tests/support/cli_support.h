/*
 * cli_support.h - helpers for mcpctl's tests: run the mcpctl binary in an
 * isolated environment, and read its YAML output back as JSON.
 *
 * Exported names start with cli_t_ so they cannot clash with mcpctl_core,
 * which unit tests link next to this library.
 */
#ifndef TEST_CLI_SUPPORT_H
#define TEST_CLI_SUPPORT_H

#include <jansson.h>
#include <stddef.h>

struct cli_t_result {
    int code;  /* exit code as proc_run() reports it */
    char *out; /* stdout, never NULL after cli_t_run() */
    char *err; /* stderr, never NULL after cli_t_run() */
};

/* Runs MCPCTL_BIN with args (NULL-terminated, without argv[0]). The
 * environment is the test's own with MCPCTL_HOME=home and MCPCTL_URL,
 * MCPCTL_TOKEN emptied (unset for mcpctl), then env (NULL-terminated "K=V"
 * list, may be NULL) on top. stdin_data may be NULL. Returns r->code. */
int cli_t_run(const char *home, const char *const env[], const char *stdin_data,
              const char *const args[], struct cli_t_result *r);
void cli_t_result_free(struct cli_t_result *r);

/* Parses one YAML document into a new JSON value (caller decrefs): mappings
 * become objects, sequences arrays; quoted scalars are strings; plain ones
 * are resolved like YAML 1.2's core schema (null, true/false, integers,
 * floats, else strings). Returns NULL with a message in err on failure.
 * libyaml is loaded at run time, as this library does not link it. */
json_t *cli_t_yaml_to_json(const char *text, char *err, size_t errlen);

/* Writes text to path (mode 0600). Returns 0 or -1. */
int cli_t_write_file(const char *path, const char *text);

#endif
