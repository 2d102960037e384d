/*
 * table.h - plain-text tables in kubectl's style.
 *
 * One header line, then one line per row; every column left-aligned and
 * padded to its widest cell, columns separated by three spaces, no trailing
 * blanks. Widths count UTF-8 characters, not bytes. Control characters in
 * cells (a newline in a description, say) are shown as spaces so a row always
 * stays on one line.
 */
#ifndef MCPCTL_TABLE_H
#define MCPCTL_TABLE_H

#include <stddef.h>
#include <stdio.h>

#define TABLE_GAP 3

struct table;

/* Returns a new table with ncols columns named by headers (copied), or NULL
 * when out of memory. Caller frees with table_free(). */
struct table *table_new(size_t ncols, const char *const headers[]);
/* Frees the table. NULL is a no-op. */
void table_free(struct table *t);

/* Appends a row of ncols cells (copied; a NULL cell is shown as "-").
 * Returns 0, or -1 when out of memory. */
int table_add_row(struct table *t, const char *const cells[]);
/* Number of rows added so far (the header not counted). */
size_t table_rows(const struct table *t);

/* Writes the header and every row to out. Returns 0, or -1 on a write error. */
int table_write(const struct table *t, FILE *out);

/* Display width of the UTF-8 string s: the number of characters, not bytes. */
size_t table_text_width(const char *s);

#endif
