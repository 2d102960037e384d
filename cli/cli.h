/*
 * cli.h - mcpctl's commands: the command table, help texts and the one
 * place where errors are reported.
 *
 *   mcpctl [--server URL] [--token TOKEN] COMMAND ...
 *     get llm [NAME] [-o table|json|yaml]
 *     describe llm NAME
 *     chat-llm NAME [-m MESSAGE] [--system TEXT] [--no-stream]
 *              [--temperature X] [--max-tokens N]
 *     login --server URL --token TOKEN [--no-verify]
 *     help [COMMAND], version
 *
 * cli_main() is main() without the process: it reads the environment for
 * MCPCTL_URL, MCPCTL_TOKEN, MCPCTL_HOME and HOME, reads conversation input
 * from in, writes results to out and each error once, as one line
 * "mcpctl: <what went wrong>; <what to do>", to errf. It returns the exit
 * code (enum cli_exit in errors.h). libcurl must be initialised first.
 */
#ifndef MCPCTL_CLI_H
#define MCPCTL_CLI_H

#include <stdio.h>

#define CLI_LINE_MAX (1024 * 1024) /* longest conversation line read from input */

int cli_main(int argc, char **argv, FILE *in, FILE *out, FILE *errf);

#endif
