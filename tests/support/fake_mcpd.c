#include "fake_mcpd.h"
#include "fake_http.h"

#include "clock.h"
#include "protocol.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define FM_MAX_BODY (16 * 1024 * 1024)
#define FM_MAX_SESSIONS 256

struct fm_frame {
    char *text;
    bool is_event; /* counts toward drop_after */
    struct fm_frame *next;
};

struct fm_stream {
    struct fake_mcpd *fm;
    struct MHD_Connection *conn;
    struct fm_frame *head, *tail;
    char *cur; /* frame being written */
    size_t clen, coff;
    int events_sent;
    int drop_after;
    bool closing;
    int64_t last_ping;
    struct fm_stream *prev, *next;
};

struct fm_rec {
    struct fake_mcpd_req r;
};

/* One request's state (MHD's con_cls). */
struct fm_conn {
    char *data;
    size_t len;
    bool streamed; /* a streamed result: recorded as it arrives */
    bool results;  /* ... of a result stream */
    long rec;      /* its record, or -1 */
};

struct fake_mcpd {
    struct MHD_Daemon *d;
    char *tls_cert, *tls_key;
    int streamed_mode;
    int results_mode; /* enum fake_mcpd_results */
    bool results_cut; /* close the next result stream's connection at its next piece */
    char url[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int heartbeat_ms, ping_ms;
    char *token;
    int fail_times[4];
    int fail_status[4];
    int result_status;
    int drop_after;
    bool silent;
    char *sessions[FM_MAX_SESSIONS];
    int nsessions;
    int minted;
    struct fm_stream *streams; /* newest first */
    int opened;
    int open;
    struct fake_mcpd_req *recs;
    size_t nrecs, caprecs;
};

static char *fm_strdup0(const char *s)
{
    return strdup(s ? s : "");
}

/* Records a request; called with the lock held. */
static long fm_record_locked(struct fake_mcpd *fm, const char *method, const char *path,
                             const char *session, const char *auth, const char *body, int status)
{
    if (fm->nrecs == fm->caprecs) {
        size_t cap = fm->caprecs ? fm->caprecs * 2 : 64;
        struct fake_mcpd_req *r = realloc(fm->recs, cap * sizeof *r);
        if (!r)
            return -1;
        fm->recs = r;
        fm->caprecs = cap;
    }
    struct fake_mcpd_req *r = &fm->recs[fm->nrecs++];
    r->method = fm_strdup0(method);
    r->path = fm_strdup0(path);
    r->session = fm_strdup0(session);
    r->auth = fm_strdup0(auth);
    r->body = fm_strdup0(body);
    r->ctype = strdup("");
    r->at_ms = clock_mono_ms();
    r->status = status;
    r->streamed = false;
    r->complete = true;
    r->pieces = 0;
    r->first_at = 0;
    pthread_cond_broadcast(&fm->cv);
    return (long)(fm->nrecs - 1);
}

static enum MHD_Result fm_json(struct MHD_Connection *c, unsigned status, const char *body)
{
    return fake_http_reply(c, status, "application/json", body);
}

static bool fm_known_locked(struct fake_mcpd *fm, const char *sid)
{
    for (int i = 0; sid && i < fm->nsessions; i++)
        if (strcmp(fm->sessions[i], sid) == 0)
            return true;
    return false;
}

/* Consumes one scripted failure of route; returns its status or 0. */
static int fm_scripted_locked(struct fake_mcpd *fm, enum fake_mcpd_route route)
{
    if (fm->fail_times[route] > 0) {
        fm->fail_times[route]--;
        return fm->fail_status[route];
    }
    return 0;
}

static void fm_queue_locked(struct fm_stream *s, const char *text, bool is_event)
{
    struct fm_frame *f = calloc(1, sizeof *f);
    if (!f)
        return;
    f->text = strdup(text);
    f->is_event = is_event;
    if (s->tail)
        s->tail->next = f;
    else
        s->head = f;
    s->tail = f;
}

static ssize_t fm_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct fm_stream *s = cls;
    struct fake_mcpd *fm = s->fm;
    pthread_mutex_lock(&fm->mu);
    for (;;) {
        if (fm->stopping || s->closing) {
            pthread_mutex_unlock(&fm->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (s->cur && s->coff < s->clen) {
            size_t n = s->clen - s->coff;
            if (n > max)
                n = max;
            memcpy(buf, s->cur + s->coff, n);
            s->coff += n;
            if (s->coff == s->clen) {
                free(s->cur);
                s->cur = NULL;
                if (s->drop_after > 0 && s->events_sent >= s->drop_after)
                    s->closing = true;
            }
            pthread_mutex_unlock(&fm->mu);
            return (ssize_t)n;
        }
        if (!fm->silent && s->head) {
            struct fm_frame *f = s->head;
            s->head = f->next;
            if (!s->head)
                s->tail = NULL;
            s->cur = f->text;
            s->clen = strlen(f->text);
            s->coff = 0;
            if (f->is_event)
                s->events_sent++;
            free(f);
            continue;
        }
        int64_t now = clock_mono_ms();
        if (!fm->silent && fm->ping_ms > 0 && now - s->last_ping >= fm->ping_ms) {
            s->last_ping = now;
            s->cur = strdup(": ping\n\n");
            s->clen = strlen(s->cur);
            s->coff = 0;
            continue;
        }
        pthread_mutex_unlock(&fm->mu);
        if (fake_http_peer_gone(s->conn))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        fake_http_sleep_ms(2);
        pthread_mutex_lock(&fm->mu);
    }
}

static void fm_stream_free(void *cls)
{
    struct fm_stream *s = cls;
    struct fake_mcpd *fm = s->fm;
    pthread_mutex_lock(&fm->mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        fm->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    fm->open--;
    while (s->head) {
        struct fm_frame *f = s->head;
        s->head = f->next;
        free(f->text);
        free(f);
    }
    free(s->cur);
    pthread_cond_broadcast(&fm->cv);
    pthread_mutex_unlock(&fm->mu);
    free(s);
}

static enum MHD_Result fm_stream(struct fake_mcpd *fm, struct MHD_Connection *c,
                                 const char *session)
{
    struct fm_stream *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    s->fm = fm;
    s->conn = c;
    s->last_ping = clock_mono_ms();
    char hello[512];
    snprintf(hello, sizeof hello,
             "event: hello\ndata: {\"providerSessionId\":\"%s\",\"heartbeatIntervalSeconds\":%.3f,"
             "\"pingIntervalSeconds\":%.3f,\"heartbeatIntervalMs\":%d,\"pingIntervalMs\":%d%s}\n\n",
             session, fm->heartbeat_ms / 1000.0, fm->ping_ms / 1000.0, fm->heartbeat_ms,
             fm->ping_ms,
             fm->results_mode != FAKE_MCPD_RESULTS_OFF ? ",\"features\":[\"result-stream\"]" : "");
    /* A new stream for the session replaces the old ones. */
    for (struct fm_stream *o = fm->streams; o; o = o->next)
        o->closing = true;
    s->drop_after = fm->drop_after;
    fm_queue_locked(s, hello, true);
    s->next = fm->streams;
    if (fm->streams)
        fm->streams->prev = s;
    fm->streams = s;
    fm->opened++;
    fm->open++;
    pthread_cond_broadcast(&fm->cv);
    pthread_mutex_unlock(&fm->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                               fm_stream_read, s, fm_stream_free);
    pthread_mutex_lock(&fm->mu);
    if (!r)
        return MHD_NO; /* s stays linked; freed never (out of memory in a test) */
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    pthread_mutex_unlock(&fm->mu);
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    pthread_mutex_lock(&fm->mu);
    return rc;
}

static enum MHD_Result fm_register(struct fake_mcpd *fm, struct MHD_Connection *c, const char *body,
                                   int *status)
{
    json_t *req = json_loads(body, 0, NULL);
    json_t *provs = json_object_get(req, "providers");
    if (!json_is_array(provs) || json_array_size(provs) == 0) {
        json_decref(req);
        *status = 400;
        return fm_json(c, 400, "{\"error\":\"providers: required\"}");
    }
    const char *sid = json_string_value(json_object_get(req, "providerSessionId"));
    char id[160];
    if (sid && fm_known_locked(fm, sid)) {
        snprintf(id, sizeof id, "%s", sid);
    } else {
        snprintf(id, sizeof id, "sess-%d", ++fm->minted);
        if (fm->nsessions < FM_MAX_SESSIONS)
            fm->sessions[fm->nsessions++] = strdup(id);
    }
    json_t *out = json_object();
    json_t *llms = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(provs, i, p)
    {
        const char *st = json_string_value(json_object_get(p, "initialStatus"));
        json_array_append_new(llms,
                              json_pack("{s:s?, s:s, s:s}", "name",
                                        json_string_value(json_object_get(p, "name")), "kind",
                                        MCP_KIND_VIRTUAL, "status", st ? st : MCP_STATUS_ACTIVE));
    }
    json_object_set_new(out, "providerSessionId", json_string(id));
    json_object_set_new(out, "llms", llms);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    json_decref(req);
    *status = 200;
    enum MHD_Result rc = fm_json(c, 200, text ? text : "{}");
    free(text);
    return rc;
}

/* The headers of a streamed result: refuse it at once as scripted, or
 * start its record. */
static enum MHD_Result fm_streamed_begin(struct fake_mcpd *fm, struct MHD_Connection *c,
                                         struct fm_conn *fc, const char *url, const char *method,
                                         const char *session, const char *auth)
{
    fc->streamed = true;
    size_t tp = strlen(MCP_ROUTE_TASK_PREFIX);
    bool results = strcmp(url, MCP_ROUTE_RESULTS) == 0;
    pthread_mutex_lock(&fm->mu);
    int status = 0;
    char want[600];
    if (fm->token)
        snprintf(want, sizeof want, "Bearer %s", fm->token);
    if (results && fm->results_mode != FAKE_MCPD_RESULTS_ON)
        status = 404;
    else if (!results && strncmp(url, MCP_ROUTE_TASK_PREFIX, tp) != 0)
        status = 404;
    else if (fm->token && (!auth || strcmp(auth, want) != 0))
        status = 401;
    else if ((status = fm_scripted_locked(fm, FAKE_MCPD_RESULT)) != 0)
        ;
    else if (!fm_known_locked(fm, session))
        status = 404;
    else if (!results && fm->result_status)
        status = fm->result_status;
    else if (!results && fm->streamed_mode == FAKE_MCPD_STREAMED_415)
        status = 415;
    long rec = fm_record_locked(fm, method, url, session, auth, "", status);
    if (rec >= 0) {
        struct fake_mcpd_req *r = &fm->recs[rec];
        r->streamed = true;
        r->complete = status != 0;
        free(r->ctype);
        r->ctype = strdup(results ? "application/x-ndjson" : "text/event-stream");
    }
    fc->results = results;
    pthread_mutex_unlock(&fm->mu);
    if (status) {
        fc->streamed = false;
        return fm_json(c, (unsigned)status,
                       status == 415 ? "{\"error\":\"Content-Type must be application/json\"}"
                                     : "{\"error\":\"task is gone\"}");
    }
    fc->rec = rec;
    return MHD_YES;
}

static enum MHD_Result fm_streamed_end(struct fake_mcpd *fm, struct MHD_Connection *c,
                                       struct fm_conn *fc)
{
    pthread_mutex_lock(&fm->mu);
    int status = !fc->results && fm->streamed_mode == FAKE_MCPD_STREAMED_400_AT_END ? 400 : 200;
    if (fc->rec >= 0) {
        struct fake_mcpd_req *r = &fm->recs[fc->rec];
        r->complete = true;
        r->status = status;
        r->at_ms = clock_mono_ms();
        pthread_cond_broadcast(&fm->cv);
    }
    pthread_mutex_unlock(&fm->mu);
    return fm_json(c, (unsigned)status,
                   status == 200 ? "{\"ok\":true}" : "{\"error\":\"malformed JSON body\"}");
}

static void fm_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    struct fake_mcpd *fm = cls;
    struct fm_conn *fc = *con_cls;
    if (!fc)
        return;
    if (fc->streamed && fc->rec >= 0 && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        pthread_mutex_lock(&fm->mu);
        struct fake_mcpd_req *r = &fm->recs[fc->rec];
        if (!r->complete) {
            r->complete = true;
            r->status = -1; /* cut off */
            r->at_ms = clock_mono_ms();
        }
        pthread_cond_broadcast(&fm->cv);
        pthread_mutex_unlock(&fm->mu);
    }
    free(fc->data);
    free(fc);
    *con_cls = NULL;
}

static enum MHD_Result fm_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct fake_mcpd *fm = cls;
    const char *session = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MCP_HEADER_SESSION);
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    struct fm_conn *fc = *con_cls;
    if (!fc) {
        fc = calloc(1, sizeof *fc);
        if (!fc)
            return MHD_NO;
        fc->rec = -1;
        *con_cls = fc;
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (strcmp(method, "POST") == 0 && ((ct && strncasecmp(ct, "text/event-stream", 17) == 0) ||
                                            strcmp(url, MCP_ROUTE_RESULTS) == 0))
            return fm_streamed_begin(fm, c, fc, url, method, session, auth);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (fc->len + *upload_size <= FM_MAX_BODY) {
            char *p = realloc(fc->data, fc->len + *upload_size + 1);
            if (p) {
                memcpy(p + fc->len, upload, *upload_size);
                fc->data = p;
                fc->len += *upload_size;
                p[fc->len] = '\0';
            }
        }
        if (fc->streamed && fc->rec >= 0) {
            pthread_mutex_lock(&fm->mu);
            if (fc->results && fm->results_cut) {
                fm->results_cut = false;
                pthread_mutex_unlock(&fm->mu);
                return MHD_NO;
            }
            struct fake_mcpd_req *r = &fm->recs[fc->rec];
            free(r->body);
            r->body = strdup(fc->data ? fc->data : "");
            if (r->pieces++ == 0)
                r->first_at = clock_mono_ms();
            pthread_cond_broadcast(&fm->cv);
            pthread_mutex_unlock(&fm->mu);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const char *body = fc->data ? fc->data : "";
    if (fc->streamed)
        return fm_streamed_end(fm, c, fc);

    pthread_mutex_lock(&fm->mu);
    enum MHD_Result rc;
    int status = 0;
    enum fake_mcpd_route route;
    bool post = strcmp(method, "POST") == 0;
    size_t tp = strlen(MCP_ROUTE_TASK_PREFIX);
    if (post && strcmp(url, MCP_ROUTE_REGISTER) == 0)
        route = FAKE_MCPD_REGISTER;
    else if (strcmp(method, "GET") == 0 && strcmp(url, MCP_ROUTE_STREAM) == 0)
        route = FAKE_MCPD_STREAM;
    else if (post && strcmp(url, MCP_ROUTE_HEARTBEAT) == 0)
        route = FAKE_MCPD_HEARTBEAT;
    else if (post && strncmp(url, MCP_ROUTE_TASK_PREFIX, tp) == 0 && strlen(url) > tp + 7 &&
             strcmp(url + strlen(url) - 7, "/result") == 0)
        route = FAKE_MCPD_RESULT;
    else {
        status = 404;
        fm_record_locked(fm, method, url, session, auth, body, status);
        pthread_mutex_unlock(&fm->mu);
        return fm_json(c, 404, "{\"error\":\"no such route\"}");
    }
    char want[600];
    if (fm->token)
        snprintf(want, sizeof want, "Bearer %s", fm->token);
    if (fm->token && (!auth || strcmp(auth, want) != 0)) {
        status = 401;
    } else if ((status = fm_scripted_locked(fm, route)) != 0) {
        /* scripted failure */
    } else if (route != FAKE_MCPD_REGISTER && !fm_known_locked(fm, session)) {
        status = 404;
    }
    if (status) {
        fm_record_locked(fm, method, url, session, auth, body, status);
        pthread_mutex_unlock(&fm->mu);
        return fm_json(c, (unsigned)status,
                       status == 404 ? "{\"error\":\"no such provider session\"}"
                                     : "{\"error\":\"scripted\"}");
    }
    switch (route) {
    case FAKE_MCPD_REGISTER:
        rc = fm_register(fm, c, body, &status);
        fm_record_locked(fm, method, url, session, auth, body, status);
        break;
    case FAKE_MCPD_STREAM:
        fm_record_locked(fm, method, url, session, auth, body, 200);
        rc = fm_stream(fm, c, session);
        break;
    case FAKE_MCPD_HEARTBEAT:
        fm_record_locked(fm, method, url, session, auth, body, 200);
        pthread_mutex_unlock(&fm->mu);
        return fm_json(c, 200, "{\"ok\":true,\"revived\":0}");
    case FAKE_MCPD_RESULT:
    default:
        status = fm->result_status ? fm->result_status : 200;
        fm_record_locked(fm, method, url, session, auth, body, status);
        pthread_mutex_unlock(&fm->mu);
        return fm_json(c, (unsigned)status,
                       status == 200 ? "{\"ok\":true}" : "{\"error\":\"task is gone\"}");
    }
    pthread_mutex_unlock(&fm->mu);
    return rc;
}

static char *fm_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *out = NULL;
    size_t len = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        char *p = realloc(out, len + n + 1);
        if (!p) {
            free(out);
            fclose(f);
            return NULL;
        }
        memcpy(p + len, buf, n);
        len += n;
        p[len] = '\0';
        out = p;
    }
    fclose(f);
    return out;
}

