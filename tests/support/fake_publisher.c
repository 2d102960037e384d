#include "fake_publisher.h"
#include "fake_http.h"
#include "http.h"
#include "sse.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FP_MAX_TASKS 4096

struct fp_task {
    struct fake_publisher *fp;
    char id[64];
    char kind[16];
    int streaming;
    char echo[256];
    struct fp_script script;
    unsigned int seed; /* for the jitter */
};

struct fake_publisher {
    char base[256];
    char token[256];
    char session[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fp_script script;
    char *transcript;
    size_t tlen, tcap;
    struct sse_parser parser;
    CURLM *multi;
    CURL *easy;
    struct curl_slist *hdrs;
    pthread_t stream_thread;
    int stream_done;
    int drop;
    char cancelled[FP_MAX_TASKS][40];
    int ncancelled;
    int live_tasks; /* task threads (detached) still running */
    unsigned int ntasks;
    long post_status[64];
    int post_count[64];
    int events_sent;
    long streamed_status;
};

/* The body of a streamed result post, produced as the transfer reads it. */
struct streamed {
    struct fp_task *t;
    int next;  /* the next event to send */
    int n;     /* deltas */
    int total; /* events, [DONE] included */
    char buf[4096];
    size_t len, off;
};

static void ms_sleep(int ms);
static void task_delay(struct fp_task *t);
static int is_cancelled(struct fake_publisher *fp, const char *id);

static int has_usage(const struct fp_script *s)
{
    return s->prompt_tokens || s->completion_tokens;
}

/* OpenAI's usage object of the script's counts, into out. */
static void usage_json(const struct fp_script *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}",
             s->prompt_tokens, s->completion_tokens, s->prompt_tokens + s->completion_tokens);
}

/* Event i of a streamed post into st->buf: the script's events verbatim,
 * else the deltas, a usage chunk when the script has counts, [DONE]. */
static void streamed_event(struct streamed *st, int i)
{
    const struct fp_script *s = &st->t->script;
    char usage[256];
    if (s->events) {
        st->len = (size_t)snprintf(st->buf, sizeof st->buf, "%s", s->events[i]);
    } else if (i < st->n) {
        st->len = (size_t)snprintf(st->buf, sizeof st->buf,
                                   "event: delta\ndata: {\"choices\":[{\"index\":0,"
                                   "\"delta\":{\"content\":\"tok%d \"}}]}\n\n",
                                   i);
    } else if (i == st->n && has_usage(s)) {
        usage_json(s, usage, sizeof usage);
        st->len = (size_t)snprintf(st->buf, sizeof st->buf,
                                   "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],"
                                   "\"usage\":%s}\n\n",
                                   usage);
    } else {
        st->len = (size_t)snprintf(st->buf, sizeof st->buf, "data: [DONE]\n\n");
    }
    if (st->len >= sizeof st->buf)
        st->len = sizeof st->buf - 1;
}

static size_t streamed_read(char *out, size_t size, size_t nmemb, void *ud)
{
    struct streamed *st = ud;
    struct fp_task *t = st->t;
    struct fake_publisher *fp = t->fp;
    if (st->off == st->len) {
        if (st->next >= st->total)
            return 0; /* the end of the body */
        if (t->script.cut_after > 0 && st->next == t->script.cut_after)
            return CURL_READFUNC_ABORT;
        if (st->next < st->n || t->script.events) {
            task_delay(t);
            if (is_cancelled(fp, t->id))
                return CURL_READFUNC_ABORT;
        }
        streamed_event(st, st->next);
        st->off = 0;
        st->next++;
        pthread_mutex_lock(&fp->mu);
        fp->events_sent++;
        pthread_cond_broadcast(&fp->cv);
        pthread_mutex_unlock(&fp->mu);
    }
    size_t k = st->len - st->off;
    if (k > size * nmemb)
        k = size * nmemb;
    memcpy(out, st->buf + st->off, k);
    st->off += k;
    return k;
}

static size_t discard(char *p, size_t size, size_t nmemb, void *ud)
{
    (void)p;
    (void)ud;
    return size * nmemb;
}

