#include "promtext.h"
#include "proc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int prom_check(const char *text, char **report)
{
    char *promtool = proc_find_program("promtool");
    if (!promtool) {
        if (report)
            *report = strdup("promtool is not on PATH (scripts/install-deps installs Debian's "
                             "prometheus package, which has it)");
        return -1;
    }
    const char *argv[] = {promtool, "check", "metrics", NULL};
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, NULL, text, &out, &err, 30000);
    free(promtool);
    if (report) {
        size_t n = strlen(out ? out : "") + strlen(err ? err : "") + 64;
        *report = malloc(n);
        snprintf(*report, n, "promtool exit %d: %s%s", rc, out ? out : "", err ? err : "");
    }
    free(out);
    free(err);
    return rc == 0 ? 0 : -1;
}

double prom_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

double prom_histogram_count(const char *text, const char *name, const char *labels)
{
    char prefix[512], series[512];
    snprintf(prefix, sizeof prefix, "%s_bucket{%s%sle=\"", name, labels, labels[0] ? "," : "");
    size_t plen = strlen(prefix);
    double last = -1;
    int buckets = 0;
    bool inf = false;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, prefix, plen) == 0) {
            const char *close = strstr(line + plen, "\"} ");
            if (!close || inf) {
                fprintf(stderr, "%s: a bucket after +Inf, or a malformed one\n", name);
                return -1;
            }
            double v = strtod(close + 3, NULL);
            if (v < last) {
                fprintf(stderr, "%s{%s}: buckets not cumulative (%g after %g)\n", name, labels, v,
                        last);
                return -1;
            }
            last = v;
            buckets++;
            inf = strncmp(line + plen, "+Inf\"", 5) == 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (buckets < 2 || !inf) {
        fprintf(stderr, "%s{%s}: %d buckets, %s +Inf\n", name, labels, buckets,
                inf ? "ending with" : "without");
        return -1;
    }
    snprintf(series, sizeof series, "%s_count%s%s%s", name, labels[0] ? "{" : "", labels,
             labels[0] ? "}" : "");
    double count = prom_value(text, series);
    if (count != last) {
        fprintf(stderr, "%s: +Inf bucket %g but count %g\n", series, last, count);
        return -1;
    }
    snprintf(series, sizeof series, "%s_sum%s%s%s", name, labels[0] ? "{" : "", labels,
             labels[0] ? "}" : "");
    if (prom_value(text, series) < 0) {
        fprintf(stderr, "%s: missing\n", series);
        return -1;
    }
    return count;
}
