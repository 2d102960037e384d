/*
 * proc.h - run the project's binaries from tests.
 *
 * proc_start() runs a program in the background with its stdout and stderr
 * collected into one transcript that tests can wait on ("wait until the log
 * says X"). proc_run() runs one to completion with stdin fed from a string
 * and stdout/stderr captured separately.
 */
#ifndef TEST_PROC_H
#define TEST_PROC_H

#include <sys/types.h>

struct proc;

/* argv[0] is the program path; env lists extra "K=V" entries (NULL-terminated,
 * may be NULL) added to the test's own environment; cwd may be NULL.
 * Returns NULL when the program could not be started. */
struct proc *proc_start(const char *const argv[], const char *const env[], const char *cwd);

/* Waits until the transcript contains needle. Returns 0, or -1 when the
 * timeout passed or the program ended first. */
int proc_wait_for(struct proc *p, const char *needle, int timeout_ms);
/* Like proc_wait_for(), but counts: waits for the count-th occurrence. */
int proc_wait_for_nth(struct proc *p, const char *needle, int count, int timeout_ms);
/* Returns a copy of the transcript so far; caller frees. */
char *proc_output(struct proc *p);
/* Prints the transcript so far to stderr, for a failing test's report. */
void proc_dump(struct proc *p);
/* proc_wait_for_nth() that fails the running cmocka test, with the
 * transcript printed, when the count-th needle does not come in time. */
void proc_expect(struct proc *p, const char *needle, int count, int timeout_ms);
pid_t proc_pid(const struct proc *p);
int proc_signal(struct proc *p, int sig);
/* Waits for the program to end. Returns its exit code, 128+signal when it was
 * killed by one, or -1 when the timeout passed (it is then left running). */
int proc_wait_exit(struct proc *p, int timeout_ms);
/* Kills the program if it still runs (SIGKILL) and frees everything. */
void proc_free(struct proc *p);
/* Stops p as a service manager would (SIGTERM, then waits up to timeout_ms),
 * prints its output when it did not exit 0, and frees it (killing it if it
 * still runs). Returns what proc_wait_exit() did. NULL is a no-op returning
 * 0. */
int proc_stop(struct proc *p, int timeout_ms);

/* The absolute path of the executable name found on PATH, as a new
 * string, or NULL. */
char *proc_find_program(const char *name);

/* Runs argv to completion (killed after timeout_ms). stdin_data may be NULL
 * (empty stdin). *out and *err receive new strings when non-NULL. Returns the
 * exit code as proc_wait_exit() does. */
int proc_run(const char *const argv[], const char *const env[], const char *stdin_data, char **out,
             char **err, int timeout_ms);

#endif
