#include "provider_openai.h"

#include "buf.h"
#include "transport.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONNECT_TIMEOUT_MS 10000
/* Upstream idle limit: a long prompt may take minutes before the first
 * byte, but a backend silent for this long is considered hung. */
#define UPSTREAM_IDLE_S 600L

enum call_mode { MODE_INFER, MODE_CHECK };

/* What a streaming request's 2xx body turned out to be. */
enum sniff { SNIFF_PENDING, SNIFF_SSE, SNIFF_BODY };

struct openai_call {
    struct loop *loop;
    enum call_mode mode;
    struct http_req *req;
    bool streaming;
    enum sniff sniff;
    bool too_large;
    bool reported;
    bool dead;
    int64_t timeout_ms;
    struct buf body; /* a streaming request's 2xx body until it is known not to be SSE */
    struct openai_stream_fns fns;
    openai_done_fn on_done;
    openai_check_fn on_check;
    void *ud;
    char *auth;
};

static void call_destroy(struct openai_call *c)
{
    http_req_free(c->req);
    buf_release(&c->body);
    free(c->auth);
    free(c);
}

static void destroy_deferred(struct loop *l, void *ud)
{
    (void)l;
    call_destroy(ud);
}

void openai_call_free(struct openai_call *c)
{
    if (!c || c->dead)
        return;
    c->dead = true;
    /* Inside a libcurl callback the request may still be on the stack:
     * finish freeing once libcurl has returned. */
    if (loop_busy(c->loop)) {
        if (loop_defer(c->loop, destroy_deferred, c) < 0)
            c->reported = true; /* out of memory: leak c rather than free it in use */
        http_req_free(c->req);
        c->req = NULL;
        return;
    }
    call_destroy(c);
}

static void report(struct openai_call *c, const struct openai_result *r)
{
    if (c->reported || c->dead)
        return;
    c->reported = true;
    c->on_done(c->ud, r);
}

static void report_failed(struct openai_call *c, bool mid_stream, const char *error,
                          const char *detail)
{
    struct openai_result r = {
        .outcome = OPENAI_FAILED, .mid_stream = mid_stream, .error = error, .detail = detail};
    report(c, &r);
}

/* Decides from the first bytes (and, when they say nothing, the
 * Content-Type) whether a 2xx answer to a streaming request is an event
 * stream. ended: no more bytes will come. */
