/*
 * errors.h - mcpctl's exit codes and the one-line error every failure carries.
 *
 * Every failure in mcpctl belongs to one class, and each class has its own
 * exit code so scripts can tell "mcpd is down" from "that Llm does not exist"
 * without reading stderr. The codes are part of mcpctl's interface and are
 * documented in docs/mcpctl.md; never renumber them.
 *
 * Modules below main report a failure by filling a struct cli_error (class and
 * message) and returning -1; only the command layer prints it, once, as
 * "mcpctl: <message>" on stderr.
 */
#ifndef MCPCTL_ERRORS_H
#define MCPCTL_ERRORS_H

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,       /* anything else: unexpected reply, local I/O error */
    CLI_EXIT_USAGE = 2,       /* bad command line, missing or invalid configuration */
    CLI_EXIT_UNREACHABLE = 3, /* cannot connect to mcpd, or the connection was lost */
    CLI_EXIT_AUTH = 4,        /* the token was rejected (401/403) */
    CLI_EXIT_NOT_FOUND = 5,   /* no Llm by that name (404) */
    CLI_EXIT_UNAVAILABLE = 6, /* the Llm's publisher is offline or asleep (503) */
    CLI_EXIT_INFER = 7,       /* the inference failed or timed out (502, 504, error frame) */
};

#define CLI_ERROR_MSG_MAX 1024

struct cli_error {
    int code; /* enum cli_exit; CLI_EXIT_OK while no error was recorded */
    char msg[CLI_ERROR_MSG_MAX];
};

/* Records class code and a formatted message (lowercase, no trailing full
 * stop, subjects quoted). Always returns -1 so callers can write
 * `return cli_error_set(err, ...)`. err may be NULL. */
int cli_error_set(struct cli_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Forgets any recorded error. */
void cli_error_clear(struct cli_error *err);

/* strerror(errnum) with a lowercase first letter, as messages want it.
 * Returns a thread-local buffer, valid until the next call. */
const char *cli_strerror(int errnum);

/* A short name for an exit code ("usage", "unreachable"...), for docs/tests. */
const char *cli_exit_name(int code);

#endif
