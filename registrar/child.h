/*
 * child.h - child processes that join the loop (command wake recipes).
 *
 * A child is started from an argument vector with posix_spawnp(): no shell
 * ever sees the arguments, so spaces, quotes, `;`, `$(...)` and globs reach
 * the program literally. Its stdin is /dev/null; stdout and stderr go into a
 * pipe the loop reads, handed line by line to the spawner's line callback.
 * It gets its own process group (a Ctrl-C aimed at mcplocal does not hit a
 * backend the recipe started) and default signal handling. Its exit is
 * noticed through a pidfd in the loop (or a short timer where pidfds are not
 * available) and reaped with waitpid().
 *
 * A child may outlive its owner: child_detach() hands it to the spawner,
 * which keeps logging its output and reaps it. spawner_free() forgets
 * children without killing them (a recipe may have started a server that
 * must keep running).
 */
#ifndef MCPLOCAL_CHILD_H
#define MCPLOCAL_CHILD_H

#include "loop.h"

#include <stddef.h>
#include <sys/types.h>

struct spawner;
struct child;

/* One line of a child's output (without the newline); borrowed. */
typedef void (*child_line_fn)(void *ud, const char *tag, const char *line);
/* The child ended; status is as from waitpid(). */
typedef void (*child_exit_fn)(void *ud, int status);

/* Returns a new spawner (free with spawner_free()), or NULL. */
struct spawner *spawner_new(struct loop *l, child_line_fn on_line, void *ud);
/* Stops watching every child and frees them; running children keep running.
 * NULL is a no-op. */
void spawner_free(struct spawner *s);

/* Starts argv[0] (searched in PATH when it has no slash) with argv. tag
 * (copied) is passed to the line callback. on_exit is called once when the
 * child ends, unless detached first. Returns 0 and the child in *out, or -1
 * with the reason in err (the program was not found, for instance). */
int spawner_run(struct spawner *s, char *const argv[], const char *tag, child_exit_fn on_exit,
                void *ud, struct child **out, char *err, size_t errlen);

/* The owner lets go: no exit callback any more; the spawner frees the child
 * once it has ended and its output is drained. Call exactly once. */
void child_detach(struct child *c);
pid_t child_pid(const struct child *c);

#endif