static struct fake_mcpd *fm_start(const char *cert_file, const char *key_file)
{
    struct fake_mcpd *fm = calloc(1, sizeof *fm);
    if (!fm)
        return NULL;
    pthread_mutex_init(&fm->mu, NULL);
    pthread_cond_init(&fm->cv, NULL);
    fm->heartbeat_ms = 30000;
    fm->ping_ms = 20000;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    if (cert_file) {
        fm->tls_cert = fm_read_file(cert_file);
        fm->tls_key = fm_read_file(key_file);
        if (!fm->tls_cert || !fm->tls_key)
            goto fail;
        fm->d = MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, fm_handler, fm,
                                 MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_NOTIFY_COMPLETED,
                                 fm_completed, fm, MHD_OPTION_HTTPS_MEM_CERT, fm->tls_cert,
                                 MHD_OPTION_HTTPS_MEM_KEY, fm->tls_key, MHD_OPTION_END);
    } else {
        fm->d = MHD_start_daemon(flags, 0, NULL, NULL, fm_handler, fm, MHD_OPTION_SOCK_ADDR, &addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, fm_completed, fm, MHD_OPTION_END);
    }
    if (!fm->d)
        goto fail;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(fm->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(fm->url, sizeof fm->url, "%s://127.0.0.1:%d", cert_file ? "https" : "http",
             di ? di->port : 0);
    return fm;
fail:
    fprintf(stderr, "fake_mcpd: cannot start the daemon\n");
    free(fm->tls_cert);
    free(fm->tls_key);
    pthread_mutex_destroy(&fm->mu);
    pthread_cond_destroy(&fm->cv);
    free(fm);
    return NULL;
}

