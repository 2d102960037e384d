#include "table.h"

#include <stdlib.h>
#include <string.h>

struct table {
    size_t ncols;
    size_t nrows; /* rows including the header */
    size_t cap;
    char **cells; /* nrows * ncols, row-major; row 0 is the header */
};

size_t table_text_width(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

static char *clean_copy(const char *s)
{
    char *c = strdup(s ? s : "-");
    if (!c)
        return NULL;
    for (char *p = c; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return c;
}

static int add(struct table *t, const char *const cells[])
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **p = realloc(t->cells, cap * t->ncols * sizeof *p);
        if (!p)
            return -1;
        t->cells = p;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = clean_copy(cells[i]);
        if (!row[i]) {
            while (i-- > 0)
                free(row[i]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

struct table *table_new(size_t ncols, const char *const headers[])
{
    struct table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = ncols;
    if (ncols == 0 || add(t, headers) < 0) {
        table_free(t);
        return NULL;
    }
    return t;
}

void table_free(struct table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

int table_add_row(struct table *t, const char *const cells[])
{
    return add(t, cells);
}

size_t table_rows(const struct table *t)
{
    return t->nrows - 1;
}

int table_write(const struct table *t, FILE *out)
{
    size_t *width = calloc(t->ncols, sizeof *width);
    if (!width)
        return -1;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t w = table_text_width(t->cells[r * t->ncols + c]);
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        char **row = t->cells + r * t->ncols;
        size_t last = t->ncols - 1; /* the last non-empty cell: nothing is padded after it */
        while (last > 0 && row[last][0] == '\0')
            last--;
        for (size_t c = 0; c <= last; c++) {
            const char *cell = row[c];
            fputs(cell, out);
            if (c < last) {
                size_t pad = width[c] - table_text_width(cell) + TABLE_GAP;
                for (size_t i = 0; i < pad; i++)
                    fputc(' ', out);
            }
        }
        fputc('\n', out);
    }
    free(width);
    return ferror(out) ? -1 : 0;
}
