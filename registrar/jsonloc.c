#include "jsonloc.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct scan {
    const char *s;
    size_t n;
    size_t i;
    int line;
};

#define MAX_DEPTH 64

static void skip_ws(struct scan *sc)
{
    while (sc->i < sc->n) {
        char c = sc->s[sc->i];
        if (c == '\n')
            sc->line++;
        else if (c != ' ' && c != '\t' && c != '\r')
            return;
        sc->i++;
    }
}

/* Skips a string starting at the opening quote; start and slen receive its raw
 * contents. Returns 0 or -1. */
static int skip_string(struct scan *sc, const char **start, size_t *slen)
{
    if (sc->i >= sc->n || sc->s[sc->i] != '"')
        return -1;
    sc->i++;
    size_t b = sc->i;
    while (sc->i < sc->n && sc->s[sc->i] != '"') {
        if (sc->s[sc->i] == '\\')
            sc->i++;
        else if (sc->s[sc->i] == '\n')
            sc->line++;
        sc->i++;
    }
    if (sc->i >= sc->n)
        return -1;
    if (start)
        *start = sc->s + b;
    if (slen)
        *slen = sc->i - b;
    sc->i++;
    return 0;
}

static int skip_value(struct scan *sc, int depth)
{
    if (depth > MAX_DEPTH)
        return -1;
    skip_ws(sc);
    if (sc->i >= sc->n)
        return -1;
    char c = sc->s[sc->i];
    if (c == '"')
        return skip_string(sc, NULL, NULL);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        sc->i++;
        skip_ws(sc);
        if (sc->i < sc->n && sc->s[sc->i] == close) {
            sc->i++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                skip_ws(sc);
                if (skip_string(sc, NULL, NULL) < 0)
                    return -1;
                skip_ws(sc);
                if (sc->i >= sc->n || sc->s[sc->i] != ':')
                    return -1;
                sc->i++;
            }
            if (skip_value(sc, depth + 1) < 0)
                return -1;
            skip_ws(sc);
            if (sc->i >= sc->n)
                return -1;
            if (sc->s[sc->i] == ',') {
                sc->i++;
                continue;
            }
            if (sc->s[sc->i] == close) {
                sc->i++;
                return 0;
            }
            return -1;
        }
    }
    /* number or literal */
    size_t b = sc->i;
    while (sc->i < sc->n && !strchr(",}] \t\r\n", sc->s[sc->i]))
        sc->i++;
    return sc->i > b ? 0 : -1;
}

/* Walks to the value at path (already positioned before it). Returns the
 * line of the deepest value reached. */
static int locate(struct scan *sc, const char *path, int depth)
{
    skip_ws(sc);
    int here = sc->line;
    if (*path == '\0' || depth > MAX_DEPTH || sc->i >= sc->n)
        return here;
    if (*path == '.')
        path++;
    if (*path == '[') {
        char *end = NULL;
        long want = strtol(path + 1, &end, 10);
        if (!end || *end != ']' || sc->s[sc->i] != '[')
            return here;
        const char *rest = end + 1;
        sc->i++;
        skip_ws(sc);
        if (sc->i < sc->n && sc->s[sc->i] == ']')
            return here;
        for (long idx = 0;; idx++) {
            if (idx == want)
                return locate(sc, rest, depth + 1);
            if (skip_value(sc, depth + 1) < 0)
                return here;
            skip_ws(sc);
            if (sc->i >= sc->n || sc->s[sc->i] != ',')
                return here;
            sc->i++;
        }
    }
    size_t klen = strcspn(path, ".[");
    const char *rest = path + klen;
    if (sc->s[sc->i] != '{')
        return here;
    sc->i++;
    for (;;) {
        skip_ws(sc);
        const char *k = NULL;
        size_t kl = 0;
        if (skip_string(sc, &k, &kl) < 0)
            return here;
        skip_ws(sc);
        if (sc->i >= sc->n || sc->s[sc->i] != ':')
            return here;
        sc->i++;
        if (kl == klen && memcmp(k, path, klen) == 0)
            return locate(sc, rest, depth + 1);
        if (skip_value(sc, depth + 1) < 0)
            return here;
        skip_ws(sc);
        if (sc->i >= sc->n || sc->s[sc->i] != ',')
            return here;
        sc->i++;
    }
}

int jsonloc_line(const char *text, size_t len, const char *path)
{
    if (!text)
        return 0;
    struct scan sc = {text, len, 0, 1};
    return locate(&sc, path, 0);
}

void jsonloc_error(char *err, size_t errlen, const char *what, const char *file, const char *text,
                   size_t len, const char *path, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    int line = jsonloc_line(text, len, path);
    if (path[0])
        snprintf(err, errlen, "%s '%s' line %d: %s: %s", what, file, line, path, reason);
    else
        snprintf(err, errlen, "%s '%s' line %d: %s", what, file, line, reason);
}