struct fake_mcpd *fake_mcpd_start(void)
{
    return fm_start(NULL, NULL);
}

struct fake_mcpd *fake_mcpd_start_tls(const char *cert_file, const char *key_file)
{
    return fm_start(cert_file, key_file);
}

void fake_mcpd_req_free(struct fake_mcpd_req *r)
{
    if (!r)
        return;
    free(r->method);
    free(r->path);
    free(r->session);
    free(r->auth);
    free(r->body);
    free(r->ctype);
    free(r);
}

void fake_mcpd_stop(struct fake_mcpd *fm)
{
    if (!fm)
        return;
    pthread_mutex_lock(&fm->mu);
    fm->stopping = true;
    pthread_mutex_unlock(&fm->mu);
    MHD_stop_daemon(fm->d);
    for (size_t i = 0; i < fm->nrecs; i++) {
        struct fake_mcpd_req *r = &fm->recs[i];
        free(r->method);
        free(r->path);
        free(r->session);
        free(r->auth);
        free(r->body);
        free(r->ctype);
    }
    free(fm->recs);
    free(fm->tls_cert);
    free(fm->tls_key);
    for (int i = 0; i < fm->nsessions; i++)
        free(fm->sessions[i]);
    free(fm->token);
    pthread_mutex_destroy(&fm->mu);
    pthread_cond_destroy(&fm->cv);
    free(fm);
}

