#include "http.h"
#include "fake_http.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct sink {
    char *data;
    size_t len;
};

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    s->data = realloc(s->data, s->len + n + 1);
    memcpy(s->data + s->len, ptr, n);
    s->len += n;
    s->data[s->len] = '\0';
    return n;
}

static struct curl_slist *make_headers(const char *token, const char *const headers[])
{
    struct curl_slist *list = NULL;
    if (token) {
        char auth[512];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        list = curl_slist_append(list, auth);
    }
    for (size_t i = 0; headers && headers[i]; i++)
        list = curl_slist_append(list, headers[i]);
    list = curl_slist_append(list, "Expect:");
    return list;
}

static void setup(CURL *c, const char *method, const char *url, struct curl_slist *hdrs,
                  const char *body)
{
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
}

int http_do(const char *method, const char *url, const char *token, const char *const headers[],
            const char *body, struct http_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = make_headers(token, headers);
    struct sink b = {calloc(1, 1), 0}, h = {calloc(1, 1), 0};
    setup(c, method, url, hdrs, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = b.data;
    out->len = b.len;
    out->headers = h.data;
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

void http_resp_free(struct http_resp *r)
{
    free(r->body);
    free(r->headers);
    r->body = r->headers = NULL;
}

char *http_resp_header(const struct http_resp *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            eol = line + strlen(line);
        if ((size_t)(eol - line) > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(eol - v));
        }
        line = *eol ? eol + 2 : eol;
    }
    return NULL;
}

struct http_stream {
    CURLM *multi;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body_copy;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sink data;
    int done;
    int abort;
    long status;
};

static size_t stream_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_stream *s = ud;
    pthread_mutex_lock(&s->mu);
    size_t n = sink_write(ptr, size, nmemb, &s->data);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return n;
}

static size_t stream_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_stream *s = ud;
    size_t n = size * nmemb;
    long code;
    if (n > 12 && strncmp(ptr, "HTTP/", 5) == 0 && sscanf(ptr, "HTTP/%*s %ld", &code) == 1) {
        pthread_mutex_lock(&s->mu);
        s->status = code;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

static void *stream_main(void *arg)
{
    struct http_stream *s = arg;
    int running = 1;
    while (running) {
        curl_multi_perform(s->multi, &running);
        pthread_mutex_lock(&s->mu);
        int stop = s->abort;
        pthread_mutex_unlock(&s->mu);
        if (stop || !running)
            break;
        curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
    }
    /* Closing the handle here closes the connection at once on abort. */
    curl_multi_remove_handle(s->multi, s->easy);
    curl_easy_cleanup(s->easy);
    s->easy = NULL;
    pthread_mutex_lock(&s->mu);
    s->done = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct http_stream *http_stream_open(const char *method, const char *url, const char *token,
                                     const char *const headers[], const char *body)
{
    struct http_stream *s = calloc(1, sizeof *s);
    s->data.data = calloc(1, 1);
    s->body_copy = body ? strdup(body) : NULL;
    s->hdrs = make_headers(token, headers);
    s->easy = curl_easy_init();
    setup(s->easy, method, url, s->hdrs, s->body_copy);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, stream_header);
    curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
    s->multi = curl_multi_init();
    curl_multi_add_handle(s->multi, s->easy);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_create(&s->thread, NULL, stream_main, s);
    return s;
}

int http_stream_wait_for(struct http_stream *s, const char *needle, int count, int timeout_ms)
{
    struct timespec ts;
    fake_http_deadline(&ts, timeout_ms);
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int n = 0;
        for (const char *p = strstr(s->data.data, needle); p; p = strstr(p + 1, needle))
            n++;
        if (n >= count) {
            rc = 0;
            break;
        }
        if (s->done || pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int http_stream_wait_done(struct http_stream *s, int timeout_ms)
{
    struct timespec ts;
    fake_http_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (!s->done)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0)
            break;
    int rc = s->done ? 0 : -1;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

char *http_stream_body(struct http_stream *s)
{
    pthread_mutex_lock(&s->mu);
    char *copy = strdup(s->data.data);
    pthread_mutex_unlock(&s->mu);
    return copy;
}

long http_stream_status(struct http_stream *s)
{
    long st = 0;
    pthread_mutex_lock(&s->mu);
    st = s->status;
    pthread_mutex_unlock(&s->mu);
    return st;
}

void http_stream_close(struct http_stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->abort = 1;
    pthread_mutex_unlock(&s->mu);
    curl_multi_wakeup(s->multi);
    pthread_join(s->thread, NULL);
    curl_multi_cleanup(s->multi);
    curl_slist_free_all(s->hdrs);
    free(s->body_copy);
    free(s->data.data);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
