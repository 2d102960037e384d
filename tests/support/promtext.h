/*
 * promtext.h - Prometheus text exposition in tests: validated by
 * Prometheus's own parser and linter (`promtool check metrics`, from
 * Debian's prometheus package, which scripts/install-deps installs), then
 * read sample by sample.
 */
#ifndef TEST_PROMTEXT_H
#define TEST_PROMTEXT_H

/* Runs `promtool check metrics` on text. 0 when it accepts it (parse and
 * lint), else -1 with promtool's report, or why it could not run, in
 * *report (a new string; may be NULL when report is NULL). */
int prom_check(const char *text, char **report);

/* The value of the sample whose name and labels are exactly series, e.g.
 * "mcpd_wakes_total{outcome=\"ok\"}" (labels as the server writes them);
 * -1 when text has no such sample. */
double prom_value(const char *text, const char *series);

/* Checks histogram name{labels,le=...}: buckets cumulative and ending
 * with +Inf, whose count equals name_count. labels is "" or the pairs
 * before le, e.g. "route=\"/v1/chat/completions\"". Returns the count, or
 * -1 (with the reason on stderr) when the histogram is absent or broken. */
double prom_histogram_count(const char *text, const char *name, const char *labels);

#endif
