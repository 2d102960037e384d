#include "errors.h"

#include <stdarg.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

int cli_error_set(struct cli_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
    return -1;
}

void cli_error_clear(struct cli_error *err)
{
    if (!err)
        return;
    err->code = CLI_EXIT_OK;
    err->msg[0] = '\0';
}

const char *cli_exit_name(int code)
{
    switch (code) {
    case CLI_EXIT_OK:
        return "ok";
    case CLI_EXIT_ERROR:
        return "error";
    case CLI_EXIT_USAGE:
        return "usage";
    case CLI_EXIT_UNREACHABLE:
        return "unreachable";
    case CLI_EXIT_AUTH:
        return "auth";
    case CLI_EXIT_NOT_FOUND:
        return "not-found";
    case CLI_EXIT_UNAVAILABLE:
        return "unavailable";
    case CLI_EXIT_INFER:
        return "inference-failed";
    default:
        return "unknown";
    }
}

const char *cli_strerror(int errnum)
{
    static _Thread_local char buf[256];
    snprintf(buf, sizeof buf, "%s", strerror(errnum));
    /* "Permission denied" -> "permission denied", but leave "I/O error" alone. */
    if (isupper((unsigned char)buf[0]) && !isupper((unsigned char)buf[1]))
        buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}