/* One streamed result post for a streaming task. */
static void post_streamed(struct fp_task *t)
{
    struct fake_publisher *fp = t->fp;
    char url[512], sess[128];
    snprintf(url, sizeof url, "%s/api/v1/llms/_provider-task/%s/result", fp->base, t->id);
    snprintf(sess, sizeof sess, "x-mcpctl-provider-session: %s", fp->session);
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", fp->token);
    struct curl_slist *h = curl_slist_append(NULL, sess);
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Content-Type: text/event-stream");
    h = curl_slist_append(h, "Expect:");
    struct streamed st = {.t = t, .n = t->script.chunks > 0 ? t->script.chunks : 3};
    if (t->script.events) {
        st.n = 0;
        while (t->script.events[st.n])
            st.n++;
        st.total = st.n;
    } else {
        st.total = st.n + 1 + (has_usage(&t->script) ? 1 : 0);
    }
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, streamed_read);
    curl_easy_setopt(e, CURLOPT_READDATA, &st);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    pthread_mutex_lock(&fp->mu);
    fp->streamed_status = status ? status : -1;
    pthread_cond_broadcast(&fp->cv);
    pthread_mutex_unlock(&fp->mu);
}

int fake_publisher_events_sent(struct fake_publisher *fp)
{
    pthread_mutex_lock(&fp->mu);
    int n = fp->events_sent;
    pthread_mutex_unlock(&fp->mu);
    return n;
}

long fake_publisher_last_streamed_status(struct fake_publisher *fp)
{
    pthread_mutex_lock(&fp->mu);
    long st = fp->streamed_status;
    pthread_mutex_unlock(&fp->mu);
    return st;
}

static void ms_sleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Waits delay_ms plus the script's jitter. */
static void task_delay(struct fp_task *t)
{
    int ms = t->script.delay_ms;
    if (t->script.jitter_ms > 0)
        ms += (int)(rand_r(&t->seed) % (unsigned int)(t->script.jitter_ms + 1));
    if (ms > 0)
        ms_sleep(ms);
}

static int is_cancelled(struct fake_publisher *fp, const char *id)
{
    int c = 0;
    pthread_mutex_lock(&fp->mu);
    for (int i = 0; i < fp->ncancelled && !c; i++)
        c = strcmp(fp->cancelled[i], id) == 0;
    pthread_mutex_unlock(&fp->mu);
    return c;
}

long fake_publisher_post_result(struct fake_publisher *fp, const char *task_id, const char *body)
{
    char url[512], hdr[128];
    snprintf(url, sizeof url, "%s/api/v1/llms/_provider-task/%s/result", fp->base, task_id);
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", fp->session);
    const char *headers[] = {hdr, "Content-Type: application/json", NULL};
    struct http_resp resp;
    http_do("POST", url, fp->token, headers, body, &resp);
    long st = resp.status;
    http_resp_free(&resp);
    pthread_mutex_lock(&fp->mu);
    for (int i = 0; i < 64; i++) {
        if (fp->post_status[i] == st || fp->post_status[i] == 0) {
            fp->post_status[i] = st;
            fp->post_count[i]++;
            break;
        }
    }
    pthread_cond_broadcast(&fp->cv);
    pthread_mutex_unlock(&fp->mu);
    return st;
}