const char *fake_mcpd_url(const struct fake_mcpd *fm)
{
    return fm->url;
}

void fake_mcpd_set_intervals(struct fake_mcpd *fm, int heartbeat_ms, int ping_ms)
{
    pthread_mutex_lock(&fm->mu);
    fm->heartbeat_ms = heartbeat_ms;
    fm->ping_ms = ping_ms;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_set_token(struct fake_mcpd *fm, const char *token)
{
    pthread_mutex_lock(&fm->mu);
    free(fm->token);
    fm->token = token ? strdup(token) : NULL;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_fail(struct fake_mcpd *fm, enum fake_mcpd_route route, int times, int status)
{
    pthread_mutex_lock(&fm->mu);
    fm->fail_times[route] = times;
    fm->fail_status[route] = status;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_set_result_status(struct fake_mcpd *fm, int status)
{
    pthread_mutex_lock(&fm->mu);
    fm->result_status = status;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_set_results(struct fake_mcpd *fm, enum fake_mcpd_results mode)
{
    pthread_mutex_lock(&fm->mu);
    fm->results_mode = (int)mode;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_cut_results(struct fake_mcpd *fm)
{
    pthread_mutex_lock(&fm->mu);
    fm->results_cut = true;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_set_streamed(struct fake_mcpd *fm, enum fake_mcpd_streamed mode)
{
    pthread_mutex_lock(&fm->mu);
    fm->streamed_mode = (int)mode;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_forget_sessions(struct fake_mcpd *fm)
{
    pthread_mutex_lock(&fm->mu);
    for (int i = 0; i < fm->nsessions; i++)
        free(fm->sessions[i]);
    fm->nsessions = 0;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_drop_after(struct fake_mcpd *fm, int events)
{
    pthread_mutex_lock(&fm->mu);
    fm->drop_after = events;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_drop_streams(struct fake_mcpd *fm)
{
    pthread_mutex_lock(&fm->mu);
    for (struct fm_stream *s = fm->streams; s; s = s->next)
        s->closing = true;
    pthread_mutex_unlock(&fm->mu);
}

void fake_mcpd_set_silent(struct fake_mcpd *fm, bool silent)
{
    pthread_mutex_lock(&fm->mu);
    fm->silent = silent;
    pthread_mutex_unlock(&fm->mu);
}

int fake_mcpd_push(struct fake_mcpd *fm, const char *event, const char *id, const char *data)
{
    size_t n = strlen(event) + (id ? strlen(id) : 0) + strlen(data) + 32;
    char *text = malloc(n);
    if (!text)
        return -1;
    if (id)
        snprintf(text, n, "event: %s\nid: %s\ndata: %s\n\n", event, id, data);
    else
        snprintf(text, n, "event: %s\ndata: %s\n\n", event, data);
    pthread_mutex_lock(&fm->mu);
    struct fm_stream *s = fm->streams;
    while (s && s->closing)
        s = s->next;
    int rc = -1;
    if (s) {
        fm_queue_locked(s, text, true);
        rc = 0;
    }
    pthread_mutex_unlock(&fm->mu);
    free(text);
    return rc;
}

int fake_mcpd_push_infer(struct fake_mcpd *fm, const char *task_id, const char *llm, bool streaming,
                         const char *body)
{
    size_t n = strlen(task_id) + strlen(llm) + strlen(body) + 128;
    char *data = malloc(n);
    if (!data)
        return -1;
    snprintf(data, n,
             "{\"kind\":\"infer\",\"taskId\":\"%s\",\"llmName\":\"%s\",\"streaming\":%s,"
             "\"body\":%s}",
             task_id, llm, streaming ? "true" : "false", body);
    int rc = fake_mcpd_push(fm, MCP_EVENT_TASK, task_id, data);
    free(data);
    return rc;
}

int fake_mcpd_push_wake(struct fake_mcpd *fm, const char *task_id, const char *llm)
{
    char data[512];
    snprintf(data, sizeof data, "{\"kind\":\"wake\",\"taskId\":\"%s\",\"llmName\":\"%s\"}", task_id,
             llm);
    return fake_mcpd_push(fm, MCP_EVENT_TASK, task_id, data);
}

int fake_mcpd_push_cancel(struct fake_mcpd *fm, const char *task_id)
{
    char data[256];
    snprintf(data, sizeof data, "{\"taskId\":\"%s\"}", task_id);
    return fake_mcpd_push(fm, MCP_EVENT_CANCEL, NULL, data);
}

int fake_mcpd_streams_opened(struct fake_mcpd *fm)
{
    pthread_mutex_lock(&fm->mu);
    int n = fm->opened;
    pthread_mutex_unlock(&fm->mu);
    return n;
}

int fake_mcpd_streams_open(struct fake_mcpd *fm)
{
    pthread_mutex_lock(&fm->mu);
    int n = fm->open;
    pthread_mutex_unlock(&fm->mu);
    return n;
}

static bool fm_stream_ready_locked(struct fake_mcpd *fm, int n)
{
    if (fm->opened < n)
        return false;
    for (struct fm_stream *s = fm->streams; s; s = s->next)
        if (!s->closing)
            return true;
    return false;
}

int fake_mcpd_wait_stream(struct fake_mcpd *fm, int n, int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fm->mu);
    int rc = 0;
    while (!fm_stream_ready_locked(fm, n)) {
        if (pthread_cond_timedwait(&fm->cv, &fm->mu, &dl) != 0) {
            rc = fm_stream_ready_locked(fm, n) ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fm->mu);
    return rc;
}

int fake_mcpd_wait_no_stream(struct fake_mcpd *fm, int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fm->mu);
    int rc = 0;
    while (fm->open > 0) {
        if (pthread_cond_timedwait(&fm->cv, &fm->mu, &dl) != 0) {
            rc = fm->open == 0 ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fm->mu);
    return rc;
}

static int fm_count_locked(struct fake_mcpd *fm, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < fm->nrecs; i++)
        if (strncmp(fm->recs[i].path, prefix, pl) == 0)
            n++;
    return n;
}

int fake_mcpd_count(struct fake_mcpd *fm, const char *prefix)
{
    pthread_mutex_lock(&fm->mu);
    int n = fm_count_locked(fm, prefix);
    pthread_mutex_unlock(&fm->mu);
    return n;
}

int fake_mcpd_wait_count(struct fake_mcpd *fm, const char *prefix, int n, int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fm->mu);
    int rc = 0;
    while (fm_count_locked(fm, prefix) < n) {
        if (pthread_cond_timedwait(&fm->cv, &fm->mu, &dl) != 0) {
            rc = fm_count_locked(fm, prefix) >= n ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fm->mu);
    return rc;
}

static bool fm_has_body_locked(struct fake_mcpd *fm, const char *prefix, const char *needle)
{
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < fm->nrecs; i++)
        if (strncmp(fm->recs[i].path, prefix, pl) == 0 && strstr(fm->recs[i].body, needle))
            return true;
    return false;
}

int fake_mcpd_wait_body(struct fake_mcpd *fm, const char *prefix, const char *needle,
                        int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fm->mu);
    int rc = 0;
    while (!fm_has_body_locked(fm, prefix, needle)) {
        if (pthread_cond_timedwait(&fm->cv, &fm->mu, &dl) != 0) {
            rc = fm_has_body_locked(fm, prefix, needle) ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fm->mu);
    return rc;
}

static bool fm_last_complete_locked(struct fake_mcpd *fm, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (size_t i = fm->nrecs; i > 0; i--)
        if (strncmp(fm->recs[i - 1].path, prefix, pl) == 0)
            return fm->recs[i - 1].complete;
    return false;
}

int fake_mcpd_wait_complete(struct fake_mcpd *fm, const char *prefix, int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fm->mu);
    int rc = 0;
    while (!fm_last_complete_locked(fm, prefix)) {
        if (pthread_cond_timedwait(&fm->cv, &fm->mu, &dl) != 0) {
            rc = fm_last_complete_locked(fm, prefix) ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fm->mu);
    return rc;
}

struct fake_mcpd_req *fake_mcpd_get(struct fake_mcpd *fm, const char *prefix, int index)
{
    pthread_mutex_lock(&fm->mu);
    size_t pl = strlen(prefix);
    int total = fm_count_locked(fm, prefix);
    if (index < 0)
        index = total + index;
    struct fake_mcpd_req *out = NULL;
    int k = 0;
    for (size_t i = 0; i < fm->nrecs && index >= 0; i++) {
        if (strncmp(fm->recs[i].path, prefix, pl) != 0)
            continue;
        if (k++ != index)
            continue;
        struct fake_mcpd_req *r = &fm->recs[i];
        out = calloc(1, sizeof *out);
        if (out) {
            out->method = strdup(r->method);
            out->path = strdup(r->path);
            out->session = strdup(r->session);
            out->auth = strdup(r->auth);
            out->body = strdup(r->body);
            out->ctype = strdup(r->ctype);
            out->at_ms = r->at_ms;
            out->status = r->status;
            out->streamed = r->streamed;
            out->complete = r->complete;
            out->pieces = r->pieces;
            out->first_at = r->first_at;
        }
        break;
    }
    pthread_mutex_unlock(&fm->mu);
    return out;
}

void fake_mcpd_result_path(const char *task_id, char *out, unsigned long outlen)
{
    snprintf(out, outlen, "%s%s/result", MCP_ROUTE_TASK_PREFIX, task_id);
}
