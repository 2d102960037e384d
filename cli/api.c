#include "api.h"

#include "buf.h"
#include "protocol.h"
#include "version.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct api {
    char *url;
    char *token;
    const char *token_from;
    char *cafile; /* NULL: the system's CAs only */
    const char *cafile_from;
    CURL *curl;
};

/* One request/response exchange. */
struct xfer {
    struct api *a;
    struct buf body; /* JSON answer or error body (not used for SSE) */
    long status;     /* from the status line; 0 until it arrived */
    long retry_after_s;
    bool decided; /* the first body byte has been seen */
    bool sse;     /* the body is an event stream handed to fn */
    bool overflow;
    bool stopped; /* fn asked to stop; err is filled */
    struct sse_parser parser;
    api_event_fn fn;
    void *ud;
    struct cli_error *err;
};

struct api *api_new(const char *base_url, const char *token, const char *token_from)
{
    struct api *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->url = strdup(base_url);
    a->token = strdup(token);
    a->token_from = token_from;
    a->curl = curl_easy_init();
    if (!a->url || !a->token || !a->curl) {
        api_free(a);
        return NULL;
    }
    return a;
}

int api_set_cafile(struct api *a, const char *cafile, const char *from)
{
    char *copy = NULL;
    if (cafile && !(copy = strdup(cafile)))
        return -1;
    free(a->cafile);
    a->cafile = copy;
    a->cafile_from = cafile ? from : NULL;
    return 0;
}

void api_free(struct api *a)
{
    if (!a)
        return;
    if (a->curl)
        curl_easy_cleanup(a->curl);
    free(a->cafile);
    free(a->url);
    free(a->token);
    free(a);
}

/* ---- error wording ---- */

void api_error_reason(const char *body, size_t len, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!body || len == 0 || outlen == 0)
        return;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    const char *s = json_string_value(e);
    if (!s)
        s = json_string_value(json_object_get(e, "message"));
    if (s) {
        size_t max = outlen - 1 < 300 ? outlen - 1 : 300;
        size_t n = strlen(s);
        bool cut = n > max;
        if (cut)
            n = max > 3 ? max - 3 : max;
        memcpy(out, s, n);
        out[n] = '\0';
        for (char *p = out; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        if (cut && max > 3)
            strcat(out, "...");
    }
    json_decref(root);
}

int api_status_error(const struct api *a, long status, const char *body, size_t len,
                     long retry_after_s, const char *llm_name, struct cli_error *err)
{
    char reason[320];
    char detail[340] = "";
    api_error_reason(body, len, reason, sizeof reason);
    if (reason[0])
        snprintf(detail, sizeof detail, ": %s", reason);
    char retry[48];
    if (retry_after_s >= 0)
        snprintf(retry, sizeof retry, "retry in %ld s", retry_after_s);
    else
        snprintf(retry, sizeof retry, "retry later");
    const char *from = a->token_from ? a->token_from : "--token";

    switch (status) {
    case 401:
        return cli_error_set(
            err, CLI_EXIT_AUTH,
            "token rejected by mcpd at '%s' (401): the token from %s is "
            "unknown, revoked or expired; run 'mcpctl login --server %s --token TOKEN' "
            "with a valid token",
            a->url, from, a->url);
    case 403:
        return cli_error_set(err, CLI_EXIT_AUTH,
                             "mcpd at '%s' refused the token from %s (403%s); use a token "
                             "that may do this",
                             a->url, from, detail);
    case 404:
        if (llm_name)
            return cli_error_set(err, CLI_EXIT_NOT_FOUND,
                                 "no Llm named '%s'; run 'mcpctl get llm' to list the Llms",
                                 llm_name);
        return cli_error_set(err, CLI_EXIT_NOT_FOUND,
                             "'%s' answered 404 for the Llm list; check that the server URL "
                             "points at mcpd",
                             a->url);
    case 503:
        if (llm_name)
            return cli_error_set(err, CLI_EXIT_UNAVAILABLE, "Llm '%s' is unavailable (503): %s; %s",
                                 llm_name, reason[0] ? reason : "its publisher is offline", retry);
        return cli_error_set(err, CLI_EXIT_UNAVAILABLE, "mcpd at '%s' is unavailable (503%s); %s",
                             a->url, detail, retry);
    case 502:
        return cli_error_set(err, CLI_EXIT_INFER, "Llm '%s' failed (502): %s; try again",
                             llm_name ? llm_name : "?",
                             reason[0] ? reason : "its publisher reported an error");
    case 504:
        return cli_error_set(err, CLI_EXIT_INFER,
                             "Llm '%s' did not answer in time (504%s); try again or ask for less",
                             llm_name ? llm_name : "?", detail);
    case 400:
    case 413:
        return cli_error_set(err, CLI_EXIT_ERROR, "mcpd refused the request (%ld%s)", status,
                             detail);
    default:
        return cli_error_set(err, CLI_EXIT_ERROR, "mcpd at '%s' answered %ld%s", a->url, status,
                             detail);
    }
}