static void *task_main(void *arg)
{
    struct fp_task *t = arg;
    struct fake_publisher *fp = t->fp;
    const struct fp_script *s = &t->script;
    char body[1024];
    if (strcmp(t->kind, "wake") == 0) {
        if (s->wake_delay_ms)
            ms_sleep(s->wake_delay_ms);
        if (s->wake_fail == 2)
            goto out;
        if (s->wake_fail == 1)
            snprintf(body, sizeof body, "{\"error\":\"wake recipe failed\"}");
        else
            snprintf(body, sizeof body, "{\"status\":200,\"body\":{\"ok\":true,\"ms\":%d}}",
                     s->wake_delay_ms);
        fake_publisher_post_result(fp, t->id, body);
        goto out;
    }
    if (s->mode == FP_SILENT)
        goto out;
    if (s->mode == FP_ERROR) {
        task_delay(t);
        fake_publisher_post_result(fp, t->id, "{\"error\":\"backend exploded\"}");
        goto out;
    }
    if (s->mode == FP_RAW) {
        task_delay(t);
        fake_publisher_post_result(fp, t->id, s->raw ? s->raw : "{}");
        goto out;
    }
    if (s->mode == FP_STREAMED && t->streaming) {
        post_streamed(t);
        goto out;
    }
    if (s->mode == FP_STATUS) {
        snprintf(body, sizeof body, "{\"status\":%d,\"body\":{\"error\":\"backend said no\"}}",
                 s->status);
        fake_publisher_post_result(fp, t->id, body);
        goto out;
    }
    if (!t->streaming) {
        task_delay(t);
        json_t *b = json_pack("{s:s,s:s,s:[{s:i,s:{s:s,s:s},s:s}]}", "id", "chatcmpl-fake",
                              "object", "chat.completion", "choices", "index", 0, "message", "role",
                              "assistant", "content", t->echo, "finish_reason", "stop");
        if (has_usage(s))
            json_object_set_new(b, "usage",
                                json_pack("{s:i,s:i,s:i}", "prompt_tokens", s->prompt_tokens,
                                          "completion_tokens", s->completion_tokens, "total_tokens",
                                          s->prompt_tokens + s->completion_tokens));
        json_t *res = json_pack("{s:i,s:o}", "status", 200, "body", b);
        char *text = json_dumps(res, JSON_COMPACT);
        fake_publisher_post_result(fp, t->id, text);
        free(text);
        json_decref(res);
        goto out;
    }
    int n = s->chunks > 0 ? s->chunks : 3;
    for (int i = 0; i < n; i++) {
        task_delay(t);
        if (is_cancelled(fp, t->id))
            goto out;
        if (s->mode == FP_DROP && i == s->drop_after) {
            fake_publisher_drop(fp);
            goto out;
        }
        char content[300];
        snprintf(content, sizeof content, "%s%stok%d ", s->echo_chunks ? t->echo : "",
                 s->echo_chunks ? " " : "", i);
        json_t *chunk = json_pack("{s:{s:{s:s,s:s,s:[{s:i,s:{s:s}}]}}}", "chunk", "data", "id",
                                  "chatcmpl-fake", "object", "chat.completion.chunk", "choices",
                                  "index", 0, "delta", "content", content);
        char *text = json_dumps(chunk, JSON_COMPACT);
        json_decref(chunk);
        long st = fake_publisher_post_result(fp, t->id, text);
        free(text);
        if (st == 410)
            goto out;
    }
    if (has_usage(s)) {
        char usage[256];
        usage_json(s, usage, sizeof usage);
        snprintf(body, sizeof body,
                 "{\"chunk\":{\"data\":{\"id\":\"chatcmpl-fake\",\"object\":"
                 "\"chat.completion.chunk\",\"choices\":[],\"usage\":%s}}}",
                 usage);
        if (fake_publisher_post_result(fp, t->id, body) == 410)
            goto out;
    }
    fake_publisher_post_result(fp, t->id, "{\"chunk\":{\"done\":true}}");
out:
    free(t);
    pthread_mutex_lock(&fp->mu);
    fp->live_tasks--;
    pthread_cond_broadcast(&fp->cv);
    pthread_mutex_unlock(&fp->mu);
    return NULL;
}

static void start_task(struct fake_publisher *fp, const char *data)
{
    json_t *root = json_loads(data, 0, NULL);
    if (!root)
        return;
    struct fp_task *t = calloc(1, sizeof *t);
    t->fp = fp;
    snprintf(t->id, sizeof t->id, "%s", json_string_value(json_object_get(root, "taskId")));
    snprintf(t->kind, sizeof t->kind, "%s", json_string_value(json_object_get(root, "kind")));
    t->streaming = json_is_true(json_object_get(root, "streaming"));
    json_t *msgs = json_object_get(json_object_get(root, "body"), "messages");
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *content = json_string_value(json_object_get(last, "content"));
    snprintf(t->echo, sizeof t->echo, "echo: %s", content ? content : "");
    json_decref(root);
    /* Detached: a long run may start any number of tasks. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    pthread_mutex_lock(&fp->mu);
    t->script = fp->script;
    t->seed = ++fp->ntasks * 2654435761u;
    if (pthread_create(&th, &attr, task_main, t) == 0)
        fp->live_tasks++;
    else
        free(t);
    pthread_mutex_unlock(&fp->mu);
    pthread_attr_destroy(&attr);
}

static int on_event(void *ud, const struct sse_event *ev)
{
    struct fake_publisher *fp = ud;
    if (strcmp(ev->event, "task") == 0) {
        start_task(fp, ev->data);
    } else if (strcmp(ev->event, "cancel") == 0) {
        json_t *root = json_loads(ev->data, 0, NULL);
        const char *id = json_string_value(json_object_get(root, "taskId"));
        pthread_mutex_lock(&fp->mu);
        if (id && fp->ncancelled < FP_MAX_TASKS)
            snprintf(fp->cancelled[fp->ncancelled++], 40, "%s", id);
        pthread_mutex_unlock(&fp->mu);
        json_decref(root);
    }
    return 0;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct fake_publisher *fp = ud;
    size_t n = size * nmemb;
    pthread_mutex_lock(&fp->mu);
    if (fp->tlen + n + 1 > fp->tcap) {
        /* doubling: a long run's transcript is megabytes */
        fp->tcap = (fp->tlen + n + 1) * 2;
        fp->transcript = realloc(fp->transcript, fp->tcap);
    }
    memcpy(fp->transcript + fp->tlen, ptr, n);
    fp->tlen += n;
    fp->transcript[fp->tlen] = '\0';
    pthread_cond_broadcast(&fp->cv);
    pthread_mutex_unlock(&fp->mu);
    sse_parser_feed(&fp->parser, ptr, n);
    return n;
}

