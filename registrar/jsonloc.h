/*
 * jsonloc.h - find the line of a value inside JSON text, for error messages.
 *
 * jansson reports line and column for syntax errors but keeps no positions
 * for values, so a config that parses but is wrong ("type" is not "openai")
 * could only be blamed on the whole file. jsonloc re-walks the text to find
 * where a value given by a path such as "llm.providers[1].wake.url" starts.
 * Pure; allocates nothing.
 */
#ifndef MCPLOCAL_JSONLOC_H
#define MCPLOCAL_JSONLOC_H

#include <stddef.h>

/* The 1-based line where the value at path starts. When path does not exist
 * (a missing field), the line of its deepest existing ancestor. path is
 * dotted keys with [N] for array elements; "" is the root. Keys containing
 * '.', '[' or escapes cannot be addressed. Returns 0 when text is not JSON. */
int jsonloc_line(const char *text, size_t len, const char *path);

/* Formats "WHAT 'FILE' line N: PATH: REASON" into err (PATH and its colon
 * left out when path is ""). */
void jsonloc_error(char *err, size_t errlen, const char *what, const char *file, const char *text,
                   size_t len, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

#endif
