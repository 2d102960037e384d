#include "usage_format.h"

#include "table.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>

static const char *const COUNTS[] = {"requests", "errors", "promptTokens", "completionTokens"};
#define NCOUNTS (sizeof COUNTS / sizeof COUNTS[0])
#define NUM_MAX 24

/* The counts of obj as text, then (wide) prompt + completion. */
static void count_cells(const json_t *obj, bool wide, char cells[NCOUNTS + 1][NUM_MAX])
{
    for (size_t i = 0; i < NCOUNTS; i++) {
        json_t *v = json_object_get(obj, COUNTS[i]);
        if (json_is_integer(v))
            snprintf(cells[i], NUM_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else
            snprintf(cells[i], NUM_MAX, "-");
    }
    if (wide)
        snprintf(cells[NCOUNTS], NUM_MAX, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(obj, "promptTokens")) +
                     json_integer_value(json_object_get(obj, "completionTokens")));
}

/* Adds a row: three leading cells, then obj's counts. */
static int add_row(struct table *t, const char *day, const char *owner, const char *llm,
                   const json_t *obj, bool wide)
{
    char nums[NCOUNTS + 1][NUM_MAX];
    count_cells(obj, wide, nums);
    const char *cells[] = {day, owner, llm, nums[0], nums[1], nums[2], nums[3], nums[4]};
    return table_add_row(t, cells);
}

static int write_table(const json_t *value, bool wide, FILE *out)
{
    static const char *const cols[] = {
        "DAY",         "OWNER", "LLM", "REQUESTS", "ERRORS", "PROMPT-TOKENS", "COMPLETION-TOKENS",
        "TOTAL-TOKENS"};
    struct table *t = table_new(wide ? 8 : 7, cols);
    if (!t)
        return -1;
    int rc = -1;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(value, "usage"), i, row)
    {
        if (add_row(t, json_string_value(json_object_get(row, "day")),
                    json_string_value(json_object_get(row, "owner")),
                    json_string_value(json_object_get(row, "llm")), row, wide) < 0)
            goto out;
    }
    if (add_row(t, "TOTAL", "", "", json_object_get(value, "totals"), wide) < 0)
        goto out;
    rc = table_write(t, out);
out:
    table_free(t);
    return rc;
}

int usage_format_write(enum llm_output fmt, const json_t *value, FILE *out)
{
    if (fmt == LLM_OUTPUT_TABLE || fmt == LLM_OUTPUT_WIDE)
        return write_table(value, fmt == LLM_OUTPUT_WIDE, out);
    return llm_format_write(fmt, value, 0, out);
}
