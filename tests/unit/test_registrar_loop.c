/* The event loop (timers, watchers, deferred calls, transfers) and the
 * transport on top of it, against the fake backend. */
#include "clock.h"
#include "fake_backend.h"
#include "loop.h"
#include "transport.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int run_until(struct loop *l, const bool *flag, int timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;
    while (!*flag && clock_mono_ms() < end)
        assert_int_equal(loop_run_once(l, 20), 0);
    return *flag ? 0 : -1;
}

static void run_for(struct loop *l, int ms)
{
    int64_t end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end)
        loop_run_once(l, 10);
}

struct timers {
    char order[16];
    int n;
    struct loop_timer a, b, c;
    int rearm;
};

static void fire_a(struct loop *l, void *ud)
{
    (void)l;
    struct timers *t = ud;
    t->order[t->n++] = 'a';
}

static void fire_b(struct loop *l, void *ud)
{
    struct timers *t = ud;
    t->order[t->n++] = 'b';
    if (t->rearm-- > 0)
        loop_timer_start(l, &t->b, 5);
}

static void fire_c(struct loop *l, void *ud)
{
    (void)l;
    struct timers *t = ud;
    t->order[t->n++] = 'c';
}

static void test_timers(void **state)
{
    (void)state;
    struct loop *l = loop_new();
    struct timers t = {.rearm = 2};
    loop_timer_init(&t.a, fire_a, &t);
    loop_timer_init(&t.b, fire_b, &t);
    loop_timer_init(&t.c, fire_c, &t);
    loop_timer_start(l, &t.c, 60);
    loop_timer_start(l, &t.a, 10);
    loop_timer_start(l, &t.b, 20);
    loop_timer_start(l, &t.c, 40); /* re-arming moves it */
    struct loop_timer never;
    loop_timer_init(&never, fire_a, &t);
    loop_timer_start(l, &never, 30);
    loop_timer_stop(l, &never);
    loop_timer_stop(l, &never); /* twice is fine */
    run_for(l, 120);
    assert_string_equal(t.order, "abbbc");
    loop_free(l);
}

struct piped {
    int fds[2];
    struct loop_fd w;
    char got[8];
    int n;
    int deferred;
};

static void on_readable(struct loop *l, int fd, short revents, void *ud)
{
    struct piped *p = ud;
    assert_true(revents & CURL_WAIT_POLLIN);
    ssize_t r = read(fd, p->got + p->n, sizeof p->got - 1 - (size_t)p->n);
    if (r > 0)
        p->n += (int)r;
    loop_fd_remove(l, &p->w); /* removing itself inside its callback */
}

static void on_deferred(struct loop *l, void *ud)
{
    (void)l;
    ((struct piped *)ud)->deferred++;
}

static void test_fds_and_defer(void **state)
{
    (void)state;
    struct loop *l = loop_new();
    struct piped p = {0};
    assert_int_equal(pipe(p.fds), 0);
    loop_fd_add(l, &p.w, p.fds[0], CURL_WAIT_POLLIN, on_readable, &p);
    assert_int_equal(loop_defer(l, on_deferred, &p), 0);
    assert_int_equal(write(p.fds[1], "hi", 2), 2);
    int64_t start = clock_mono_ms();
    while (p.n < 2 && clock_mono_ms() - start < 2000)
        loop_run_once(l, 100);
    assert_string_equal(p.got, "hi");
    assert_int_equal(p.deferred, 1);
    assert_false(p.w.active);
    close(p.fds[0]);
    close(p.fds[1]);
    loop_free(l);
}

struct fetch {
    bool done;
    long status;
    char body[4096];
    int datas;
    bool free_in_data;
    struct http_req *req;
    struct http_req *second; /* started from inside a libcurl callback */
    bool second_done;
    struct loop *loop;
    const char *second_url;
};

