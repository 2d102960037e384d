/*
 * transport.c - http_req on libcurl: one easy handle per request (taken from
 * the loop's free list), added to the loop's multi handle. Response headers
 * stay with the easy handle until the request is freed and are read back
 * through libcurl's header API; nothing here parses HTTP.
 */
#include "transport.h"

#include "buf.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* The system's CA directory, kept when a caFile is added. */
#define SYSTEM_CA_PATH "/etc/ssl/certs"

struct http_req {
    struct loop *loop;
    bool free_queued; /* freed while busy: a deferred free is queued */
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
    bool recv_paused;
    bool send_paused; /* on_read answered HTTP_READ_PAUSE */
    uint64_t sent;
    struct loop_hook resume_hook; /* resume sending once libcurl has returned */
    http_data_fn on_data;
    http_read_fn on_read;
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

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_req *r = ud;
    size_t n = size * nmemb;
    if (r->dead)
        return 0;
    if (r->pause_wanted) {
        r->recv_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    note_status(r);
    if (r->on_data && r->status >= 200 && r->status < 300)
        return r->on_data(r, ptr, n, r->ud) != 0 || r->dead ? 0 : n;
    if (buf_append(&r->body, ptr, n) < 0) {
        r->too_large = true;
        return 0;
    }
    return n;
}

static size_t on_read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct http_req *r = ud;
    if (r->dead)
        return CURL_READFUNC_ABORT;
    ssize_t n = r->on_read(r, buf, size * nitems, r->ud);
    if (r->dead || n == HTTP_READ_ABORT)
        return CURL_READFUNC_ABORT;
    if (n == HTTP_READ_PAUSE) {
        r->send_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    r->sent += (uint64_t)n;
    return (size_t)n;
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

static void free_now(struct http_req *r);

static void on_done(struct loop *l, CURL *easy, CURLcode rc, void *ud)
{
    (void)l;
    (void)easy;
    struct http_req *r = ud;
    if (r->dead) {
        /* Freed inside a callback when no deferral could be queued (out of
         * memory): the owner is gone, finish the job here. */
        if (!r->free_queued)
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
    loop_hook_cancel(r->loop, &r->resume_hook);
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
        loop_hook_cancel(r->loop, &r->resume_hook);
        if (loop_defer(r->loop, free_deferred, r) == 0) {
            r->free_queued = true;
            return;
        }
        /* Out of memory: the callbacks see dead and abort the transfer,
         * and on_done frees the request when it ends. */
        return;
    }
    free_now(r);
}

static int add_header(struct http_req *r, const char *line)
{
    struct curl_slist *h = curl_slist_append(r->headers, line);
    if (!h)
        return -1;
    r->headers = h;
    return 0;
}

static void resume_now(struct loop *l, void *ud);

int http_req_start(struct loop *l, const struct http_req_opts *o, struct http_req **out)
{
    *out = NULL;
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->loop = l;
    r->on_data = o->on_data;
    r->on_read = o->on_read;
    r->on_done = o->on_done;
    r->ud = o->ud;
    loop_hook_init(&r->resume_hook, resume_now, r);
    buf_init(&r->body, o->max_body ? o->max_body : 64 * 1024);
    r->easy = loop_easy_get(l);
    if (!r->easy)
        goto fail;
    for (size_t i = 0; o->headers && o->headers[i]; i++)
        if (add_header(r, o->headers[i]) < 0)
            goto fail;
    /* Never wait for a 100 Continue: mcpd and the backends answer at once. */
    if (add_header(r, "Expect:") < 0)
        goto fail;
    if (o->on_read && add_header(r, "Transfer-Encoding: chunked") < 0)
        goto fail;

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
    if (o->on_read) {
        /* No size: with Transfer-Encoding: chunked, libcurl frames each
         * piece on_read hands over as a chunk. */
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read_cb);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        if (strcmp(o->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    } else if (o->body) {
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
    if (o->ca_file) {
        if (curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_CAPATH, SYSTEM_CA_PATH) != CURLE_OK)
            goto fail;
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
    return r->finished && r->rc == CURLE_OK;
}

long http_req_status(const struct http_req *r)
{
    if (r->status_known)
        return r->status;
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

const char *http_req_body(const struct http_req *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

const char *http_req_content_type(const struct http_req *r)
{
    char *ct = NULL;
    if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
        return NULL;
    return ct;
}

const char *http_req_header(const struct http_req *r, const char *name)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(r->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
        return NULL;
    if (h->amount > 1 &&
        curl_easy_header(r->easy, name, h->amount - 1, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return NULL;
    return h->value;
}

void http_req_each_header(const struct http_req *r, http_header_fn fn, void *ud)
{
    struct curl_header *h = NULL;
    while ((h = curl_easy_nextheader(r->easy, CURLH_HEADER, -1, h)) != NULL)
        fn(ud, h->name, h->value);
}

const char *http_req_error(const struct http_req *r)
{
    if (!r->finished || http_req_ok(r))
        return NULL;
    if (r->too_large)
        return "response too large";
    return curl_easy_strerror(r->rc);
}

const char *http_req_error_detail(const struct http_req *r)
{
    if (!r->finished || http_req_ok(r))
        return NULL;
    if (r->too_large)
        return "response too large";
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->rc);
}

bool http_req_timed_out(const struct http_req *r)
{
    return r->finished && r->rc == CURLE_OPERATION_TIMEDOUT;
}

bool http_req_tls_failed(const struct http_req *r)
{
    if (!r->finished)
        return false;
    switch (r->rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return true;
    default:
        return false;
    }
}

uint64_t http_req_sent(const struct http_req *r)
{
    return r->sent;
}

bool http_req_nothing_sent(const struct http_req *r)
{
    return r->sent == 0;
}

/* The pause mask that keeps whatever else is paused. */
static int pause_mask(const struct http_req *r)
{
    return (r->recv_paused ? CURLPAUSE_RECV : 0) | (r->send_paused ? CURLPAUSE_SEND : 0);
}

void http_req_pause(struct http_req *r)
{
    r->pause_wanted = true;
}

void http_req_resume(struct http_req *r)
{
    r->pause_wanted = false;
    if (!r->recv_paused || r->finished || r->dead)
        return;
    r->recv_paused = false;
    loop_busy_enter(r->loop);
    curl_easy_pause(r->easy, pause_mask(r));
    loop_busy_leave(r->loop);
}

static void resume_now(struct loop *l, void *ud)
{
    (void)l;
    struct http_req *r = ud;
    if (!r->send_paused || r->finished || r->dead)
        return;
    r->send_paused = false;
    loop_busy_enter(r->loop);
    curl_easy_pause(r->easy, pause_mask(r));
    loop_busy_leave(r->loop);
}

void http_req_resume_send(struct http_req *r)
{
    if (!r->send_paused || r->finished || r->dead)
        return;
    if (loop_busy(r->loop)) {
        loop_hook_arm(r->loop, &r->resume_hook);
        return;
    }
    resume_now(r->loop, r);
}

int http_req_socket(const struct http_req *r)
{
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(r->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK)
        return -1;
    return fd == CURL_SOCKET_BAD ? -1 : (int)fd;
}
