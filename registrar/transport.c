/*
 * transport.c - http_req on one of two engines: httpc.c for plain http:// to
 * a literal address with no proxy (the relay's upstream calls and result
 * posts), libcurl for everything else. httpc.h states the rule. Both hand
 * body bytes to take_body(), so collecting, caps and on_data behave alike.
 */
#include "transport.h"

#include "buf.h"
#include "httpc.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http_req {
    struct loop *loop;
    bool native;      /* runs on httpc, not libcurl */
    bool free_queued; /* freed while busy: a deferred free is queued */
    struct httpc_req hc;
    CURL *easy;
    struct curl_slist *headers;
    struct buf body;
    long status;
    CURLcode rc;
    bool status_known;
    bool finished;
    bool too_large;
    bool dead;         /* freed while libcurl was busy: free pending */
    bool pause_wanted; /* the next write returns CURL_WRITEFUNC_PAUSE */
    bool paused;
    http_data_fn on_data;
    http_done_fn on_done;
    void *ud;
    char errbuf[CURL_ERROR_SIZE];
};

static void note_status(struct http_req *r)
{
    if (r->status_known)
        return;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    r->status_known = true;
}

/* Body bytes from either engine: to on_data for a 2xx with a streaming
 * owner, else into the capped body. Returns 0, or -1 to abort. */
static int take_body(struct http_req *r, long status, const char *data, size_t n)
{
    if (r->on_data && status >= 200 && status < 300)
        return r->on_data(r, data, n, r->ud) != 0 ? -1 : 0;
    if (buf_append(&r->body, data, n) < 0) {
        r->too_large = true;
        return -1;
    }
    return 0;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_req *r = ud;
    size_t n = size * nmemb;
    if (r->dead)
        return 0;
    if (r->pause_wanted) {
        r->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    note_status(r);
    return take_body(r, r->status, ptr, n) < 0 ? 0 : n;
}

static int native_body(void *ud, const char *data, size_t n)
{
    struct http_req *r = ud;
    if (r->dead || take_body(r, httpc_req_status(&r->hc), data, n) < 0)
        return 1;
    return r->dead ? 1 : 0;
}

static void free_now(struct http_req *r);

static void native_done(void *ud)
{
    struct http_req *r = ud;
    if (r->dead) {
        /* Freed inside a callback: the queued free finishes the job, or,
         * when none could be queued (out of memory), this does. */
        if (!r->free_queued)
            free_now(r);
        return;
    }
    r->finished = true;
    r->status = httpc_req_status(&r->hc);
    r->on_done(r, r->ud);
}

/* TCP_KEEPCNT has no libcurl option in 7.88; set it on the socket. */
static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    (void)ud;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        int cnt = 3;
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    }
    return CURL_SOCKOPT_OK;
}

static void on_done(struct loop *l, CURL *easy, CURLcode rc, void *ud)
{
    (void)l;
    (void)easy;
    struct http_req *r = ud;
    if (r->dead) {
        /* Freed inside a callback when no deferral could be queued (out of
         * memory): the owner is gone, finish the job here. */
        free_now(r);
        return;
    }
    r->finished = true;
    r->rc = rc;
    r->status_known = false;
    note_status(r);
    r->on_done(r, r->ud);
}

static void free_now(struct http_req *r)
{
    if (r->native)
        httpc_req_release(&r->hc);
    if (r->easy)
        loop_remove_easy(r->loop, r->easy, true);
    curl_slist_free_all(r->headers);
    buf_release(&r->body);
    free(r);
}

static void free_deferred(struct loop *l, void *ud)
{
    (void)l;
    free_now(ud);
}

void http_req_free(struct http_req *r)
{
    if (!r || r->dead)
        return;
    if (loop_busy(r->loop)) {
        r->dead = true;
        if (loop_defer(r->loop, free_deferred, r) == 0) {
            r->free_queued = true;
            return;
        }
        /* Out of memory: the write callback sees dead and aborts the
         * transfer, and on_done frees the request when it ends. */
        return;
    }
    free_now(r);
}

int http_req_start(struct loop *l, const struct http_req_opts *o, struct http_req **out)
{
    *out = NULL;
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->loop = l;
    r->on_data = o->on_data;
    r->on_done = o->on_done;
    r->ud = o->ud;
    buf_init(&r->body, o->max_body ? o->max_body : 64 * 1024);
    struct httpc *hc = loop_httpc(l);
    if (!hc)
        goto fail;
    int native = httpc_req_start(hc, &r->hc, o, native_body, native_done, r);
    if (native < 0)
        goto fail;
    if (native == 0) {
        r->native = true;
        *out = r;
        return 0;
    }
    r->easy = loop_easy_get(l);
    if (!r->easy)
        goto fail;
    for (size_t i = 0; o->headers && o->headers[i]; i++) {
        struct curl_slist *h = curl_slist_append(r->headers, o->headers[i]);
        if (!h)
            goto fail;
        r->headers = h;
    }
    struct curl_slist *h = curl_slist_append(r->headers, "Expect:");
    if (!h)
        goto fail;
    r->headers = h;

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "mcplocal");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(o->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(o->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    }
    if (o->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        if (curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body) != CURLE_OK)
            goto fail;
    } else if (strcmp(o->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    }
    if (o->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->connect_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
    if (o->low_speed_time_s > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, o->low_speed_time_s);
    }
    if (o->keepalive) {
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
        curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    }
    if (loop_add_easy(l, e, on_done, r) < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    if (r->easy)
        loop_easy_put(l, r->easy);
    curl_slist_free_all(r->headers);
    buf_release(&r->body);
    free(r);
    return -1;
}

bool http_req_ok(const struct http_req *r)
{
    if (r->native)
        return r->finished && httpc_req_ok(&r->hc);
    return r->finished && r->rc == CURLE_OK;
}

long http_req_status(const struct http_req *r)
{
    if (r->native)
        return httpc_req_status(&r->hc);
    return r->status;
}

const char *http_req_body(const struct http_req *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

const char *http_req_content_type(const struct http_req *r)
{
    if (r->native)
        return httpc_req_content_type(&r->hc);
    char *ct = NULL;
    if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
        return NULL;
    return ct;
}

const char *http_req_error(const struct http_req *r)
{
    if (!r->finished || http_req_ok(r))
        return NULL;
    if (r->too_large)
        return "response too large";
    if (r->native)
        return httpc_req_error(&r->hc);
    return curl_easy_strerror(r->rc);
}

const char *http_req_error_detail(const struct http_req *r)
{
    if (!r->finished || http_req_ok(r))
        return NULL;
    if (r->too_large)
        return "response too large";
    if (r->native)
        return httpc_req_error_detail(&r->hc);
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc);
}

bool http_req_timed_out(const struct http_req *r)
{
    if (r->native)
        return r->finished && httpc_req_timed_out(&r->hc);
    return r->finished && r->rc == CURLE_OPERATION_TIMEDOUT;
}

void http_req_pause(struct http_req *r)
{
    if (r->native) {
        httpc_req_pause(&r->hc);
        return;
    }
    r->pause_wanted = true;
}

void http_req_resume(struct http_req *r)
{
    if (r->native) {
        if (!r->dead)
            httpc_req_resume(&r->hc);
        return;
    }
    r->pause_wanted = false;
    if (!r->paused || r->finished || r->dead)
        return;
    r->paused = false;
    loop_busy_enter(r->loop);
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
    loop_busy_leave(r->loop);
}
