#include "fake_backend.h"
#include "fake_http.h"

#include "clock.h"

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

#define FB_MAX_CHUNKS 4096
#define FB_MAX_BODY (4 * 1024 * 1024)
/* The vector every embedding is (exact in float32). */
#define FB_EMBEDDING                                                                               \
    {                                                                                              \
        0.5f, -0.25f, 0.125f                                                                       \
    }
#define FB_EMBEDDING_JSON "[0.5,-0.25,0.125]"

struct fb_rec {
    char *method;
    char *path;
    char *headers; /* "Name: value\n" lines */
    char *body;
    char *reply; /* a whole answer's body, or NULL */
};

struct fake_backend {
    struct MHD_Daemon *d;
    int port;
    char url[64];
    char wake_url[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    /* script */
    int chunks;
    int delay_ms;
    int fail_status;
    bool asleep;
    int64_t wake_at; /* -1: not woken */
    int wake_status;
    int wake_up_after_ms;
    int models_delay_ms;
    int answer_delay_ms; /* before a whole (non-streaming) chat answer */
    int reply_status;
    char *reply_ctype, *reply_body;
    char **reply_headers;
    int cut_after;
    char *stream_ctype;
    bool named;
    bool realistic;
    char *sent; /* the latest stream's bytes */
    size_t sent_len;
    /* records */
    struct fb_rec *recs;
    size_t nrecs, caprecs;
    int aborted;
    int completed;
    int64_t chunk_ms[FB_MAX_CHUNKS];
    unsigned stream_gen;
};

/* Whether a request asks for a stream's usage (stream_options.include_usage). */
static bool fb_include_usage(json_t *req)
{
    return json_is_true(json_object_get(json_object_get(req, "stream_options"), "include_usage"));
}

/* What a streaming answer looks like. */
enum fb_kind {
    FB_CHAT,        /* chat.completion.chunk data events, data: [DONE] */
    FB_COMPLETIONS, /* text_completion data events, data: [DONE] */
    FB_RESPONSES,   /* named response.* events */
    FB_MESSAGES,    /* Anthropic's named message events */
};

struct fb_stream {
    struct fake_backend *fb;
    struct MHD_Connection *conn;
    unsigned gen;
    enum fb_kind kind;
    int n, delay_ms, next, cut_after;
    int ev; /* events produced so far, deltas included */
    bool named;
    bool include_usage; /* the request's stream_options.include_usage */
    char model[256];
    char *qmodel; /* the model as a JSON string */
    char *pending;
    size_t plen, poff;
    bool finished;
};

static int64_t fb_now(void)
{
    return clock_mono_ms();
}

static enum MHD_Result fb_header_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    char **acc = cls;
    size_t old = *acc ? strlen(*acc) : 0;
    size_t add = strlen(key) + (value ? strlen(value) : 0) + 4;
    char *p = realloc(*acc, old + add);
    if (!p)
        return MHD_NO;
    snprintf(p + old, add, "%s: %s\n", key, value ? value : "");
    *acc = p;
    return MHD_YES;
}

/* Returns the record's index, or (size_t)-1. */
static size_t fb_record(struct fake_backend *fb, struct MHD_Connection *c, const char *method,
                        const char *path, const char *body)
{
    char *headers = NULL;
    MHD_get_connection_values(c, MHD_HEADER_KIND, fb_header_iter, &headers);
    pthread_mutex_lock(&fb->mu);
    if (fb->nrecs == fb->caprecs) {
        size_t cap = fb->caprecs ? fb->caprecs * 2 : 64;
        struct fb_rec *r = realloc(fb->recs, cap * sizeof *r);
        if (!r) {
            pthread_mutex_unlock(&fb->mu);
            free(headers);
            return (size_t)-1;
        }
        fb->recs = r;
        fb->caprecs = cap;
    }
    struct fb_rec *r = &fb->recs[fb->nrecs++];
    r->method = strdup(method);
    r->path = strdup(path);
    r->headers = headers ? headers : strdup("");
    r->body = strdup(body ? body : "");
    r->reply = NULL;
    size_t idx = fb->nrecs - 1;
    pthread_cond_broadcast(&fb->cv);
    pthread_mutex_unlock(&fb->mu);
    return idx;
}

/* Answers 200 with a JSON body and keeps the body with record idx. */
static enum MHD_Result fb_json_recorded(struct fake_backend *fb, struct MHD_Connection *c,
                                        size_t idx, const char *body)
{
    pthread_mutex_lock(&fb->mu);
    if (idx < fb->nrecs) {
        free(fb->recs[idx].reply);
        fb->recs[idx].reply = strdup(body);
    }
    pthread_mutex_unlock(&fb->mu);
    return fake_http_reply(c, 200, "application/json", body);
}

