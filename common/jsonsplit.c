#include "jsonsplit.h"

void jsonsplit_init(struct jsonsplit *s)
{
    *s = (struct jsonsplit){0};
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int jsonsplit_next(struct jsonsplit *s, const char *buf, size_t len, size_t *start, size_t *end)
{
    for (; s->pos < len; s->pos++) {
        char c = buf[s->pos];
        if (s->depth == 0) {
            if (is_ws(c))
                continue;
            if (c != '{')
                return JSONSPLIT_BAD;
            s->start = s->pos;
            s->depth = 1;
            continue;
        }
        if (s->in_string) {
            if (s->escape)
                s->escape = false;
            else if (c == '\\')
                s->escape = true;
            else if (c == '"')
                s->in_string = false;
            continue;
        }
        switch (c) {
        case '"':
            s->in_string = true;
            break;
        case '{':
        case '[':
            if (++s->depth > JSONSPLIT_MAX_DEPTH)
                return JSONSPLIT_BAD;
            break;
        case '}':
        case ']':
            if (--s->depth == 0) {
                *start = s->start;
                *end = ++s->pos;
                return JSONSPLIT_OBJECT;
            }
            break;
        default:
            break;
        }
    }
    return JSONSPLIT_MORE;
}