static enum sniff sniff_body(const char *ct, const char *b, size_t n, bool ended)
{
    bool labelled = ct && strcasestr(ct, "text/event-stream");
    size_t i = 0;
    if (n >= 3 && memcmp(b, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'))
        i++;
    if (i == n)
        return ended ? (labelled ? SNIFF_SSE : SNIFF_BODY) : SNIFF_PENDING;
    if (b[i] == ':')
        return SNIFF_SSE;
    if (b[i] == '{' || b[i] == '[')
        return SNIFF_BODY; /* one JSON answer, whatever the label */
    static const char *const fields[] = {"data:", "event:", "id:", "retry:"};
    bool maybe = false;
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
        size_t fl = strlen(fields[k]);
        size_t have = n - i < fl ? n - i : fl;
        if (memcmp(b + i, fields[k], have) != 0)
            continue;
        if (have == fl)
            return SNIFF_SSE;
        maybe = true;
    }
    if (maybe && !ended)
        return SNIFF_PENDING;
    return labelled ? SNIFF_SSE : SNIFF_BODY;
}

/* The event stream is known: announce it and hand over what was held. */
static int start_stream(struct openai_call *c, long status)
{
    c->sniff = SNIFF_SSE;
    c->fns.on_start(c->ud, status);
    if (c->dead || c->reported)
        return 1;
    if (c->body.len > 0) {
        c->fns.on_bytes(c->ud, c->body.data, c->body.len);
        buf_reset(&c->body);
    }
    return (c->dead || c->reported) ? 1 : 0;
}

static int on_data(struct http_req *req, const char *data, size_t len, void *ud)
{
    struct openai_call *c = ud;
    if (c->dead || c->reported)
        return 1;
    if (c->sniff == SNIFF_SSE) {
        c->fns.on_bytes(c->ud, data, len);
        return (c->dead || c->reported) ? 1 : 0;
    }
    if (buf_append(&c->body, data, len) < 0) {
        c->too_large = true;
        return 1;
    }
    if (c->sniff == SNIFF_BODY)
        return 0;
    c->sniff = sniff_body(http_req_content_type(req), c->body.data, c->body.len, false);
    if (c->sniff == SNIFF_SSE)
        return start_stream(c, http_req_status(req));
    return 0;
}

struct passing {
    const char *names[OPENAI_MAX_HEADERS];
    const char *values[OPENAI_MAX_HEADERS];
    size_t n;
};

static void collect_header(void *ud, const char *name, const char *value)
{
    struct passing *p = ud;
    if (p->n < OPENAI_MAX_HEADERS && wire_header_passes(name)) {
        p->names[p->n] = name;
        p->values[p->n] = value;
        p->n++;
    }
}

static void report_response(struct openai_call *c, struct http_req *req, const char *body,
                            size_t len)
{
    struct passing h = {.n = 0};
    http_req_each_header(req, collect_header, &h);
    struct openai_result r = {
        .outcome = OPENAI_RESPONSE,
        .status = http_req_status(req),
        .body = body,
        .body_len = len,
        .header_names = h.names,
        .header_values = h.values,
        .n_headers = h.n,
    };
    report(c, &r);
}

static void infer_finish(struct openai_call *c, struct http_req *req)
{
    char err[512], detail[1024];
    long status = http_req_status(req);
    bool ok = http_req_ok(req);
    if (status == 0) {
        snprintf(err, sizeof err, "backend unreachable: %s", http_req_error(req));
        snprintf(detail, sizeof detail, "backend unreachable: %s", http_req_error_detail(req));
        report_failed(c, false, err, detail);
        return;
    }
    bool sse = c->sniff == SNIFF_SSE;
    if (c->too_large || (!ok && strcmp(http_req_error(req), "response too large") == 0)) {
        snprintf(err, sizeof err, "backend answer larger than %d MiB",
                 OPENAI_MAX_BODY / (1024 * 1024));
        report_failed(c, false, err, err);
        return;
    }
    if (!ok) {
        snprintf(err, sizeof err, "backend %s broke: %s", sse ? "stream" : "response",
                 http_req_error(req));
        snprintf(detail, sizeof detail, "backend %s broke: %s", sse ? "stream" : "response",
                 http_req_error_detail(req));
        report_failed(c, sse, err, detail);
        return;
    }
    if (sse) {
        struct openai_result r = {.outcome = OPENAI_STREAMED, .status = status};
        report(c, &r);
        return;
    }
    /* A streaming request whose 2xx body is still undecided at its end. */
    if (c->streaming && status >= 200 && status < 300) {
        if (sniff_body(http_req_content_type(req), c->body.data, c->body.len, true) == SNIFF_SSE) {
            if (start_stream(c, status) != 0)
                return;
            struct openai_result r = {.outcome = OPENAI_STREAMED, .status = status};
            report(c, &r);
            return;
        }
        report_response(c, req, c->body.data ? c->body.data : "", c->body.len);
        return;
    }
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    report_response(c, req, body, len);
}

static void infer_done(struct http_req *req, void *ud)
{
    struct openai_call *c = ud;
    /* The callbacks below may free c; keep that deferred until we are out. */
    loop_busy_enter(c->loop);
    infer_finish(c, req);
    loop_busy_leave(c->loop);
}

static struct openai_call *call_new(struct loop *l, const struct provider_cfg *p)
{
    struct openai_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = l;
    buf_init(&c->body, OPENAI_MAX_BODY);
    const char *key = p->api_key_env ? getenv(p->api_key_env) : NULL;
    if (key && *key) {
        size_t n = strlen(key) + sizeof "Authorization: Bearer ";
        c->auth = malloc(n);
        if (!c->auth) {
            call_destroy(c);
            return NULL;
        }
        snprintf(c->auth, n, "Authorization: Bearer %s", key);
    }
    return c;
}

/* Starts o on the provider's url + path; returns c, or NULL (c freed). */
static struct openai_call *call_start(struct openai_call *c, const struct provider_cfg *p,
                                      const char *path, struct http_req_opts *o)
{
    size_t ulen = strlen(p->url) + strlen(path) + 1;
    char *url = malloc(ulen);
    int rc = -1;
    if (url) {
        snprintf(url, ulen, "%s%s", p->url, path);
        o->url = url;
        rc = http_req_start(c->loop, o, &c->req);
        free(url);
    }
    if (rc < 0) {
        call_destroy(c);
        return NULL;
    }
    return c;
}

struct openai_call *openai_infer(struct loop *l, const struct provider_cfg *p, const char *path,
                                 const char *request, size_t len, bool streaming,
                                 const struct openai_stream_fns *stream, openai_done_fn on_done,
                                 void *ud)
{
    if (streaming && (!stream || !stream->on_start || !stream->on_bytes))
        return NULL;
    struct openai_call *c = call_new(l, p);
    if (!c)
        return NULL;
    c->mode = MODE_INFER;
    c->streaming = streaming;
    if (stream)
        c->fns = *stream;
    c->on_done = on_done;
    c->ud = ud;
    const char *headers[4];
    size_t nh = 0;
    headers[nh++] = "Content-Type: application/json";
    headers[nh++] = streaming ? "Accept: text/event-stream" : "Accept: application/json";
    if (c->auth)
        headers[nh++] = c->auth;
    headers[nh] = NULL;
    struct http_req_opts o = {
        .method = "POST",
        .headers = headers,
        .body = request,
        .body_len = len,
        .max_body = OPENAI_MAX_BODY,
        .connect_timeout_ms = CONNECT_TIMEOUT_MS,
        .low_speed_time_s = UPSTREAM_IDLE_S,
        .on_data = streaming ? on_data : NULL,
        .on_done = infer_done,
        .ud = c,
    };
    return call_start(c, p, path, &o);
}

static void check_done(struct http_req *req, void *ud)
{
    struct openai_call *c = ud;
    long status = http_req_status(req);
    char why[300];
    if (c->dead || c->reported)
        return;
    c->reported = true;
    if (http_req_ok(req) && status >= 200 && status < 300) {
        c->on_check(c->ud, true, NULL);
        return;
    }
    if (http_req_ok(req))
        snprintf(why, sizeof why, "GET /models answered %ld", status);
    else if (http_req_timed_out(req))
        snprintf(why, sizeof why, "GET /models got no answer within %lld ms",
                 (long long)c->timeout_ms);
    else
        snprintf(why, sizeof why, "%s", http_req_error(req));
    c->on_check(c->ud, false, why);
}

struct openai_call *openai_check(struct loop *l, const struct provider_cfg *p, int64_t timeout_ms,
                                 openai_check_fn on_result, void *ud)
{
    struct openai_call *c = call_new(l, p);
    if (!c)
        return NULL;
    c->mode = MODE_CHECK;
    c->on_check = on_result;
    c->ud = ud;
    c->timeout_ms = timeout_ms;
    const char *headers[3] = {"Accept: application/json", c->auth, NULL};
    struct http_req_opts o = {
        .method = "GET",
        .headers = headers,
        .max_body = 1024 * 1024,
        .timeout_ms = timeout_ms,
        .on_done = check_done,
        .ud = c,
    };
    return call_start(c, p, "/models", &o);
}

void openai_call_pause(struct openai_call *c)
{
    if (c && c->req && !c->dead)
        http_req_pause(c->req);
}

void openai_call_resume(struct openai_call *c)
{
    if (c && c->req && !c->dead)
        http_req_resume(c->req);
}