static enum MHD_Result fb_json(struct MHD_Connection *c, unsigned status, const char *body)
{
    return fake_http_reply(c, status, "application/json", body);
}

static bool fb_is_asleep(struct fake_backend *fb)
{
    if (!fb->asleep)
        return false;
    if (fb->wake_at >= 0 && fb_now() >= fb->wake_at) {
        fb->asleep = false;
        return false;
    }
    return true;
}

/* Events before the first delta and after the last one. */
static int fb_pre(enum fb_kind k)
{
    return k == FB_RESPONSES ? 4 : k == FB_MESSAGES ? 3 : 0;
}

static int fb_post(const struct fb_stream *st)
{
    if (st->kind == FB_RESPONSES)
        return 4;
    if (st->kind == FB_MESSAGES)
        return 3;
    return st->include_usage ? 2 : 1; /* the usage chunk, [DONE] */
}

/* "tok0tok1…" up to n, as a new string. */
static char *fb_all_tokens(int n)
{
    size_t cap = (size_t)n * 8 + 1, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "tok%d", i);
    return out;
}

/* A Responses API response object with the given status and text (NULL:
 * no output yet), as a new string. */
static char *fb_response_object(const char *qmodel, const char *status, const char *text)
{
    json_t *t = json_string(text ? text : "");
    char *qtext = json_dumps(t, JSON_ENCODE_ANY);
    json_decref(t);
    char *out = NULL;
    char output[4096 + 256];
    if (text && qtext && strlen(qtext) < 4096)
        snprintf(output, sizeof output,
                 "[{\"type\":\"message\",\"id\":\"msg_fake\",\"status\":\"completed\","
                 "\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":%s,"
                 "\"annotations\":[]}]}]",
                 qtext);
    else
        snprintf(output, sizeof output, "[]");
    if (asprintf(&out,
                 "{\"id\":\"resp_fake\",\"object\":\"response\",\"created_at\":1700000000,"
                 "\"status\":\"%s\",\"error\":null,\"incomplete_details\":null,"
                 "\"instructions\":null,\"model\":%s,\"output\":%s,\"parallel_tool_calls\":true,"
                 "\"temperature\":1.0,\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,"
                 "\"usage\":%s}",
                 status, qmodel, output,
                 text ? "{\"input_tokens\":1,\"output_tokens\":3,\"total_tokens\":4}" : "null") < 0)
        out = NULL;
    free(qtext);
    return out;
}

/* Event number st->ev of the stream as a new string; NULL after the last.
 * *delta says whether it is one of the n token deltas. */
