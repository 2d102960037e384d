#include "yaml_out.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

/* Words YAML 1.1 reads as booleans or null when plain. */
static const char *const special_words[] = {
    "null", "Null", "NULL", "~",  "true", "True", "TRUE", "false", "False", "FALSE",
    "yes",  "Yes",  "YES",  "no", "No",   "NO",   "on",   "On",    "ON",    "off",
    "Off",  "OFF",  "y",    "Y",  "n",    "N",    "<<",   "=",
};

bool yaml_out_plain_safe(const char *s)
{
    if (!s[0])
        return false;
    for (size_t i = 0; i < sizeof special_words / sizeof special_words[0]; i++)
        if (strcmp(s, special_words[i]) == 0)
            return false;
    /* Anything that could start a number, a timestamp, .inf or .nan. */
    if (strchr("0123456789+-.", s[0]))
        return false;
    return true;
}

static int emit(yaml_emitter_t *em, yaml_event_t *ev, int init_ok)
{
    if (!init_ok)
        return -1;
    /* The emitter takes the event, even when it fails. */
    return yaml_emitter_emit(em, ev) ? 0 : -1;
}

static int emit_scalar(yaml_emitter_t *em, const char *text, size_t len, bool is_string)
{
    yaml_event_t ev;
    int plain_implicit = 1, quoted_implicit = 0;
    yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;
    if (is_string) {
        style = YAML_ANY_SCALAR_STYLE;
        quoted_implicit = 1;
        /* Strings with NUL bytes cannot be plain; neither can ambiguous ones. */
        plain_implicit = strlen(text) == len && yaml_out_plain_safe(text);
    }
    int ok = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)len,
                                          plain_implicit, quoted_implicit, style);
    return emit(em, &ev, ok);
}

static int emit_value(yaml_emitter_t *em, const json_t *v, int depth)
{
    yaml_event_t ev;
    char num[64];
    if (depth > 256)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (emit(em, &ev,
                 yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                     YAML_BLOCK_MAPPING_STYLE)) < 0)
            return -1;
        const char *key;
        json_t *child;
        /* jansson iterates in insertion order, which is the API's order. */
        json_object_foreach((json_t *)v, key, child)
        {
            if (emit_scalar(em, key, strlen(key), true) < 0 || emit_value(em, child, depth + 1) < 0)
                return -1;
        }
        return emit(em, &ev, yaml_mapping_end_event_initialize(&ev));
    }
    case JSON_ARRAY: {
        if (emit(em, &ev,
                 yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                      YAML_BLOCK_SEQUENCE_STYLE)) < 0)
            return -1;
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            if (emit_value(em, child, depth + 1) < 0)
                return -1;
        }
        return emit(em, &ev, yaml_sequence_end_event_initialize(&ev));
    }
    case JSON_STRING:
        return emit_scalar(em, json_string_value(v), json_string_length(v), true);
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(em, num, strlen(num), false);
    case JSON_REAL:
        snprintf(num, sizeof num, "%.17g", json_real_value(v));
        /* Keep it a float when read back: "2" would be an integer. */
        if (!strpbrk(num, ".eEn"))
            strcat(num, ".0");
        return emit_scalar(em, num, strlen(num), false);
    case JSON_TRUE:
        return emit_scalar(em, "true", 4, false);
    case JSON_FALSE:
        return emit_scalar(em, "false", 5, false);
    case JSON_NULL:
    default:
        return emit_scalar(em, "null", 4, false);
    }
}

int yaml_out_write(const json_t *value, FILE *out)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    int rc = -1;
    if (!yaml_emitter_initialize(&em))
        return -1;
    yaml_emitter_set_output_file(&em, out);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_indent(&em, 2);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_break(&em, YAML_LN_BREAK);
    if (emit(&em, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING)) < 0 ||
        emit(&em, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1)) < 0 ||
        emit_value(&em, value, 0) < 0 ||
        emit(&em, &ev, yaml_document_end_event_initialize(&ev, 1)) < 0 ||
        emit(&em, &ev, yaml_stream_end_event_initialize(&ev)) < 0)
        goto out;
    if (!yaml_emitter_flush(&em))
        goto out;
    rc = ferror(out) ? -1 : 0;
out:
    yaml_emitter_delete(&em);
    return rc;
}