static void on_fetch_done(struct http_req *r, void *ud)
{
    struct fetch *f = ud;
    f->done = true;
    f->status = http_req_status(r);
    snprintf(f->body, sizeof f->body, "%s", http_req_body(r, NULL));
    http_req_free(r); /* freeing inside on_done */
    f->req = NULL;
}

static void on_second_done(struct http_req *r, void *ud)
{
    struct fetch *f = ud;
    f->second_done = http_req_ok(r) && http_req_status(r) == 200;
    http_req_free(r);
    f->second = NULL;
}

static int on_fetch_data(struct http_req *r, const char *data, size_t len, void *ud)
{
    (void)r;
    (void)data;
    (void)len;
    struct fetch *f = ud;
    f->datas++;
    if (f->datas == 1 && f->second_url) {
        struct http_req_opts o = {
            .method = "GET", .url = f->second_url, .on_done = on_second_done, .ud = f};
        assert_int_equal(http_req_start(f->loop, &o, &f->second), 0);
    }
    if (f->free_in_data && f->datas == 2) {
        http_req_free(f->req); /* inside libcurl's write callback */
        f->req = NULL;
        f->done = true;
    }
    return 0;
}

static void test_transport(void **state)
{
    (void)state;
    struct fake_backend *fb = fake_backend_start();
    assert_non_null(fb);
    struct loop *l = loop_new();
    char url[128];
    snprintf(url, sizeof url, "%s/models", fake_backend_url(fb));

    /* A collected body. */
    struct fetch f = {.loop = l};
    const char *hdrs[] = {"X-Test: 1", NULL};
    struct http_req_opts o = {
        .method = "GET", .url = url, .headers = hdrs, .on_done = on_fetch_done, .ud = &f};
    assert_int_equal(http_req_start(l, &o, &f.req), 0);
    assert_int_equal(run_until(l, &f.done, 5000), 0);
    assert_int_equal(f.status, 200);
    assert_non_null(strstr(f.body, "fake-model"));
    char *h = fake_backend_last_header(fb, "/v1/models", "X-Test");
    assert_string_equal(h, "1");
    free(h);

    /* A capped body fails cleanly. */
    struct fetch g = {.loop = l};
    o.ud = &g;
    o.max_body = 10;
    assert_int_equal(http_req_start(l, &o, &g.req), 0);
    assert_int_equal(run_until(l, &g.done, 5000), 0);

    /* Streaming: data as it comes; a request started from inside the write
     * callback; the stream freed from inside the write callback. */
    fake_backend_set_stream(fb, 50, 20);
    char chat[128];
    snprintf(chat, sizeof chat, "%s/chat/completions", fake_backend_url(fb));
    struct fetch s = {.loop = l, .free_in_data = true, .second_url = url};
    const char *body = "{\"model\":\"x\",\"stream\":true,\"messages\":[]}";
    struct http_req_opts so = {.method = "POST",
                               .url = chat,
                               .body = body,
                               .body_len = strlen(body),
                               .on_data = on_fetch_data,
                               .on_done = on_fetch_done,
                               .ud = &s};
    assert_int_equal(http_req_start(l, &so, &s.req), 0);
    assert_int_equal(run_until(l, &s.done, 5000), 0);
    assert_int_equal(run_until(l, &s.second_done, 5000), 0);
    assert_int_equal(s.datas, 2);
    assert_int_equal(fake_backend_wait_aborted(fb, 1, 5000), 0);

    /* Connection refused. */
    struct fetch r = {.loop = l};
    struct http_req_opts ro = {
        .method = "GET", .url = "http://127.0.0.1:1/x", .on_done = on_fetch_done, .ud = &r};
    assert_int_equal(http_req_start(l, &ro, &r.req), 0);
    assert_int_equal(run_until(l, &r.done, 5000), 0);
    assert_int_equal(r.status, 0);

    loop_free(l);
    fake_backend_stop(fb);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_fds_and_defer),
        cmocka_unit_test(test_transport),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
