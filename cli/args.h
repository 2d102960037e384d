/*
 * args.h - command-line option parsing for mcpctl's commands.
 *
 * Each command declares its options as a table of struct cli_opt. The parser
 * accepts "--name VALUE", "--name=VALUE", "-x VALUE" and "-xVALUE"; "--" ends
 * the options and a lone "-" is a positional argument. Options and positional
 * arguments may be mixed. Nothing is copied: values point into argv.
 *
 * The parser never prints; a bad command line becomes a CLI_EXIT_USAGE error
 * whose message names the offending argument.
 */
#ifndef MCPCTL_ARGS_H
#define MCPCTL_ARGS_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>

struct cli_opt {
    const char *long_name; /* without the leading "--" */
    char short_name;       /* 0 when the option has no short form */
    bool has_value;        /* true when the option takes an argument */
    int id;                /* what cli_args_get() is asked for */
};

#define CLI_ARGS_MAX 64

struct cli_args {
    const char *pos[CLI_ARGS_MAX]; /* positional arguments, borrowed from argv */
    size_t npos;
    struct {
        int id;
        const char *value; /* NULL for options without a value */
    } opt[CLI_ARGS_MAX];
    size_t nopt;
    int stopped_at; /* with stop_at_positional: index of the first positional, else argc */
};

/* Parses argv[0..argc) against the nspecs options of specs. ctx names the
 * command in the hints of error messages ("run 'mcpctl get --help'"). With stop_at_positional,
 * parsing ends at the first positional argument (left in argv at out->stopped_at, not added to
 * out->pos). Returns 0, or -1 with a CLI_EXIT_USAGE error. */
int cli_args_parse(int argc, char **argv, const struct cli_opt *specs, size_t nspecs,
                   const char *ctx, bool stop_at_positional, struct cli_args *out,
                   struct cli_error *err);

/* The value of the last occurrence of option id, or NULL when it was not
 * given (or takes no value). */
const char *cli_args_get(const struct cli_args *a, int id);
/* True when option id was given at least once. */
bool cli_args_has(const struct cli_args *a, int id);

/* Parses a finite decimal number (all of s). Returns 0 or -1. */
int cli_parse_double(const char *s, double *out);
/* Parses a whole number in [min, max] (all of s). Returns 0 or -1. */
int cli_parse_long(const char *s, long min, long max, long *out);

#endif