static void *stream_main(void *arg)
{
    struct fake_publisher *fp = arg;
    int running = 1;
    while (running) {
        curl_multi_perform(fp->multi, &running);
        pthread_mutex_lock(&fp->mu);
        int drop = fp->drop;
        pthread_mutex_unlock(&fp->mu);
        if (drop || !running)
            break;
        curl_multi_poll(fp->multi, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(fp->multi, fp->easy);
    curl_easy_cleanup(fp->easy); /* closes the connection */
    fp->easy = NULL;
    pthread_mutex_lock(&fp->mu);
    fp->stream_done = 1;
    pthread_cond_broadcast(&fp->cv);
    pthread_mutex_unlock(&fp->mu);
    return NULL;
}

struct fake_publisher *fake_publisher_start(const char *base_url, const char *token,
                                            const char *providers_json, const char *session)
{
    struct fake_publisher *fp = calloc(1, sizeof *fp);
    snprintf(fp->base, sizeof fp->base, "%s", base_url);
    snprintf(fp->token, sizeof fp->token, "%s", token);
    pthread_mutex_init(&fp->mu, NULL);
    pthread_cond_init(&fp->cv, NULL);
    fp->transcript = calloc(1, 1);
    fp->script.mode = FP_ANSWER;
    sse_parser_init(&fp->parser, 1 << 20, 4 << 20, on_event, NULL, fp);

    char url[512];
    snprintf(url, sizeof url, "%s/api/v1/llms/_provider-register", base_url);
    char *body = malloc(strlen(providers_json) + 128);
    if (session)
        sprintf(body, "{\"providerSessionId\":\"%s\",\"providers\":%s}", session, providers_json);
    else
        sprintf(body, "{\"providers\":%s}", providers_json);
    struct http_resp resp;
    const char *headers[] = {"Content-Type: application/json", NULL};
    http_do("POST", url, token, headers, body, &resp);
    free(body);
    json_t *root = resp.status == 200 ? json_loads(resp.body, 0, NULL) : NULL;
    const char *sid = json_string_value(json_object_get(root, "providerSessionId"));
    if (!sid) {
        fprintf(stderr, "fake publisher: register failed (%ld): %s\n", resp.status, resp.body);
        http_resp_free(&resp);
        json_decref(root);
        sse_parser_release(&fp->parser);
        free(fp->transcript);
        free(fp);
        return NULL;
    }
    snprintf(fp->session, sizeof fp->session, "%s", sid);
    json_decref(root);
    http_resp_free(&resp);

    snprintf(url, sizeof url, "%s/api/v1/llms/_provider-stream", base_url);
    char auth[300], hdr[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", fp->session);
    fp->hdrs = curl_slist_append(NULL, auth);
    fp->hdrs = curl_slist_append(fp->hdrs, hdr);
    fp->easy = curl_easy_init();
    curl_easy_setopt(fp->easy, CURLOPT_URL, url);
    curl_easy_setopt(fp->easy, CURLOPT_HTTPHEADER, fp->hdrs);
    curl_easy_setopt(fp->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(fp->easy, CURLOPT_WRITEDATA, fp);
    curl_easy_setopt(fp->easy, CURLOPT_NOSIGNAL, 1L);
    fp->multi = curl_multi_init();
    curl_multi_add_handle(fp->multi, fp->easy);
    pthread_create(&fp->stream_thread, NULL, stream_main, fp);
    if (fake_publisher_wait(fp, "event: hello", 1, 10000) < 0) {
        fprintf(stderr, "fake publisher: no hello on the stream\n");
        fake_publisher_stop(fp);
        return NULL;
    }
    return fp;
}

void fake_publisher_set_script(struct fake_publisher *fp, const struct fp_script *s)
{
    pthread_mutex_lock(&fp->mu);
    fp->script = *s;
    pthread_mutex_unlock(&fp->mu);
}

const char *fake_publisher_session(struct fake_publisher *fp)
{
    return fp->session;
}

int fake_publisher_wait(struct fake_publisher *fp, const char *needle, int count, int timeout_ms)
{
    struct timespec ts;
    fake_http_deadline(&ts, timeout_ms);
    int rc = -1;
    pthread_mutex_lock(&fp->mu);
    for (;;) {
        /* memmem: strstr under a sanitizer measures the rest of a
         * megabytes-long transcript at every step */
        int n = 0;
        const char *end = fp->transcript + fp->tlen;
        size_t nlen = strlen(needle);
        for (const char *p = memmem(fp->transcript, fp->tlen, needle, nlen); p;
             p = memmem(p + 1, (size_t)(end - p - 1), needle, nlen))
            n++;
        if (n >= count) {
            rc = 0;
            break;
        }
        if (fp->stream_done || pthread_cond_timedwait(&fp->cv, &fp->mu, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&fp->mu);
    return rc;
}

char *fake_publisher_transcript(struct fake_publisher *fp)
{
    pthread_mutex_lock(&fp->mu);
    char *c = strdup(fp->transcript);
    pthread_mutex_unlock(&fp->mu);
    return c;
}

char *fake_publisher_task_id(struct fake_publisher *fp, const char *needle)
{
    static const char mark[] = "event: task\nid: ";
    char *id = NULL;
    pthread_mutex_lock(&fp->mu);
    const char *t = fp->transcript;
    const char *at = memmem(t, fp->tlen, needle, strlen(needle)), *frame = NULL;
    for (const char *p = at; p && !frame; p = p > t ? p - 1 : NULL)
        if (strncmp(p, mark, sizeof mark - 1) == 0)
            frame = p;
    if (frame) {
        const char *s = frame + sizeof mark - 1;
        id = strndup(s, strcspn(s, "\n"));
    }
    pthread_mutex_unlock(&fp->mu);
    return id;
}

int fake_publisher_posts_with_status(struct fake_publisher *fp, long code)
{
    int n = 0;
    pthread_mutex_lock(&fp->mu);
    for (int i = 0; i < 64; i++)
        if (fp->post_status[i] == code)
            n = fp->post_count[i];
    pthread_mutex_unlock(&fp->mu);
    return n;
}

int fake_publisher_wait_posts(struct fake_publisher *fp, long code, int n, int timeout_ms)
{
    struct timespec ts;
    fake_http_deadline(&ts, timeout_ms);
    int rc = -1;
    pthread_mutex_lock(&fp->mu);
    for (;;) {
        int have = 0;
        for (int i = 0; i < 64; i++)
            if (fp->post_status[i] == code)
                have = fp->post_count[i];
        if (have >= n) {
            rc = 0;
            break;
        }
        if (pthread_cond_timedwait(&fp->cv, &fp->mu, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&fp->mu);
    return rc;
}

void fake_publisher_drop(struct fake_publisher *fp)
{
    pthread_mutex_lock(&fp->mu);
    fp->drop = 1;
    pthread_mutex_unlock(&fp->mu);
    curl_multi_wakeup(fp->multi);
}

void fake_publisher_stop(struct fake_publisher *fp)
{
    if (!fp)
        return;
    fake_publisher_drop(fp);
    pthread_join(fp->stream_thread, NULL);
    pthread_mutex_lock(&fp->mu);
    while (fp->live_tasks > 0)
        pthread_cond_wait(&fp->cv, &fp->mu);
    pthread_mutex_unlock(&fp->mu);
    curl_multi_cleanup(fp->multi);
    curl_slist_free_all(fp->hdrs);
    sse_parser_release(&fp->parser);
    pthread_mutex_destroy(&fp->mu);
    pthread_cond_destroy(&fp->cv);
    free(fp->transcript);
    free(fp);
}
