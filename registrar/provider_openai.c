#include "provider_openai.h"

#include "sse.h"
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

struct openai_call {
    struct loop *loop;
    enum call_mode mode;
    struct http_req *req;
    bool streaming;
    bool not_sse; /* streaming was asked for but the backend sent something else */
    bool reported;
    bool dead;
    int64_t timeout_ms;
    struct sse_parser sse;
    openai_chunk_fn on_chunk;
    openai_done_fn on_done;
    openai_check_fn on_check;
    void *ud;
    char *auth;
};

static void call_destroy(struct openai_call *c)
{
    http_req_free(c->req);
    sse_parser_release(&c->sse);
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
    /* Inside a libcurl callback the parser or the request may still be on
     * the stack: finish freeing once libcurl has returned. */
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

static void report_failed(struct openai_call *c, const char *error, const char *detail)
{
    struct openai_result r = {.outcome = OPENAI_FAILED, .error = error, .detail = detail};
    report(c, &r);
}

static int on_sse_event(void *ud, const struct sse_event *ev)
{
    struct openai_call *c = ud;
    if (c->reported || c->dead)
        return 1;
    if (strcmp(ev->event, "error") == 0) {
        char msg[300], err[400];
        wire_backend_error(ev->data, ev->data_len, msg, sizeof msg);
        snprintf(err, sizeof err, "backend stream error: %s", msg);
        report_failed(c, err, err);
        return 1;
    }
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        struct openai_result r = {.outcome = OPENAI_STREAMED, .status = 200};
        report(c, &r);
        return 1;
    }
    c->on_chunk(c->ud, ev->data, ev->data_len);
    return c->dead ? 1 : 0;
}

static int on_data(struct http_req *req, const char *data, size_t len, void *ud)
{
    (void)req;
    struct openai_call *c = ud;
    if (c->dead || c->reported)
        return 1;
    if (!c->streaming)
        return 0; /* not used: non-streaming calls collect the body */
    if (!c->not_sse) {
        const char *ct = http_req_content_type(c->req);
        if (!ct || !strcasestr(ct, "text/event-stream"))
            c->not_sse = true;
    }
    if (c->not_sse)
        return 0; /* ignored; reported as an error at the end */
    int rc = sse_parser_feed(&c->sse, data, len);
    if (rc == SSE_ERR_LINE_TOO_LONG || rc == SSE_ERR_EVENT_TOO_LARGE) {
        report_failed(c, "backend sent an oversized stream event",
                      "backend sent an oversized stream event");
        return 1;
    }
    return (c->dead || c->reported) ? 1 : 0;
}

static void infer_finish(struct openai_call *c, struct http_req *req)
{
    char err[512], detail[1024], msg[300];
    long status = http_req_status(req);
    bool ok = http_req_ok(req);
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    if (status > 0 && (status < 200 || status >= 300)) {
        wire_backend_error(body, len, msg, sizeof msg);
        snprintf(err, sizeof err, "backend answered %ld: %s", status, msg);
        report_failed(c, err, err);
        return;
    }
    if (status == 0) {
        snprintf(err, sizeof err, "backend unreachable: %s", http_req_error(req));
        snprintf(detail, sizeof detail, "backend unreachable: %s", http_req_error_detail(req));
        report_failed(c, err, detail);
        return;
    }
    if (!ok) {
        snprintf(err, sizeof err, "backend %s broke: %s", c->streaming ? "stream" : "response",
                 http_req_error(req));
        snprintf(detail, sizeof detail, "backend %s broke: %s",
                 c->streaming ? "stream" : "response", http_req_error_detail(req));
        report_failed(c, err, detail);
        return;
    }
    if (!c->streaming) {
        struct openai_result r = {
            .outcome = OPENAI_BODY, .status = status, .body = body, .body_len = len};
        report(c, &r);
        return;
    }
    if (c->not_sse) {
        const char *ct = http_req_content_type(req);
        snprintf(err, sizeof err, "backend did not stream (Content-Type %s)", ct ? ct : "none");
        report_failed(c, err, err);
        return;
    }
    /* Flush a last event the backend did not end with a blank line; a clean
     * close then counts as the end of the stream. */
    if (sse_parser_feed(&c->sse, "\n\n", 2) != 0 || c->dead || c->reported)
        return;
    struct openai_result r = {.outcome = OPENAI_STREAMED, .status = status};
    report(c, &r);
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
    sse_parser_init(&c->sse, OPENAI_MAX_EVENT, OPENAI_MAX_EVENT, on_sse_event, NULL, c);
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

struct openai_call *openai_infer(struct loop *l, const struct provider_cfg *p, const char *request,
                                 bool streaming, openai_chunk_fn on_chunk, openai_done_fn on_done,
                                 void *ud)
{
    struct openai_call *c = call_new(l, p);
    if (!c)
        return NULL;
    c->mode = MODE_INFER;
    c->streaming = streaming;
    c->on_chunk = on_chunk;
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
        .body_len = strlen(request),
        .max_body = OPENAI_MAX_BODY,
        .connect_timeout_ms = CONNECT_TIMEOUT_MS,
        .low_speed_time_s = UPSTREAM_IDLE_S,
        .on_data = streaming ? on_data : NULL,
        .on_done = infer_done,
        .ud = c,
    };
    return call_start(c, p, "/chat/completions", &o);
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
