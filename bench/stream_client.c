/*
 * stream_client.c - streaming load for the benchmark: sends OpenAI streaming
 * chat requests ("stream": true, max_tokens = --chunks) and times the SSE
 * answer as it arrives.
 *
 *   --concurrency 1   time to first token: one stream after another on one
 *                     keep-alive connection; median and p99 of TTFT
 *   --concurrency C   chunk throughput: C streams at a time; chunks per second
 *
 * Every stream must end with 200, exactly --chunks data chunks and [DONE];
 * anything else counts as an error. The run stops after --count streams or
 * --duration seconds, whichever comes first, and prints one JSON object.
 */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CONCURRENCY 256
#define LINE_PEEK 16 /* bytes of each SSE line kept to classify it */

struct xfer {
    CURL *easy;
    bool busy;
    int64_t started, first; /* monotonic ns */
    long chunks;
    bool done;
    char line[LINE_PEEK];
    size_t line_len; /* bytes of the current line seen (capped copy in line) */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Classifies one finished SSE line. */
static void end_line(struct xfer *x)
{
    size_t n = x->line_len < LINE_PEEK ? x->line_len : LINE_PEEK;
    if (n >= 5 && memcmp(x->line, "data:", 5) == 0) {
        const char *v = x->line + 5;
        size_t vn = n - 5;
        if (vn > 0 && *v == ' ') {
            v++;
            vn--;
        }
        if (vn >= 6 && memcmp(v, "[DONE]", 6) == 0) {
            x->done = true;
        } else {
            if (x->chunks == 0)
                x->first = now_ns();
            x->chunks++;
        }
    }
    x->line_len = 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\n') {
            end_line(x);
        } else if (c != '\r') {
            if (x->line_len < LINE_PEEK)
                x->line[x->line_len] = c;
            x->line_len++;
        }
    }
    return len;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i];
}

static void usage(void)
{
    fputs("usage: stream_client --url URL --model NAME [--token T] [--chunks N]\n"
          "                     [--concurrency C] [--count N] [--duration SECONDS]\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *model = NULL, *token = NULL;
    long chunks = 16, concurrency = 1, count = 1000;
    double duration = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--token") == 0)
            token = v;
        else if (strcmp(a, "--chunks") == 0)
            chunks = strtol(v, NULL, 10);
        else if (strcmp(a, "--concurrency") == 0)
            concurrency = strtol(v, NULL, 10);
        else if (strcmp(a, "--count") == 0)
            count = strtol(v, NULL, 10);
        else if (strcmp(a, "--duration") == 0)
            duration = strtod(v, NULL);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!url || !model || chunks < 1 || concurrency < 1 || concurrency > MAX_CONCURRENCY ||
        count < 1 || duration <= 0) {
        usage();
        return 2;
    }

    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"stream\":true,\"max_tokens\":%ld,\"messages\":"
             "[{\"role\":\"user\",\"content\":\"Count for the benchmark.\"}]}",
             model, chunks);
    char auth[512] = "";
    if (token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
    if (token)
        hdrs = curl_slist_append(hdrs, auth);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, concurrency);
    static struct xfer xs[MAX_CONCURRENCY];
    for (long i = 0; i < concurrency; i++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &xs[i]);
        curl_easy_setopt(e, CURLOPT_PRIVATE, &xs[i]);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        xs[i].easy = e;
    }

    int64_t *ttft = calloc((size_t)count, sizeof *ttft);
    int64_t *total = calloc((size_t)count, sizeof *total);
    if (!ttft || !total)
        return 1;
    long started = 0, finished = 0, errors = 0, chunks_seen = 0, ok = 0;
    char first_error[256] = "";
    int64_t t0 = now_ns();
    int64_t stop_at = t0 + (int64_t)(duration * 1e9);
    int64_t t_end = t0;
    for (;;) {
        int64_t now = now_ns();
        for (long i = 0; i < concurrency && started < count && now < stop_at; i++) {
            struct xfer *x = &xs[i];
            if (x->busy)
                continue;
            CURL *e = x->easy;
            memset(x, 0, sizeof *x);
            x->easy = e;
            x->busy = true;
            x->started = now_ns();
            curl_multi_add_handle(multi, e);
            started++;
        }
        if (finished == started && (started >= count || now >= stop_at))
            break;
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        bool any_done = false;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct xfer *x;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            long status = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            int64_t end = now_ns();
            t_end = end;
            curl_multi_remove_handle(multi, m->easy_handle);
            x->busy = false;
            chunks_seen += x->chunks;
            if (m->data.result != CURLE_OK || status != 200 || !x->done || x->chunks != chunks) {
                if (errors++ == 0)
                    snprintf(first_error, sizeof first_error,
                             "%s, status %ld, %ld of %ld chunks, %s",
                             curl_easy_strerror(m->data.result), status, x->chunks, chunks,
                             x->done ? "[DONE] seen" : "no [DONE]");
            } else {
                ttft[ok] = x->first - x->started;
                total[ok] = end - x->started;
                ok++;
            }
            finished++;
            any_done = true;
        }
        if (!any_done)
            curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    double secs = (double)(t_end - t0) / 1e9;
    qsort(ttft, (size_t)ok, sizeof *ttft, cmp_i64);
    qsort(total, (size_t)ok, sizeof *total, cmp_i64);
    printf("{\"streams\":%ld,\"ok\":%ld,\"errors\":%ld,\"chunks\":%ld,\"seconds\":%.3f,"
           "\"chunks_per_sec\":%.1f,\"ttft_p50_us\":%.1f,\"ttft_p99_us\":%.1f,"
           "\"stream_p50_us\":%.1f,\"stream_p99_us\":%.1f,\"first_error\":\"%s\"}\n",
           finished, ok, errors, chunks_seen, secs, secs > 0 ? (double)chunks_seen / secs : 0,
           pct(ttft, (size_t)ok, 50) / 1e3, pct(ttft, (size_t)ok, 99) / 1e3,
           pct(total, (size_t)ok, 50) / 1e3, pct(total, (size_t)ok, 99) / 1e3, first_error);
    for (long i = 0; i < concurrency; i++)
        curl_easy_cleanup(xs[i].easy);
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    free(ttft);
    free(total);
    return errors ? 1 : 0;
}
