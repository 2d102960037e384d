#include "jsonscan.h"

#include <string.h>

struct scanner {
    const char *p;
    const char *end;
    int depth;
};

static void skip_ws(struct scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Validates one UTF-8 sequence starting at s->p (a byte >= 0x80). */
static int scan_utf8(struct scanner *s)
{
    const unsigned char *p = (const unsigned char *)s->p;
    const unsigned char *end = (const unsigned char *)s->end;
    unsigned c = p[0];
    int n;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        min = 0x10000;
    } else {
        return -1;
    }
    if (end - p <= n)
        return -1;
    unsigned cp = c & (0x3f >> n);
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    s->p += n + 1;
    return 0;
}

static int scan_string(struct scanner *s)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        /* Fast path: plain printable ASCII, the bulk of any request. */
        const unsigned char *q = (const unsigned char *)s->p;
        const unsigned char *end = (const unsigned char *)s->end;
        while (q < end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
            q++;
        s->p = (const char *)q;
        if (q == end)
            break;
        unsigned char c = *q;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (++s->p >= s->end)
                return -1;
            char e = *s->p;
            if (e == 'u') {
                if (s->end - s->p < 5)
                    return -1;
                for (int i = 1; i <= 4; i++)
                    if (hexval(s->p[i]) < 0)
                        return -1;
                s->p += 5;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                s->p++;
            } else {
                return -1;
            }
        } else if (c >= 0x80) {
            if (scan_utf8(s) < 0)
                return -1;
        } else {
            s->p++;
        }
    }
    return -1;
}

static int scan_digits(struct scanner *s)
{
    const char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start ? 0 : -1;
}

static int scan_number(struct scanner *s)
{
    if (*s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return -1;
    if (*s->p == '0')
        s->p++;
    else if (scan_digits(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (scan_digits(s) < 0)
            return -1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (scan_digits(s) < 0)
            return -1;
    }
    return 0;
}

static int scan_literal(struct scanner *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int scan_value(struct scanner *s, enum json_kind *kind, struct jsonscan *top);

static int scan_object(struct scanner *s, struct jsonscan *top)
{
    s->p++; /* { */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return -1;
        const char *key = s->p + 1;
        if (scan_string(s) < 0)
            return -1;
        size_t key_len = (size_t)(s->p - 1 - key);
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -1;
        s->p++;
        skip_ws(s);
        const char *val = s->p;
        enum json_kind kind;
        if (scan_value(s, &kind, NULL) < 0)
            return -1;
        if (top && top->n < JSONSCAN_MAX_FIELDS) {
            struct json_field *f = &top->f[top->n++];
            f->key = key;
            f->key_len = key_len;
            f->val = val;
            f->val_len = (size_t)(s->p - val);
            f->kind = kind;
        }
        skip_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == '}') {
            s->p++;
            return 0;
        }
        if (*s->p != ',')
            return -1;
        s->p++;
    }
}

static int scan_array(struct scanner *s)
{
    s->p++; /* [ */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        skip_ws(s);
        enum json_kind kind;
        if (scan_value(s, &kind, NULL) < 0)
            return -1;
        skip_ws(s);
        if (s->p >= s->end)
            return -1;
        if (*s->p == ']') {
            s->p++;
            return 0;
        }
        if (*s->p != ',')
            return -1;
        s->p++;
    }
}

static int scan_value(struct scanner *s, enum json_kind *kind, struct jsonscan *top)
{
    if (s->p >= s->end)
        return -1;
    int rc;
    switch (*s->p) {
    case '{':
        if (++s->depth > JSONSCAN_MAX_DEPTH)
            return -1;
        *kind = JSON_K_OBJECT;
        rc = scan_object(s, top);
        s->depth--;
        return rc;
    case '[':
        if (++s->depth > JSONSCAN_MAX_DEPTH)
            return -1;
        *kind = JSON_K_ARRAY;
        rc = scan_array(s);
        s->depth--;
        return rc;
    case '"':
        *kind = JSON_K_STRING;
        return scan_string(s);
    case 't':
        *kind = JSON_K_TRUE;
        return scan_literal(s, "true");
    case 'f':
        *kind = JSON_K_FALSE;
        return scan_literal(s, "false");
    case 'n':
        *kind = JSON_K_NULL;
        return scan_literal(s, "null");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            *kind = JSON_K_NUMBER;
            return scan_number(s);
        }
        return -1;
    }
}

int jsonscan_validate_value(const char *text, size_t len, enum json_kind *kind)
{
    struct scanner s = {text, text + len, 0};
    enum json_kind k;
    skip_ws(&s);
    if (scan_value(&s, &k, NULL) < 0)
        return -1;
    skip_ws(&s);
    if (s.p != s.end)
        return -1;
    if (kind)
        *kind = k;
    return 0;
}

int jsonscan_parse(struct jsonscan *js, const char *text, size_t len)
{
    struct scanner s = {text, text + len, 0};
    js->n = 0;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -1;
    enum json_kind k;
    if (scan_value(&s, &k, js) < 0)
        return -1;
    skip_ws(&s);
    return s.p == s.end ? 0 : -1;
}

const struct json_field *jsonscan_find(const struct jsonscan *js, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = js->n; i-- > 0;) {
        if (js->f[i].key_len == klen && memcmp(js->f[i].key, key, klen) == 0)
            return &js->f[i];
    }
    return NULL;
}

bool jsonscan_array_nonempty(const struct json_field *f)
{
    if (!f || f->kind != JSON_K_ARRAY)
        return false;
    for (size_t i = 1; i < f->val_len; i++) {
        char c = f->val[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return c != ']';
    }
    return false;
}