static char *fb_event(struct fb_stream *st, bool *delta)
{
    int pre = fb_pre(st->kind), i = st->ev - pre;
    *delta = i >= 0 && i < st->n;
    if (i >= st->n + fb_post(st))
        return NULL;
    char *out = NULL;
    int rc = 0;
    const char *m = st->qmodel;
    switch (st->kind) {
    case FB_CHAT:
        if (*delta)
            rc = asprintf(&out,
                          "%sdata: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\","
                          "\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                          "\"tok%d\"},\"finish_reason\":null}]}\n\n",
                          st->named ? "event: delta\n" : "", st->model, i);
        else if (i == st->n && st->include_usage)
            rc = asprintf(&out,
                          "data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\","
                          "\"model\":\"%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
                          "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                          st->model, st->n, st->n + 1);
        else
            out = strdup(st->named ? "event: done\ndata: [DONE]\n\n" : "data: [DONE]\n\n");
        break;
    case FB_COMPLETIONS:
        if (*delta)
            rc = asprintf(&out,
                          "data: {\"id\":\"cmpl-fake\",\"object\":\"text_completion\","
                          "\"created\":1700000000,\"model\":%s,\"choices\":[{\"text\":\"tok%d\","
                          "\"index\":0,\"logprobs\":null,\"finish_reason\":%s}]}\n\n",
                          m, i, i == st->n - 1 ? "\"stop\"" : "null");
        else if (i == st->n && st->include_usage)
            rc = asprintf(&out,
                          "data: {\"id\":\"cmpl-fake\",\"object\":\"text_completion\","
                          "\"created\":1700000000,\"model\":%s,\"choices\":[],\"usage\":"
                          "{\"prompt_tokens\":1,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                          m, st->n, st->n + 1);
        else
            out = strdup("data: [DONE]\n\n");
        break;
    case FB_RESPONSES:
        if (i == -4 || i == -3) {
            char *resp = fb_response_object(m, "in_progress", NULL);
            const char *type = i == -4 ? "response.created" : "response.in_progress";
            rc = asprintf(&out,
                          "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%d,"
                          "\"response\":%s}\n\n",
                          type, type, st->ev, resp ? resp : "{}");
            free(resp);
        } else if (i == -2) {
            rc = asprintf(&out,
                          "event: response.output_item.added\ndata: {\"type\":"
                          "\"response.output_item.added\",\"sequence_number\":%d,"
                          "\"output_index\":0,\"item\":{\"id\":\"msg_fake\",\"type\":\"message\","
                          "\"status\":\"in_progress\",\"content\":[],\"role\":\"assistant\"}}\n\n",
                          st->ev);
        } else if (i == -1) {
            rc = asprintf(&out,
                          "event: response.content_part.added\ndata: {\"type\":"
                          "\"response.content_part.added\",\"sequence_number\":%d,\"item_id\":"
                          "\"msg_fake\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":"
                          "\"output_text\",\"annotations\":[],\"text\":\"\"}}\n\n",
                          st->ev);
        } else if (*delta) {
            rc = asprintf(&out,
                          "event: response.output_text.delta\ndata: {\"type\":"
                          "\"response.output_text.delta\",\"sequence_number\":%d,\"item_id\":"
                          "\"msg_fake\",\"output_index\":0,\"content_index\":0,\"delta\":"
                          "\"tok%d\"}\n\n",
                          st->ev, i);
        } else {
            char *text = fb_all_tokens(st->n);
            const char *t = text ? text : "";
            if (i == st->n) {
                rc = asprintf(&out,
                              "event: response.output_text.done\ndata: {\"type\":"
                              "\"response.output_text.done\",\"sequence_number\":%d,\"item_id\":"
                              "\"msg_fake\",\"output_index\":0,\"content_index\":0,\"text\":"
                              "\"%s\"}\n\n",
                              st->ev, t);
            } else if (i == st->n + 1) {
                rc = asprintf(&out,
                              "event: response.content_part.done\ndata: {\"type\":"
                              "\"response.content_part.done\",\"sequence_number\":%d,\"item_id\":"
                              "\"msg_fake\",\"output_index\":0,\"content_index\":0,\"part\":"
                              "{\"type\":\"output_text\",\"annotations\":[],\"text\":\"%s\"}}\n\n",
                              st->ev, t);
            } else if (i == st->n + 2) {
                rc = asprintf(&out,
                              "event: response.output_item.done\ndata: {\"type\":"
                              "\"response.output_item.done\",\"sequence_number\":%d,"
                              "\"output_index\":0,\"item\":{\"id\":\"msg_fake\",\"type\":"
                              "\"message\",\"status\":\"completed\",\"content\":[{\"type\":"
                              "\"output_text\",\"annotations\":[],\"text\":\"%s\"}],\"role\":"
                              "\"assistant\"}}\n\n",
                              st->ev, t);
            } else {
                char *resp = fb_response_object(m, "completed", t);
                rc = asprintf(&out,
                              "event: response.completed\ndata: {\"type\":\"response.completed\","
                              "\"sequence_number\":%d,\"response\":%s}\n\n",
                              st->ev, resp ? resp : "{}");
                free(resp);
            }
            free(text);
        }
        break;
    case FB_MESSAGES:
        if (i == -3)
            rc = asprintf(&out,
                          "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                          "{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\","
                          "\"model\":%s,\"content\":[],\"stop_reason\":null,"
                          "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
                          "\"output_tokens\":1}}}\n\n",
                          m);
        else if (i == -2)
            out = strdup("event: content_block_start\ndata: {\"type\":\"content_block_start\","
                         "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        else if (i == -1)
            out = strdup("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        else if (*delta)
            rc = asprintf(&out,
                          "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                          "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok%d\"}}"
                          "\n\n",
                          i);
        else if (i == st->n)
            out = strdup("event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                         "\"index\":0}\n\n");
        else if (i == st->n + 1)
            rc = asprintf(&out,
                          "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                          "{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":"
                          "{\"output_tokens\":%d}}\n\n",
                          st->n);
        else
            out = strdup("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        break;
    }
    if (rc < 0)
        out = NULL;
    return out ? out : strdup("");
}

static ssize_t fb_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct fb_stream *st = cls;
    struct fake_backend *fb = st->fb;
    if (st->poff < st->plen) {
        size_t n = st->plen - st->poff;
        if (n > max)
            n = max;
        memcpy(buf, st->pending + st->poff, n);
        pthread_mutex_lock(&fb->mu);
        if (st->gen == fb->stream_gen) {
            char *p = realloc(fb->sent, fb->sent_len + n + 1);
            if (p) {
                memcpy(p + fb->sent_len, buf, n);
                fb->sent_len += n;
                p[fb->sent_len] = '\0';
                fb->sent = p;
            }
        }
        pthread_mutex_unlock(&fb->mu);
        st->poff += n;
        return (ssize_t)n;
    }
    free(st->pending);
    st->pending = NULL;
    st->plen = st->poff = 0;
    if (st->cut_after > 0 && st->next >= st->cut_after)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    bool delta;
    char *ev = fb_event(st, &delta);
    if (!ev)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (delta) {
        /* Sleep in slices so a client that goes away is noticed at once. */
        for (int waited = 0; waited < st->delay_ms; waited += 5) {
            pthread_mutex_lock(&fb->mu);
            bool stopping = fb->stopping;
            pthread_mutex_unlock(&fb->mu);
            if (stopping || fake_http_peer_gone(st->conn)) {
                free(ev);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            fake_http_sleep_ms(st->delay_ms - waited < 5 ? st->delay_ms - waited : 5);
        }
        if (fake_http_peer_gone(st->conn)) {
            free(ev);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        pthread_mutex_lock(&fb->mu);
        if (st->gen == fb->stream_gen && st->next < FB_MAX_CHUNKS)
            fb->chunk_ms[st->next] = fb_now();
        pthread_mutex_unlock(&fb->mu);
        st->next++;
    }
    st->ev++;
    if (st->ev == fb_pre(st->kind) + st->n + fb_post(st))
        st->finished = true;
    st->pending = ev;
    st->plen = strlen(ev);
    return fb_stream_read(cls, pos, buf, max);
}

static void fb_stream_free(void *cls)
{
    struct fb_stream *st = cls;
    struct fake_backend *fb = st->fb;
    pthread_mutex_lock(&fb->mu);
    if (st->finished)
        fb->completed++;
    else
        fb->aborted++;
    pthread_cond_broadcast(&fb->cv);
    pthread_mutex_unlock(&fb->mu);
    free(st->pending);
    free(st->qmodel);
    free(st);
}

/* Starts a streaming answer of the given kind; model is the request's. */
static enum MHD_Result fb_stream_start(struct fake_backend *fb, struct MHD_Connection *c,
                                       enum fb_kind kind, const char *model, bool include_usage)
{
    struct fb_stream *st = calloc(1, sizeof *st);
    if (!st)
        return MHD_NO;
    st->fb = fb;
    st->conn = c;
    st->kind = kind;
    st->include_usage = include_usage;
    snprintf(st->model, sizeof st->model, "%s", model);
    json_t *q = json_string(model);
    st->qmodel = q ? json_dumps(q, JSON_ENCODE_ANY) : NULL;
    json_decref(q);
    if (!st->qmodel)
        st->qmodel = strdup("\"\"");
    pthread_mutex_lock(&fb->mu);
    st->n = fb->chunks;
    st->delay_ms = fb->delay_ms;
    st->cut_after = fb->cut_after;
    st->named = fb->named;
    char ctype[128];
    snprintf(ctype, sizeof ctype, "%s", fb->stream_ctype ? fb->stream_ctype : "text/event-stream");
    free(fb->sent);
    fb->sent = NULL;
    fb->sent_len = 0;
    st->gen = ++fb->stream_gen;
    for (int i = 0; i < FB_MAX_CHUNKS; i++)
        fb->chunk_ms[i] = -1;
    pthread_mutex_unlock(&fb->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                               fb_stream_read, st, fb_stream_free);
    if (!r) {
        free(st->qmodel);
        free(st);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result fb_chat(struct fake_backend *fb, struct MHD_Connection *c, const char *body)
{
    json_t *req = json_loads(body, 0, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return fb_json(c, 400, "{\"error\":{\"message\":\"body is not JSON\"}}");
    }
    const char *model = json_string_value(json_object_get(req, "model"));
    char m[256];
    snprintf(m, sizeof m, "%s", model ? model : "");
    bool stream = json_is_true(json_object_get(req, "stream"));
    bool include_usage = fb_include_usage(req);
    json_decref(req);

    pthread_mutex_lock(&fb->mu);
    int fail = fb->fail_status;
    int reply = fb->reply_status;
    int answer_delay = fb->answer_delay_ms;
    pthread_mutex_unlock(&fb->mu);
    if (reply) {
        pthread_mutex_lock(&fb->mu);
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen(fb->reply_body), fb->reply_body, MHD_RESPMEM_MUST_COPY);
        if (r) {
            if (fb->reply_ctype)
                MHD_add_response_header(r, "Content-Type", fb->reply_ctype);
            for (size_t i = 0; fb->reply_headers && fb->reply_headers[i]; i++) {
                char name[128];
                const char *colon = strchr(fb->reply_headers[i], ':');
                if (!colon)
                    continue;
                snprintf(name, sizeof name, "%.*s", (int)(colon - fb->reply_headers[i]),
                         fb->reply_headers[i]);
                const char *v = colon + 1;
                while (*v == ' ')
                    v++;
                MHD_add_response_header(r, name, v);
            }
        }
        pthread_mutex_unlock(&fb->mu);
        if (!r)
            return MHD_NO;
        enum MHD_Result rc = MHD_queue_response(c, (unsigned)reply, r);
        MHD_destroy_response(r);
        return rc;
    }
    if (fail)
        return fb_json(c, (unsigned)fail,
                       "{\"error\":{\"message\":\"fake failure\",\"type\":\"server_error\"}}");
    if (!stream) {
        if (answer_delay > 0)
            fake_http_sleep_ms(answer_delay);
        char out[1024];
        snprintf(out, sizeof out,
                 "{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion\",\"model\":\"%s\","
                 "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                 "\"hello from fake\"},\"finish_reason\":\"stop\"}],"
                 "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":3,\"total_tokens\":4}}",
                 m);
        return fb_json(c, 200, out);
    }
    return fb_stream_start(fb, c, FB_CHAT, m, include_usage);
}

/* Base64 of len bytes, as a new string. */
static char *fb_base64(const unsigned char *in, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* An embeddings list: one FB_EMBEDDING vector per input, as floats or as
 * base64 of little-endian float32s (encoding_format "base64"). */
static char *fb_embeddings(const char *qmodel, json_t *req)
{
    json_t *input = json_object_get(req, "input");
    size_t count = 1;
    if (json_is_array(input) && json_array_size(input) > 0 &&
        !json_is_integer(json_array_get(input, 0)))
        count = json_array_size(input);
    bool b64 = json_is_string(json_object_get(req, "encoding_format")) &&
               strcmp(json_string_value(json_object_get(req, "encoding_format")), "base64") == 0;
    static const float vec[] = FB_EMBEDDING;
    char *vtext;
    if (b64) {
        unsigned char raw[sizeof vec];
        for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
            uint32_t u;
            memcpy(&u, &vec[i], sizeof u);
            for (int k = 0; k < 4; k++)
                raw[i * 4 + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
        char *b = fb_base64(raw, sizeof raw);
        if (!b || asprintf(&vtext, "\"%s\"", b) < 0)
            vtext = NULL;
        free(b);
    } else {
        vtext = strdup(FB_EMBEDDING_JSON);
    }
    if (!vtext)
        return NULL;
    size_t cap = count * (strlen(vtext) + 64) + 512, len = 0;
    char *out = malloc(cap);
    if (out) {
        len += (size_t)snprintf(out + len, cap - len, "{\"object\":\"list\",\"data\":[");
        for (size_t i = 0; i < count; i++)
            len += (size_t)snprintf(out + len, cap - len,
                                    "%s{\"object\":\"embedding\",\"embedding\":%s,\"index\":%zu}",
                                    i ? "," : "", vtext, i);
        snprintf(out + len, cap - len,
                 "],\"model\":%s,\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}", qmodel);
    }
    free(vtext);
    return out;
}

/* /v1/completions, /v1/embeddings, /v1/responses and /v1/messages as the
 * real APIs answer them. */
static enum MHD_Result fb_route(struct fake_backend *fb, struct MHD_Connection *c, size_t idx,
                                const char *url, const char *body)
{
    json_t *req = json_loads(body, 0, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return fb_json(c, 400, "{\"error\":{\"message\":\"body is not JSON\"}}");
    }
    const char *model = json_string_value(json_object_get(req, "model"));
    char m[256];
    snprintf(m, sizeof m, "%s", model ? model : "");
    json_t *q = json_string(m);
    char *qm = q ? json_dumps(q, JSON_ENCODE_ANY) : NULL;
    json_decref(q);
    bool stream = json_is_true(json_object_get(req, "stream"));
    bool include_usage = fb_include_usage(req);
    enum fb_kind kind = strcmp(url, "/v1/completions") == 0 ? FB_COMPLETIONS
                        : strcmp(url, "/v1/responses") == 0 ? FB_RESPONSES
                                                            : FB_MESSAGES;
    char *out = NULL;
    int rc = 0;
    if (!qm) {
        out = NULL;
    } else if (strcmp(url, "/v1/embeddings") == 0) {
        out = fb_embeddings(qm, req);
        stream = false;
    } else if (stream) {
        /* below */
    } else if (kind == FB_COMPLETIONS) {
        rc = asprintf(&out,
                      "{\"id\":\"cmpl-fake\",\"object\":\"text_completion\","
                      "\"created\":1700000000,\"model\":%s,\"choices\":[{\"text\":\"hello from "
                      "fake\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                      "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":3,"
                      "\"total_tokens\":4}}",
                      qm);
    } else if (kind == FB_RESPONSES) {
        out = fb_response_object(qm, "completed", "hello from fake");
    } else {
        rc = asprintf(&out,
                      "{\"id\":\"msg_fake\",\"type\":\"message\",\"role\":\"assistant\","
                      "\"model\":%s,\"content\":[{\"type\":\"text\",\"text\":\"hello from "
                      "fake\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
                      "\"usage\":{\"input_tokens\":1,\"output_tokens\":3}}",
                      qm);
    }
    json_decref(req);
    free(qm);
    if (rc < 0)
        out = NULL;
    if (stream && !out)
        return fb_stream_start(fb, c, kind, m, include_usage);
    if (!out)
        return MHD_NO;
    enum MHD_Result ret = fb_json_recorded(fb, c, idx, out);
    free(out);
    return ret;
}

static bool fb_is_route(const char *url)
{
    return strcmp(url, "/v1/completions") == 0 || strcmp(url, "/v1/embeddings") == 0 ||
           strcmp(url, "/v1/responses") == 0 || strcmp(url, "/v1/messages") == 0;
}

static enum MHD_Result fb_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct fake_backend *fb = cls;
    const char *body = fake_http_collect(con_cls, upload, upload_size, FB_MAX_BODY);
    if (!body)
        return MHD_YES;
    size_t idx = fb_record(fb, c, method, url, body);

    if (strcmp(url, "/wake") == 0) {
        pthread_mutex_lock(&fb->mu);
        int status = fb->wake_status;
        if (status >= 200 && status < 300 && fb->asleep && fb->wake_up_after_ms >= 0 &&
            fb->wake_at < 0)
            fb->wake_at = fb_now() + fb->wake_up_after_ms;
        pthread_mutex_unlock(&fb->mu);
        return fb_json(c, (unsigned)status,
                       status < 300 ? "{\"ok\":true}" : "{\"error\":\"wake refused\"}");
    }
    if (strncmp(url, "/v1/", 4) != 0)
        return fb_json(c, 404, "{\"error\":{\"message\":\"no such route\"}}");
    pthread_mutex_lock(&fb->mu);
    bool asleep = fb_is_asleep(fb);
    int models_delay = fb->models_delay_ms;
    bool realistic = fb->realistic;
    pthread_mutex_unlock(&fb->mu);
    if (asleep)
        return fb_json(c, 503, "{\"error\":\"asleep\"}");
    if (strcmp(url, "/v1/models") == 0 && strcmp(method, "GET") == 0) {
        if (models_delay > 0)
            fake_http_sleep_ms(models_delay);
        return fb_json(c, 200,
                       "{\"object\":\"list\",\"data\":[{\"id\":\"fake-model\",\"object\":\"model\","
                       "\"owned_by\":\"fake\"}]}");
    }
    if (strcmp(url, "/v1/chat/completions") == 0 && strcmp(method, "POST") == 0)
        return fb_chat(fb, c, body);
    if (realistic && strcmp(method, "POST") == 0 && fb_is_route(url))
        return fb_route(fb, c, idx, url, body);
    if (strcmp(method, "POST") == 0) {
        json_t *req = json_loads(body, 0, NULL);
        json_t *out = json_pack("{s:s, s:s, s:O?}", "object", "echo", "path", url, "model",
                                json_object_get(req, "model"));
        char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
        json_decref(out);
        json_decref(req);
        enum MHD_Result rc = fb_json(c, 200, text ? text : "{}");
        free(text);
        return rc;
    }
    return fb_json(c, 404, "{\"error\":{\"message\":\"no such route\"}}");
}

struct fake_backend *fake_backend_start(void)
{
    struct fake_backend *fb = calloc(1, sizeof *fb);
    if (!fb)
        return NULL;
    pthread_mutex_init(&fb->mu, NULL);
    pthread_cond_init(&fb->cv, NULL);
    fb->chunks = 3;
    fb->wake_at = -1;
    fb->wake_status = 200;
    for (int i = 0; i < FB_MAX_CHUNKS; i++)
        fb->chunk_ms[i] = -1;
    fb->d = fake_http_start(fb_handler, fb, &fb->port);
    if (!fb->d) {
        fprintf(stderr, "fake_backend: cannot start the daemon\n");
        pthread_mutex_destroy(&fb->mu);
        pthread_cond_destroy(&fb->cv);
        free(fb);
        return NULL;
    }
    snprintf(fb->url, sizeof fb->url, "http://127.0.0.1:%d/v1", fb->port);
    snprintf(fb->wake_url, sizeof fb->wake_url, "http://127.0.0.1:%d/wake", fb->port);
    return fb;
}

void fake_backend_stop(struct fake_backend *fb)
{
    if (!fb)
        return;
    pthread_mutex_lock(&fb->mu);
    fb->stopping = true;
    pthread_mutex_unlock(&fb->mu);
    MHD_stop_daemon(fb->d);
    for (size_t i = 0; i < fb->nrecs; i++) {
        free(fb->recs[i].method);
        free(fb->recs[i].path);
        free(fb->recs[i].headers);
        free(fb->recs[i].body);
        free(fb->recs[i].reply);
    }
    free(fb->recs);
    free(fb->reply_ctype);
    free(fb->reply_body);
    for (size_t i = 0; fb->reply_headers && fb->reply_headers[i]; i++)
        free(fb->reply_headers[i]);
    free(fb->reply_headers);
    free(fb->stream_ctype);
    free(fb->sent);
    pthread_mutex_destroy(&fb->mu);
    pthread_cond_destroy(&fb->cv);
    free(fb);
}

const char *fake_backend_url(const struct fake_backend *fb)
{
    return fb->url;
}

const char *fake_backend_wake_url(const struct fake_backend *fb)
{
    return fb->wake_url;
}

int fake_backend_port(const struct fake_backend *fb)
{
    return fb->port;
}

void fake_backend_set_stream(struct fake_backend *fb, int chunks, int delay_ms)
{
    pthread_mutex_lock(&fb->mu);
    fb->chunks = chunks < FB_MAX_CHUNKS ? chunks : FB_MAX_CHUNKS;
    fb->delay_ms = delay_ms;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_fail(struct fake_backend *fb, int status)
{
    pthread_mutex_lock(&fb->mu);
    fb->fail_status = status;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_reply(struct fake_backend *fb, int status, const char *ctype,
                            const char *body, const char *const *headers)
{
    pthread_mutex_lock(&fb->mu);
    fb->reply_status = status;
    free(fb->reply_ctype);
    free(fb->reply_body);
    for (size_t i = 0; fb->reply_headers && fb->reply_headers[i]; i++)
        free(fb->reply_headers[i]);
    free(fb->reply_headers);
    fb->reply_ctype = ctype ? strdup(ctype) : NULL;
    fb->reply_body = strdup(body ? body : "");
    size_t n = 0;
    while (headers && headers[n])
        n++;
    fb->reply_headers = calloc(n + 1, sizeof *fb->reply_headers);
    for (size_t i = 0; i < n && fb->reply_headers; i++)
        fb->reply_headers[i] = strdup(headers[i]);
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_cut_after(struct fake_backend *fb, int chunks)
{
    pthread_mutex_lock(&fb->mu);
    fb->cut_after = chunks;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_stream_ctype(struct fake_backend *fb, const char *ctype)
{
    pthread_mutex_lock(&fb->mu);
    free(fb->stream_ctype);
    fb->stream_ctype = ctype ? strdup(ctype) : NULL;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_realistic(struct fake_backend *fb, bool on)
{
    pthread_mutex_lock(&fb->mu);
    fb->realistic = on;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_stream_named(struct fake_backend *fb, bool named)
{
    pthread_mutex_lock(&fb->mu);
    fb->named = named;
    pthread_mutex_unlock(&fb->mu);
}

char *fake_backend_stream_bytes(struct fake_backend *fb)
{
    pthread_mutex_lock(&fb->mu);
    char *out = strdup(fb->sent ? fb->sent : "");
    pthread_mutex_unlock(&fb->mu);
    return out;
}

void fake_backend_set_asleep(struct fake_backend *fb, bool asleep)
{
    pthread_mutex_lock(&fb->mu);
    fb->asleep = asleep;
    fb->wake_at = -1;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_wake(struct fake_backend *fb, int status, int up_after_ms)
{
    pthread_mutex_lock(&fb->mu);
    fb->wake_status = status;
    fb->wake_up_after_ms = up_after_ms;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_answer_delay(struct fake_backend *fb, int delay_ms)
{
    pthread_mutex_lock(&fb->mu);
    fb->answer_delay_ms = delay_ms;
    pthread_mutex_unlock(&fb->mu);
}

void fake_backend_set_models_delay(struct fake_backend *fb, int delay_ms)
{
    pthread_mutex_lock(&fb->mu);
    fb->models_delay_ms = delay_ms;
    pthread_mutex_unlock(&fb->mu);
}

static int fb_count_locked(struct fake_backend *fb, const char *path)
{
    int n = 0;
    for (size_t i = 0; i < fb->nrecs; i++)
        if (strcmp(fb->recs[i].path, path) == 0)
            n++;
    return n;
}

int fake_backend_count(struct fake_backend *fb, const char *path)
{
    pthread_mutex_lock(&fb->mu);
    int n = fb_count_locked(fb, path);
    pthread_mutex_unlock(&fb->mu);
    return n;
}

int fake_backend_wait_count(struct fake_backend *fb, const char *path, int n, int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fb->mu);
    int rc = 0;
    while (fb_count_locked(fb, path) < n) {
        if (pthread_cond_timedwait(&fb->cv, &fb->mu, &dl) != 0) {
            rc = fb_count_locked(fb, path) >= n ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fb->mu);
    return rc;
}

static struct fb_rec *fb_last(struct fake_backend *fb, const char *path)
{
    for (size_t i = fb->nrecs; i > 0; i--)
        if (strcmp(fb->recs[i - 1].path, path) == 0)
            return &fb->recs[i - 1];
    return NULL;
}

char *fake_backend_last_body(struct fake_backend *fb, const char *path)
{
    pthread_mutex_lock(&fb->mu);
    struct fb_rec *r = fb_last(fb, path);
    char *out = r ? strdup(r->body) : NULL;
    pthread_mutex_unlock(&fb->mu);
    return out;
}

char *fake_backend_last_reply(struct fake_backend *fb, const char *path)
{
    pthread_mutex_lock(&fb->mu);
    struct fb_rec *r = fb_last(fb, path);
    char *out = r && r->reply ? strdup(r->reply) : NULL;
    pthread_mutex_unlock(&fb->mu);
    return out;
}

char *fake_backend_last_header(struct fake_backend *fb, const char *path, const char *name)
{
    pthread_mutex_lock(&fb->mu);
    struct fb_rec *r = fb_last(fb, path);
    char *out = NULL;
    size_t nl = strlen(name);
    for (const char *line = r ? r->headers : NULL; line && *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            break;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            out = strndup(v, (size_t)(end - v));
            break;
        }
        line = end + 1;
    }
    pthread_mutex_unlock(&fb->mu);
    return out;
}

int fake_backend_aborted(struct fake_backend *fb)
{
    pthread_mutex_lock(&fb->mu);
    int n = fb->aborted;
    pthread_mutex_unlock(&fb->mu);
    return n;
}

/* Waits until *counter (guarded by fb->mu) reaches n. 0 or -1. */
static int wait_counter(struct fake_backend *fb, const int *counter, int n, int timeout_ms)
{
    struct timespec dl;
    fake_http_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&fb->mu);
    int rc = 0;
    while (*counter < n) {
        if (pthread_cond_timedwait(&fb->cv, &fb->mu, &dl) != 0) {
            rc = *counter >= n ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&fb->mu);
    return rc;
}

int fake_backend_wait_aborted(struct fake_backend *fb, int n, int timeout_ms)
{
    return wait_counter(fb, &fb->aborted, n, timeout_ms);
}

int fake_backend_wait_completed(struct fake_backend *fb, int n, int timeout_ms)
{
    return wait_counter(fb, &fb->completed, n, timeout_ms);
}

int fake_backend_streams_completed(struct fake_backend *fb)
{
    pthread_mutex_lock(&fb->mu);
    int n = fb->completed;
    pthread_mutex_unlock(&fb->mu);
    return n;
}

int64_t fake_backend_chunk_sent_ms(struct fake_backend *fb, int i)
{
    if (i < 0 || i >= FB_MAX_CHUNKS)
        return -1;
    pthread_mutex_lock(&fb->mu);
    int64_t t = fb->chunk_ms[i];
    pthread_mutex_unlock(&fb->mu);
    return t;
}
