/*
 * tmpdir.h - a private temporary directory per test, removed afterwards.
 */
#ifndef TEST_TMPDIR_H
#define TEST_TMPDIR_H

#include <sys/types.h>

/* Creates a fresh directory under $TMPDIR (or /tmp); returns a new path the
 * caller frees with tmpdir_remove(). Aborts the test run when it cannot. */
char *tmpdir_create(const char *prefix);
/* Deletes the directory tree and frees path. NULL is a no-op. */
void tmpdir_remove(char *path);
/* Returns a new string "dir/name"; caller frees. */
char *tmpdir_path(const char *dir, const char *name);
/* Writes text to dir/name with the given permission bits; aborts the test
 * run when it cannot. */
void tmpdir_write(const char *dir, const char *name, const char *text, mode_t mode);

#endif
