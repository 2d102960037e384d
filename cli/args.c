#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_opt *find_long(const struct cli_opt *specs, size_t n, const char *name,
                                       size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(specs[i].long_name) == len && strncmp(specs[i].long_name, name, len) == 0)
            return &specs[i];
    return NULL;
}

static const struct cli_opt *find_short(const struct cli_opt *specs, size_t n, char c)
{
    for (size_t i = 0; i < n; i++)
        if (specs[i].short_name && specs[i].short_name == c)
            return &specs[i];
    return NULL;
}

static int add_opt(struct cli_args *out, int id, const char *value, const char *ctx,
                   struct cli_error *err)
{
    if (out->nopt >= CLI_ARGS_MAX)
        return cli_error_set(err, CLI_EXIT_USAGE, "too many options; run '%s --help' for usage",
                             ctx);
    out->opt[out->nopt].id = id;
    out->opt[out->nopt].value = value;
    out->nopt++;
    return 0;
}

static int add_pos(struct cli_args *out, const char *arg, const char *ctx, struct cli_error *err)
{
    if (out->npos >= CLI_ARGS_MAX)
        return cli_error_set(err, CLI_EXIT_USAGE, "too many arguments; run '%s --help' for usage",
                             ctx);
    out->pos[out->npos++] = arg;
    return 0;
}

int cli_args_parse(int argc, char **argv, const struct cli_opt *specs, size_t nspecs,
                   const char *ctx, bool stop_at_positional, struct cli_args *out,
                   struct cli_error *err)
{
    memset(out, 0, sizeof *out);
    out->stopped_at = argc;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool is_opt = !only_pos && a[0] == '-' && a[1] != '\0';
        if (!is_opt) {
            if (stop_at_positional) {
                out->stopped_at = i;
                return 0;
            }
            if (add_pos(out, a, ctx, err) < 0)
                return -1;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        const struct cli_opt *spec;
        const char *value = NULL;
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            spec = find_long(specs, nspecs, name, len);
            if (!spec)
                return cli_error_set(err, CLI_EXIT_USAGE,
                                     "unknown option '--%.*s'; run '%s --help' for usage", (int)len,
                                     name, ctx);
            if (eq && !spec->has_value)
                return cli_error_set(err, CLI_EXIT_USAGE,
                                     "option '--%s' takes no value; run '%s --help' for usage",
                                     spec->long_name, ctx);
            if (eq)
                value = eq + 1;
        } else {
            spec = find_short(specs, nspecs, a[1]);
            if (!spec)
                return cli_error_set(err, CLI_EXIT_USAGE,
                                     "unknown option '-%c'; run '%s --help' for usage", a[1], ctx);
            if (a[2] != '\0') {
                if (!spec->has_value)
                    return cli_error_set(err, CLI_EXIT_USAGE,
                                         "option '-%c' takes no value; run '%s --help' for usage",
                                         a[1], ctx);
                value = a + 2;
            }
        }
        if (spec->has_value && !value) {
            if (i + 1 >= argc)
                return cli_error_set(err, CLI_EXIT_USAGE,
                                     "option '%s' needs a value; run '%s --help' for usage", a,
                                     ctx);
            value = argv[++i];
        }
        if (add_opt(out, spec->id, value, ctx, err) < 0)
            return -1;
    }
    return 0;
}

const char *cli_args_get(const struct cli_args *a, int id)
{
    const char *v = NULL;
    for (size_t i = 0; i < a->nopt; i++)
        if (a->opt[i].id == id)
            v = a->opt[i].value;
    return v;
}

bool cli_args_has(const struct cli_args *a, int id)
{
    for (size_t i = 0; i < a->nopt; i++)
        if (a->opt[i].id == id)
            return true;
    return false;
}

int cli_parse_double(const char *s, double *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int cli_parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}
