/*
 * stream_client.c - streaming load for the benchmark: sends OpenAI streaming
 * chat requests ("stream": true, max_tokens = --chunks) and times the SSE
 * answer as it arrives.
 *
 *   --concurrency 1   time to first token: one stream after another on one
 *                     keep-alive connection; median and p99 of TTFT
 *   --concurrency C   C streams at a time, each slot starting its next stream
 *                     as soon as the last one ends; chunks per second
 *
 * With --interval-us N the request asks stream_backend to pace its chunks N µs
 * apart ("bench_interval_us" in the body, which every path forwards
 * unchanged), as a model generating tokens does; the client then also
 * measures how far each stream's events fall behind that pace. --ramp S
 * spreads the slots' first starts over S seconds (a real service's requests
 * do not arrive all in one instant); figures about the steady state (tokens
 * per second, TTFT, lag) then cover only the --duration seconds after the
 * ramp, and only streams started in them.
 *
 * Events are counted as the SSE spec dispatches them (a blank line ends an
 * event; CR, LF and CRLF all end lines), so a chunk split at any byte, or
 * several in one read, count the same. Every stream must end with status
 * 200, a text/event-stream body, exactly --chunks data events, then
 * [DONE], and no `event: error`; anything else counts as an error, and a
 * slot whose stream failed waits 100 ms before its next one so that a dead
 * path cannot spin the client. No stream starts after --count streams or
 * past ramp + --duration seconds; the ones running then are let finish
 * (each bounded by a timeout), and one JSON object is printed.
 *
 * Sockets are driven through libcurl's socket interface on epoll, so the
 * cost per event does not grow with the number of open streams.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 4096
#define LINE_PEEK 16 /* bytes of each SSE line kept to classify it */
#define ERROR_BACKOFF_NS 100000000LL

struct slot {
    CURL *easy;
    bool busy;
    int64_t next_start;           /* monotonic ns; when idle, when to start again */
    int64_t started, first, last; /* monotonic ns */
    long events;
    int64_t max_lag; /* ns behind the pace, worst event of the stream */
    bool done_seen, error_event, extra_after_done;
    /* SSE parsing state */
    char line[LINE_PEEK];
    size_t line_len;                 /* bytes of the current line seen (capped copy in line) */
    bool after_cr;                   /* the last byte was a CR: a LF next belongs to it */
    bool ev_data, ev_done, ev_error; /* fields of the event being read */
};

/* A growable list of samples. */
struct samples {
    int64_t *v;
    size_t n, cap;
};

static int samples_add(struct samples *s, int64_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        int64_t *p = realloc(s->v, cap * sizeof *p);
        if (!p)
            return -1;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int epfd;
static int64_t curl_due = -1;    /* monotonic ns of libcurl's next timeout */
static int64_t interval_ns;      /* the pace asked of the backend, 0 for none */
static int64_t win_from, win_to; /* the steady-state window, monotonic ns */
static long window_events;
static int64_t cb_now; /* time of the write callback running now */

/* One event was dispatched on slot x. */
static void end_event(struct slot *x)
{
    if (x->ev_error)
        x->error_event = true;
    if (!x->ev_data)
        return;
    if (x->ev_done) {
        x->done_seen = true;
        return;
    }
    if (x->done_seen)
        x->extra_after_done = true;
    int64_t t = cb_now;
    if (x->events == 0) {
        x->first = t;
    } else if (interval_ns > 0) {
        int64_t lag = t - x->first - x->events * interval_ns;
        if (lag > x->max_lag)
            x->max_lag = lag;
    }
    x->last = t;
    x->events++;
    if (t >= win_from && t < win_to)
        window_events++;
}

static bool field_is(const struct slot *x, size_t n, const char *name, const char *value)
{
    size_t fl = strlen(name), vl = value ? strlen(value) : 0;
    if (n < fl + 1 || memcmp(x->line, name, fl) != 0 || x->line[fl] != ':')
        return false;
    if (!value)
        return true;
    size_t off = fl + 1;
    if (off < n && x->line[off] == ' ')
        off++;
    return x->line_len == off + vl && n == x->line_len && memcmp(x->line + off, value, vl) == 0;
}

/* Classifies one finished SSE line. */
static void end_line(struct slot *x)
{
    size_t n = x->line_len < LINE_PEEK ? x->line_len : LINE_PEEK;
    if (x->line_len == 0) {
        end_event(x);
        x->ev_data = x->ev_done = x->ev_error = false;
    } else if (field_is(x, n, "data", NULL)) {
        /* [DONE] is a data field of its own; only an event's first data
         * line can make it the terminator. */
        if (!x->ev_data && field_is(x, n, "data", "[DONE]"))
            x->ev_done = true;
        else if (x->ev_data)
            x->ev_done = false;
        x->ev_data = true;
    } else if (field_is(x, n, "event", "error")) {
        x->ev_error = true;
    }
    x->line_len = 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct slot *x = ud;
    size_t len = size * nmemb;
    cb_now = now_ns();
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\n' && x->after_cr) {
            x->after_cr = false;
            continue;
        }
        x->after_cr = c == '\r';
        if (c == '\n' || c == '\r') {
            end_line(x);
        } else {
            if (x->line_len < LINE_PEEK)
                x->line[x->line_len] = c;
            x->line_len++;
        }
    }
    return len;
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *up, void *sp)
{
    (void)e;
    (void)up;
    (void)sp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.fd = fd};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    /* libcurl may close a socket without saying so (epoll then forgets it)
     * and reuse its number: try both ways. */
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT)
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int on_timer(CURLM *m, long ms, void *up)
{
    (void)m;
    (void)up;
    curl_due = ms < 0 ? -1 : now_ns() + (int64_t)ms * 1000000;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile p of s in µs (sorts s). */
static double pct_us(struct samples *s, double p)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
    return (double)s->v[i] / 1e3;
}