static const char *connect_failure(long os_errno)
{
    switch (os_errno) {
    case ECONNREFUSED:
        return "connection refused";
    case ENETUNREACH:
    case EHOSTUNREACH:
        return "host unreachable";
    case ETIMEDOUT:
        return "timed out";
    default:
        return "cannot connect";
    }
}

/* libcurl's description, fit for a one-line message: control characters
 * become spaces, long texts are cut; fallback when there is none. */
static void clean_reason(const char *reason, const char *fallback, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", reason && *reason ? reason : fallback);
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

int api_transport_error(const struct api *a, int curl_code, long os_errno, const char *reason,
                        bool got_response, struct cli_error *err)
{
    const char *what;
    char why[200];
    char handshake[240];
    switch ((CURLcode)curl_code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return cli_error_set(err, CLI_EXIT_USAGE,
                             "invalid server URL '%s'; expected http://HOST[:PORT] or "
                             "https://HOST[:PORT]",
                             a->url);
    case CURLE_OUT_OF_MEMORY:
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    case CURLE_COULDNT_RESOLVE_HOST:
        what = "host not found";
        break;
    case CURLE_COULDNT_RESOLVE_PROXY:
        what = "proxy host not found";
        break;
    case CURLE_COULDNT_CONNECT:
        what = connect_failure(os_errno);
        break;
    case CURLE_OPERATION_TIMEDOUT:
        if (got_response)
            return cli_error_set(err, CLI_EXIT_UNREACHABLE,
                                 "mcpd at '%s' did not answer in time; check that it is healthy "
                                 "and try again",
                                 a->url);
        what = "timed out";
        break;
    case CURLE_SSL_CONNECT_ERROR:
        if (reason && *reason) {
            clean_reason(reason, "", why, sizeof why);
            snprintf(handshake, sizeof handshake, "TLS handshake failed (%s)", why);
            what = handshake;
        } else {
            what = "TLS handshake failed";
        }
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        clean_reason(reason, "the certificate was not accepted", why, sizeof why);
        if (a->cafile)
            return cli_error_set(err, CLI_EXIT_UNREACHABLE,
                                 "cannot verify the TLS certificate of '%s': %s; check that the "
                                 "CA file '%s' from %s holds the CA that signed mcpd's "
                                 "certificate",
                                 a->url, why, a->cafile,
                                 a->cafile_from ? a->cafile_from : "the credentials file");
        return cli_error_set(err, CLI_EXIT_UNREACHABLE,
                             "cannot verify the TLS certificate of '%s': %s; pass --cacert to "
                             "mcpctl login if the server uses a private CA",
                             a->url, why);
    case CURLE_SSL_CACERT_BADFILE:
        clean_reason(reason, "cannot load it", why, sizeof why);
        return cli_error_set(err, CLI_EXIT_USAGE, "cannot use the CA file '%s' for '%s': %s",
                             a->cafile ? a->cafile : "(the system's)", a->url, why);
    case CURLE_SSL_CERTPROBLEM:
        what = "a TLS certificate problem";
        break;
    case CURLE_WEIRD_SERVER_REPLY:
        what = "the answer is not HTTP (is it mcpd?)";
        break;
    case CURLE_GOT_NOTHING:
        what = "the server closed the connection without answering";
        break;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        what = "the connection was lost";
        break;
    default:
        what = "network error";
        break;
    }
    if (got_response)
        return cli_error_set(err, CLI_EXIT_UNREACHABLE,
                             "lost the connection to mcpd at '%s' during the answer (%s); try "
                             "again",
                             a->url, what);
    return cli_error_set(err, CLI_EXIT_UNREACHABLE,
                         "cannot reach mcpd at '%s': %s; check the server URL and that mcpd is "
                         "running",
                         a->url, what);
}

/* ---- transfers ---- */

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    long code;
    if (n > 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        /* A new response (after 1xx ones): forget earlier headers. */
        x->retry_after_s = -1;
        if (sscanf(ptr, "HTTP/%*s %ld", &code) == 1)
            x->status = code;
        return n;
    }
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        char value[128];
        size_t vlen = n - (sizeof name - 1);
        if (vlen >= sizeof value)
            vlen = sizeof value - 1;
        memcpy(value, ptr + sizeof name - 1, vlen);
        value[vlen] = '\0';
        char *v = value;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end = v + strlen(v);
        while (end > v && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*v && strspn(v, "0123456789") == strlen(v)) {
            x->retry_after_s = strtol(v, NULL, 10);
        } else if (*v) {
            time_t when = curl_getdate(v, NULL);
            time_t now = time(NULL);
            if (when != (time_t)-1)
                x->retry_after_s = when > now ? (long)(when - now) : 0;
        }
    }
    return n;
}

