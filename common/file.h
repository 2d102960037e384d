/*
 * file.h - whole-file reads and atomic writes.
 */
#ifndef MCP_FILE_H
#define MCP_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* Reads all of path (at most max bytes) into a new NUL-terminated string;
 * caller frees *out. Returns 0, -1 with errno set, or -2 when over max. */
int file_read_all(const char *path, size_t max, char **out, size_t *len);

/* Writes data to path atomically: a temp file in the same directory with the
 * given mode, fsync, rename. Returns 0, or -1 with errno set. */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

#endif