static void usage(void)
{
    fputs("usage: stream_client --url URL --model NAME [--token T] [--chunks N]\n"
          "                     [--concurrency C] [--count N] [--duration SECONDS]\n"
          "                     [--ramp SECONDS] [--interval-us N]\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *model = NULL, *token = NULL;
    long chunks = 16, concurrency = 1, count = 1000, interval_us = 0;
    double duration = 10, ramp = 0;
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
        else if (strcmp(a, "--ramp") == 0)
            ramp = strtod(v, NULL);
        else if (strcmp(a, "--interval-us") == 0)
            interval_us = strtol(v, NULL, 10);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!url || !model || chunks < 1 || chunks > 100000 || concurrency < 1 ||
        concurrency > MAX_CONCURRENCY || count < 1 || duration <= 0 || ramp < 0 ||
        interval_us < 0 || interval_us > 10000000) {
        usage();
        return 2;
    }
    interval_ns = (int64_t)interval_us * 1000;
    signal(SIGPIPE, SIG_IGN);

    char body[512], pace[48] = "";
    if (interval_us > 0)
        snprintf(pace, sizeof pace, "\"bench_interval_us\":%ld,", interval_us);
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"stream\":true,\"max_tokens\":%ld,%s\"messages\":"
             "[{\"role\":\"user\",\"content\":\"Count for the benchmark.\"}]}",
             model, chunks, pace);
    char auth[512] = "";
    if (token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    /* A stream takes (chunks - 1) intervals when on pace; allow plenty. */
    long timeout_ms = 60000 + 3 * (chunks * interval_us / 1000);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("stream_client: cannot initialise\n", stderr);
        return 1;
    }
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
    if (token)
        hdrs = curl_slist_append(hdrs, auth);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, concurrency);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, concurrency);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
    struct slot *xs = calloc((size_t)concurrency, sizeof *xs);
    if (!hdrs || !multi || !xs) {
        fputs("stream_client: out of memory\n", stderr);
        return 1;
    }
    int64_t t0 = now_ns();
    for (long i = 0; i < concurrency; i++) {
        CURL *e = curl_easy_init();
        if (!e) {
            fputs("stream_client: out of memory\n", stderr);
            return 1;
        }
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &xs[i]);
        curl_easy_setopt(e, CURLOPT_PRIVATE, &xs[i]);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        xs[i].easy = e;
        xs[i].next_start = t0 + (int64_t)(ramp * 1e9 * (double)i / (double)concurrency);
    }
    win_from = t0 + (int64_t)(ramp * 1e9);
    win_to = win_from + (int64_t)(duration * 1e9);

    struct samples ttft = {0}, total = {0}, lag = {0};
    long started = 0, finished = 0, errors = 0, chunks_seen = 0, ok = 0, busy = 0;
    long peak_open = 0, peak_live = 0;
    char first_error[256] = "";
    int64_t t_end = t0;
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = now_ns();
        bool may_start = started < count && now < win_to;
        int64_t next_wake = -1;
        for (long i = 0; may_start && i < concurrency && started < count; i++) {
            struct slot *x = &xs[i];
            if (x->busy)
                continue;
            if (x->next_start > now) {
                if (next_wake < 0 || x->next_start < next_wake)
                    next_wake = x->next_start;
                continue;
            }
            CURL *e = x->easy;
            memset(x, 0, sizeof *x);
            x->easy = e;
            x->busy = true;
            x->started = now_ns();
            if (curl_multi_add_handle(multi, e) != CURLM_OK) {
                fputs("stream_client: cannot start a transfer\n", stderr);
                return 1;
            }
            started++;
            if (++busy > peak_open)
                peak_open = busy;
        }
        if (busy == 0 && (started >= count || now >= win_to))
            break;
        /* A transfer just added asks for a call at once: no waiting then. */
        now = now_ns();
        if (may_start && (next_wake < 0 || win_to < next_wake))
            next_wake = win_to;
        if (curl_due >= 0 && (next_wake < 0 || curl_due < next_wake))
            next_wake = curl_due;
        int wait_ms = 1000;
        if (next_wake >= 0) {
            int64_t d = (next_wake - now + 999999) / 1000000;
            wait_ms = d < 0 ? 0 : d > 1000 ? 1000 : (int)d;
        }
        int n = epoll_wait(epfd, evs, 256, wait_ms);
        if (n < 0 && errno != EINTR) {
            perror("stream_client: epoll_wait");
            return 1;
        }
        int running;
        for (int i = 0; i < n; i++) {
            int mask = 0;
            if (evs[i].events & EPOLLIN)
                mask |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
            if (evs[i].events & (EPOLLERR | EPOLLHUP))
                mask |= CURL_CSELECT_ERR | CURL_CSELECT_IN;
            curl_multi_socket_action(multi, evs[i].data.fd, mask, &running);
        }
        if (curl_due >= 0 && now_ns() >= curl_due) {
            curl_due = -1;
            curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }

        long live = 0;
        for (long i = 0; i < concurrency; i++)
            live += xs[i].busy && xs[i].events > 0 && !xs[i].done_seen;
        if (live > peak_live)
            peak_live = live;

        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            CURL *e = m->easy_handle;
            CURLcode res = m->data.result;
            struct slot *x;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
            long status = 0;
            char *ctype = NULL;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
            bool sse = ctype && strncasecmp(ctype, "text/event-stream", 17) == 0;
            int64_t end = now_ns();
            t_end = end;
            curl_multi_remove_handle(multi, e);
            x->busy = false;
            busy--;
            chunks_seen += x->events;
            finished++;
            if (res != CURLE_OK || status != 200 || !sse || !x->done_seen || x->events != chunks ||
                x->error_event || x->extra_after_done) {
                if (errors++ == 0)
                    snprintf(first_error, sizeof first_error,
                             "%s, status %ld, %s, %ld of %ld chunks, %s%s", curl_easy_strerror(res),
                             status, sse ? "text/event-stream" : "not text/event-stream", x->events,
                             chunks, x->done_seen ? "[DONE] seen" : "no [DONE]",
                             x->error_event ? ", error event" : "");
                for (char *q = first_error; *q; q++)
                    if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
                        *q = '\'';
                x->next_start = end + ERROR_BACKOFF_NS;
                continue;
            }
            ok++;
            x->next_start = end;
            if (x->started < win_from)
                continue; /* started during the ramp: not the steady state */
            if (samples_add(&ttft, x->first - x->started) < 0 ||
                samples_add(&total, end - x->started) < 0 ||
                (interval_ns > 0 && samples_add(&lag, x->max_lag) < 0)) {
                fputs("stream_client: out of memory\n", stderr);
                return 1;
            }
        }
    }
    double secs = (double)(t_end - t0) / 1e9;
    int64_t wend = t_end < win_to ? t_end : win_to;
    double wsecs = wend > win_from ? (double)(wend - win_from) / 1e9 : 0;
    double tps = wsecs > 0 ? (double)window_events / wsecs : 0;
    /* The backend's own pace: a stream's chunks span (chunks - 1) intervals,
     * the first sent at once; with every slot always streaming that is the
     * most the path can be offered. */
    double offered = 0;
    if (interval_us > 0)
        offered = chunks > 1 ? (double)concurrency * (double)chunks /
                                   ((double)(chunks - 1) * (double)interval_us / 1e6)
                             : 0;
    printf("{\"streams\":%ld,\"ok\":%ld,\"errors\":%ld,\"chunks\":%ld,\"seconds\":%.3f,"
           "\"chunks_per_sec\":%.1f,\"ttft_p50_us\":%.1f,\"ttft_p90_us\":%.1f,"
           "\"ttft_p99_us\":%.1f,\"stream_p50_us\":%.1f,\"stream_p99_us\":%.1f,"
           "\"concurrency\":%ld,\"peak_open\":%ld,\"peak_live\":%ld,\"ramp_seconds\":%.3f,"
           "\"window_seconds\":%.3f,\"window_tokens\":%ld,\"window_streams\":%zu,"
           "\"tokens_per_sec\":%.1f,\"interval_us\":%ld,\"offered_tokens_per_sec\":%.1f,"
           "\"delivered_over_offered\":%.4f,\"lag_p50_us\":%.1f,\"lag_p99_us\":%.1f,"
           "\"lag_max_us\":%.1f,\"first_error\":\"%s\"}\n",
           finished, ok, errors, chunks_seen, secs, secs > 0 ? (double)chunks_seen / secs : 0,
           pct_us(&ttft, 50), pct_us(&ttft, 90), pct_us(&ttft, 99), pct_us(&total, 50),
           pct_us(&total, 99), concurrency, peak_open, peak_live, ramp, wsecs, window_events,
           ttft.n, tps, interval_us, offered, offered > 0 ? tps / offered : 0, pct_us(&lag, 50),
           pct_us(&lag, 99), pct_us(&lag, 100), first_error);
    for (long i = 0; i < concurrency; i++)
        curl_easy_cleanup(xs[i].easy);
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    free(xs);
    free(ttft.v);
    free(total.v);
    free(lag.v);
    close(epfd);
    return errors ? 1 : 0;
}