static int on_sse_event(void *ud, const struct sse_event *ev)
{
    struct xfer *x = ud;
    if (x->fn(x->ud, ev, x->err) == 0)
        return 0;
    x->stopped = true;
    return 1;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (!x->decided) {
        long status = 0;
        char *ct = NULL;
        curl_easy_getinfo(x->a->curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(x->a->curl, CURLINFO_CONTENT_TYPE, &ct);
        x->status = status;
        x->sse = x->fn && status / 100 == 2 && ct &&
                 strncasecmp(ct, "text/event-stream", strlen("text/event-stream")) == 0;
        if (status / 100 != 2)
            x->body.max = API_ERROR_BODY_MAX;
        x->decided = true;
    }
    if (x->sse) {
        int rc = sse_parser_feed(&x->parser, ptr, n);
        if (rc == SSE_ERR_LINE_TOO_LONG || rc == SSE_ERR_EVENT_TOO_LARGE) {
            cli_error_set(x->err, CLI_EXIT_ERROR,
                          "mcpd at '%s' sent a streamed piece larger than %u MiB", x->a->url,
                          API_SSE_EVENT_MAX >> 20);
            x->stopped = true;
            return 0;
        }
        if (rc != 0) {
            x->stopped = true;
            return 0;
        }
        return n;
    }
    if (x->status / 100 != 2) {
        /* Error bodies: keep the start, which holds the reason. */
        size_t room = x->body.max - x->body.len;
        buf_append(&x->body, ptr, n < room ? n : room);
        return n;
    }
    if (buf_append(&x->body, ptr, n) < 0) {
        x->overflow = true;
        return 0;
    }
    return n;
}

static char *make_url(const struct api *a, const char *path)
{
    size_t n = strlen(a->url) + strlen(path) + 1;
    char *u = malloc(n);
    if (u)
        snprintf(u, n, "%s%s", a->url, path);
    return u;
}

static struct curl_slist *make_headers(const struct api *a, bool post, bool stream)
{
    char auth[64 + 4096];
    struct curl_slist *h = NULL, *t;
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", a->token);
    const char *lines[] = {
        auth,
        stream ? "Accept: text/event-stream" : "Accept: application/json",
        post ? "Content-Type: application/json" : NULL,
        "Expect:",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (!lines[i])
            continue;
        t = curl_slist_append(h, lines[i]);
        if (!t) {
            curl_slist_free_all(h);
            return NULL;
        }
        h = t;
    }
    return h;
}

/* Runs one request. On 2xx returns 0 (x->body holds a non-streamed answer);
 * otherwise fills err and returns -1. */
static int perform(struct api *a, const char *path, const char *post_body, long timeout_ms,
                   const char *llm_name, struct xfer *x, struct cli_error *err)
{
    int rc = -1;
    char ua[64];
    char reason[CURL_ERROR_SIZE] = "";
    char *url = make_url(a, path);
    struct curl_slist *hdrs = make_headers(a, post_body != NULL, x->fn != NULL);
    if (!url || !hdrs) {
        cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
        goto out;
    }
    snprintf(ua, sizeof ua, "mcpctl/%s", mcpctl_version());
    x->a = a;
    x->err = err;
    x->retry_after_s = -1;
    CURL *c = a->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, API_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, reason);
    if (a->cafile) {
        /* CAINFO replaces the default bundle; CAPATH keeps the system's. */
        curl_easy_setopt(c, CURLOPT_CAINFO, a->cafile);
        curl_easy_setopt(c, CURLOPT_CAPATH, API_SYSTEM_CA_PATH);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    if (post_body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, post_body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(post_body));
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    CURLcode cc = curl_easy_perform(c);
    if (x->stopped)
        goto out; /* err was filled by the event callback */
    if (x->overflow) {
        cli_error_set(err, CLI_EXIT_ERROR, "the answer from mcpd at '%s' is larger than %u MiB",
                      a->url, API_JSON_MAX >> 20);
        goto out;
    }
    if (cc != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
        api_transport_error(a, (int)cc, os_errno, reason, x->status > 0, err);
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    x->status = status;
    if (status / 100 != 2) {
        api_status_error(a, status, x->body.data, x->body.len, x->retry_after_s, llm_name, err);
        goto out;
    }
    rc = 0;
out:
    /* The buffer is about to go: libcurl must not write to it later. */
    curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hdrs);
    free(url);
    return rc;
}

static int parse_json(const struct api *a, const struct buf *body, json_t **out,
                      struct cli_error *err)
{
    json_error_t jerr;
    *out = json_loadb(body->data ? body->data : "", body->len, 0, &jerr);
    if (!*out)
        return cli_error_set(err, CLI_EXIT_ERROR,
                             "mcpd at '%s' sent an answer that is not valid JSON (%s); check "
                             "that the server URL points at mcpd",
                             a->url, jerr.text);
    return 0;
}

static int get_json(struct api *a, const char *path, const char *llm_name, json_t **out,
                    struct cli_error *err)
{
    struct xfer x = {0};
    buf_init(&x.body, API_JSON_MAX);
    *out = NULL;
    int rc = perform(a, path, NULL, API_REQUEST_TIMEOUT_MS, llm_name, &x, err);
    if (rc == 0)
        rc = parse_json(a, &x.body, out, err);
    buf_release(&x.body);
    return rc;
}

int api_list_llms(struct api *a, json_t **out, struct cli_error *err)
{
    if (get_json(a, MCP_ROUTE_LLMS, NULL, out, err) < 0)
        return -1;
    if (!json_is_array(*out)) {
        json_decref(*out);
        *out = NULL;
        return cli_error_set(err, CLI_EXIT_ERROR,
                             "mcpd at '%s' sent a list that is not a JSON array", a->url);
    }
    return 0;
}

/* "/api/v1/llms/NAME" + suffix as a new string, NAME escaped. */
static char *llm_path(struct api *a, const char *name, const char *suffix)
{
    char *esc = curl_easy_escape(a->curl, name, 0);
    if (!esc)
        return NULL;
    size_t n = strlen(MCP_ROUTE_LLMS) + strlen(esc) + strlen(suffix) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s%s", MCP_ROUTE_LLMS, esc, suffix);
    curl_free(esc);
    return p;
}

/* GET /api/v1/llms/NAME + suffix, whose answer must be an object (what:
 * what it is, for the error). */
static int get_object(struct api *a, const char *name, const char *suffix, const char *what,
                      json_t **out, struct cli_error *err)
{
    *out = NULL;
    char *path = llm_path(a, name, suffix);
    if (!path)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    int rc = get_json(a, path, name, out, err);
    free(path);
    if (rc == 0 && !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return cli_error_set(err, CLI_EXIT_ERROR, "mcpd at '%s' sent %s that is not a JSON object",
                             a->url, what);
    }
    return rc;
}

/* Appends "&name=value" (the first one "?name=value"), value escaped. */
static int add_param(struct api *a, struct buf *path, const char *name, const char *value)
{
    if (!value)
        return 0;
    char *esc = curl_easy_escape(a->curl, value, 0);
    int rc = esc ? buf_printf(path, "%c%s=%s", strchr(path->data, '?') ? '&' : '?', name, esc) : -1;
    curl_free(esc);
    return rc;
}

int api_get_usage(struct api *a, const struct api_usage_query *q, json_t **out,
                  struct cli_error *err)
{
    *out = NULL;
    struct buf path;
    buf_init(&path, 8192);
    int rc = buf_append_str(&path, MCP_ROUTE_USAGE);
    if (rc == 0)
        rc = add_param(a, &path, "since", q->since);
    if (rc == 0)
        rc = add_param(a, &path, "until", q->until);
    if (rc == 0)
        rc = add_param(a, &path, "llm", q->llm);
    if (rc == 0)
        rc = add_param(a, &path, "owner", q->owner);
    if (rc < 0) {
        buf_release(&path);
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    }
    struct xfer x = {0};
    buf_init(&x.body, API_JSON_MAX);
    rc = perform(a, path.data, NULL, API_REQUEST_TIMEOUT_MS, NULL, &x, err);
    if (rc < 0 && x.status == 404)
        cli_error_set(err, CLI_EXIT_NOT_FOUND,
                      "mcpd at '%s' has no usage route (404); it is older than this mcpctl",
                      a->url);
    if (rc == 0)
        rc = parse_json(a, &x.body, out, err);
    buf_release(&x.body);
    buf_release(&path);
    if (rc == 0 && !json_is_array(json_object_get(*out, "usage"))) {
        json_decref(*out);
        *out = NULL;
        return cli_error_set(err, CLI_EXIT_ERROR,
                             "mcpd at '%s' sent usage that is not an object with a \"usage\" "
                             "array",
                             a->url);
    }
    return rc;
}

int api_get_llm(struct api *a, const char *name, json_t **out, struct cli_error *err)
{
    return get_object(a, name, "", "an Llm", out, err);
}

int api_get_members(struct api *a, const char *name, json_t **out, struct cli_error *err)
{
    return get_object(a, name, "/members", "a pool", out, err);
}

int api_infer(struct api *a, const char *name, const char *body, json_t **out,
              struct cli_error *err)
{
    *out = NULL;
    char *path = llm_path(a, name, "/infer");
    if (!path)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    struct xfer x = {0};
    buf_init(&x.body, API_JSON_MAX);
    int rc = perform(a, path, body, 0, name, &x, err);
    if (rc == 0)
        rc = parse_json(a, &x.body, out, err);
    buf_release(&x.body);
    free(path);
    return rc;
}

int api_infer_stream(struct api *a, const char *name, const char *body, api_event_fn fn, void *ud,
                     struct cli_error *err)
{
    char *path = llm_path(a, name, "/infer");
    if (!path)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    struct xfer x = {0};
    buf_init(&x.body, API_JSON_MAX);
    x.fn = fn;
    x.ud = ud;
    sse_parser_init(&x.parser, API_SSE_LINE_MAX, API_SSE_EVENT_MAX, on_sse_event, NULL, &x);
    int rc = perform(a, path, body, 0, name, &x, err);
    if (rc == 0 && !x.sse) {
        rc = cli_error_set(err, CLI_EXIT_ERROR,
                           "mcpd at '%s' answered without streaming; try again with --no-stream",
                           a->url);
    } else if (rc == 0) {
        /* A last event without its blank line still counts. */
        if (sse_parser_feed(&x.parser, "\n\n", 2) != 0) {
            if (!x.stopped)
                cli_error_set(err, CLI_EXIT_ERROR,
                              "mcpd at '%s' sent a streamed piece larger than %u MiB", a->url,
                              API_SSE_EVENT_MAX >> 20);
            rc = -1;
        }
    }
    sse_parser_release(&x.parser);
    buf_release(&x.body);
    free(path);
    return rc;
}
