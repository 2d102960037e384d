/*
 * Control streams under back-pressure, with a publisher written on a raw
 * socket so it can stop reading: mcpd writes task frames straight to a
 * parked stream's socket, keeps what the socket does not take, and sends it
 * when the publisher reads again — every frame intact and in order; a
 * publisher that never reads is cut off once its backlog is over the cap.
 * And control streams open however their request's bytes arrive (mcpd
 * sorts new connections by their first bytes).
 */
#include "http.h"
#include "mcpd_harness.h"
#include "test_env.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

static int setup(void **state)
{
    const char *args[] = {"--max-inflight", "200", "--log-level", "debug", NULL};
    *state = test_env_start(args);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    assert_int_equal(test_env_stop(*state), 0);
    return 0;
}

static int connect_to(struct test_env *env, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)env->mcpd.port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

/* Bytes read from a socket so far. */
struct inbuf {
    char *data;
    size_t len, cap;
    bool eof;
};

static int read_more(int fd, struct inbuf *b, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    if (b->cap - b->len < 65536) {
        b->cap = b->cap * 2 + 65536;
        b->data = realloc(b->data, b->cap + 1);
        assert_non_null(b->data);
    }
    ssize_t n = recv(fd, b->data + b->len, b->cap - b->len, 0);
    if (n <= 0) {
        b->eof = true;
        return -1;
    }
    b->len += (size_t)n;
    b->data[b->len] = '\0';
    return 0;
}

/* Reads from fd into b until needle appears past `from` (or EOF / 10 s).
 * Returns the offset just past the needle, or -1. */
static long wait_for(int fd, struct inbuf *b, size_t from, const char *needle)
{
    for (;;) {
        if (b->data && b->len > from) {
            char *p = strstr(b->data + from, needle);
            if (p)
                return (long)(p - b->data) + (long)strlen(needle);
        }
        if (b->eof || read_more(fd, b, 10000) < 0)
            return -1;
    }
}

/* Registers one Llm; its session id goes to sid. */
static void register_llm(struct test_env *env, const char *name, char *sid, size_t sidlen)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"providers\":[{\"name\":\"%s\",\"type\":\"openai\",\"model\":\"q\"}]}", name);
    struct http_resp r;
    assert_int_equal(test_call(env, "POST", "/api/v1/llms/_provider-register", env->mcpd.token,
                               JSON_HDR, body, &r),
                     0);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    snprintf(sid, sidlen, "%s", json_string_value(json_object_get(j, "providerSessionId")));
    json_decref(j);
    http_resp_free(&r);
}

static int stream_request(struct test_env *env, const char *sid, char *out, size_t cap)
{
    return snprintf(out, cap,
                    "GET /api/v1/llms/_provider-stream HTTP/1.1\r\nHost: mcpd\r\n"
                    "Authorization: Bearer %s\r\nx-mcpctl-provider-session: %s\r\n\r\n",
                    env->mcpd.token, sid);
}

/* Registers one Llm and opens its stream on a raw socket with a small
 * receive buffer; returns the socket once hello has arrived. */
static int open_publisher(struct test_env *env, const char *name, char *sid, size_t sidlen,
                          struct inbuf *in)
{
    register_llm(env, name, sid, sidlen);
    int fd = connect_to(env, 4096);
    char req[512];
    int n = stream_request(env, sid, req, sizeof req);
    send_all(fd, req, (size_t)n);
    assert_true(wait_for(fd, in, 0, "event: hello") > 0);
    return fd;
}

/* Sends an infer request whose one message is `size` bytes tagged with i,
 * without waiting for the answer; returns the caller's socket. */
static int start_caller(struct test_env *env, const char *name, int i, size_t size)
{
    char *content = malloc(size + 1);
    assert_non_null(content);
    memset(content, 'a' + i % 26, size);
    content[size] = '\0';
    int tag = snprintf(content, size, "<%d>", i);
    content[tag] = 'a' + i % 26;
    char *body = malloc(size + 128);
    assert_non_null(body);
    int blen = snprintf(body, size + 128, "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                        content);
    char head[512];
    int hlen = snprintf(head, sizeof head,
                        "POST /api/v1/llms/%s/infer HTTP/1.1\r\nHost: mcpd\r\n"
                        "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\n\r\n",
                        name, env->mcpd.token, blen);
    int fd = connect_to(env, 0);
    send_all(fd, head, (size_t)hlen);
    send_all(fd, body, (size_t)blen);
    free(body);
    free(content);
    return fd;
}

/* Decodes the chunked body that starts at `at` in b, reading more as
 * needed, until `events` task frames are complete; fills ids and tags. */
static void read_task_frames(int fd, struct inbuf *b, size_t at, int events, size_t size,
                             char ids[][33], int *tags)
{
    char *sse = NULL;
    size_t sse_len = 0;
    int seen = 0;
    size_t scan = 0;
    while (seen < events) {
        /* One chunk: hex size line, data, CRLF. */
        char *crlf;
        while (b->len <= at || !(crlf = strstr(b->data + at, "\r\n")))
            assert_int_equal(read_more(fd, b, 10000), 0);
        size_t chunk = strtoul(b->data + at, NULL, 16);
        assert_true(chunk > 0);
        size_t start = (size_t)(crlf - b->data) + 2;
        while (b->len < start + chunk + 2)
            assert_int_equal(read_more(fd, b, 10000), 0);
        assert_memory_equal(b->data + start + chunk, "\r\n", 2);
        sse = realloc(sse, sse_len + chunk + 1);
        memcpy(sse + sse_len, b->data + start, chunk);
        sse_len += chunk;
        sse[sse_len] = '\0';
        at = start + chunk + 2;
        /* Complete task frames so far. */
        char *p;
        while ((p = strstr(sse + scan, "event: task\nid: ")) != NULL) {
            char *end = strstr(p, "\n\n");
            if (!end)
                break;
            char *data = strstr(p, "\ndata: ");
            assert_non_null(data);
            assert_true(data < end);
            json_t *j = json_loadb(data + 7, (size_t)(end - data - 7), 0, NULL);
            assert_non_null(j);
            snprintf(ids[seen], 33, "%s", json_string_value(json_object_get(j, "taskId")));
            const char *content = json_string_value(json_object_get(
                json_array_get(json_object_get(json_object_get(j, "body"), "messages"), 0),
                "content"));
            assert_non_null(content);
            assert_int_equal(strlen(content), size);
            tags[seen] = atoi(content + 1);
            json_decref(j);
            seen++;
            scan = (size_t)(end - sse) + 2;
        }
    }
    free(sse);
}

static void test_slow_publisher_gets_every_frame_in_order(void **state)
{
    struct test_env *env = *state;
    struct inbuf in = {0};
    char sid[64];
    int pub = open_publisher(env, "slow1", sid, sizeof sid, &in);
    long body_at = wait_for(pub, &in, 0, "\r\n\r\n");
    assert_true(body_at > 0);

    /* Far more than the socket buffers hold (4 MiB send, 4 KiB receive). */
    enum { N = 24 };
    const size_t size = 300000;
    int callers[N];
    for (int i = 0; i < N; i++)
        callers[i] = start_caller(env, "slow1", i, size);
    assert_int_equal(proc_wait_for_nth(env->mcpd.proc, "infer 'slow1' sent", N, 30000), 0);

    /* Only now does the publisher read: everything must come through. */
    char ids[N][33];
    int tags[N];
    read_task_frames(pub, &in, (size_t)body_at, N, size, ids, tags);
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        assert_true(tags[i] >= 0 && tags[i] < N);
        assert_false(seen[tags[i]]);
        seen[tags[i]] = true;
    }

    /* And every caller gets the answer to its own task. */
    for (int i = 0; i < N; i++) {
        char path[128], result[64];
        snprintf(path, sizeof path, "/api/v1/llms/_provider-task/%.32s/result", ids[i]);
        snprintf(result, sizeof result, "{\"status\":200,\"body\":{\"tag\":%d}}", tags[i]);
        char hdr[128];
        snprintf(hdr, sizeof hdr, "x-mcpctl-provider-session: %s", sid);
        const char *headers[] = {"Content-Type: application/json", hdr, NULL};
        struct http_resp r;
        assert_int_equal(test_call(env, "POST", path, env->mcpd.token, headers, result, &r), 0);
        assert_int_equal(r.status, 200);
        http_resp_free(&r);
    }
    for (int i = 0; i < N; i++) {
        struct inbuf cb = {0};
        char want[32];
        snprintf(want, sizeof want, "{\"tag\":%d}", i);
        assert_true(wait_for(callers[i], &cb, 0, want) > 0);
        assert_non_null(strstr(cb.data, "HTTP/1.1 200"));
        free(cb.data);
        close(callers[i]);
    }
    close(pub);
    free(in.data);
}

static void test_publisher_that_never_reads_is_cut_off(void **state)
{
    struct test_env *env = *state;
    struct inbuf in = {0};
    char sid[64];
    int pub = open_publisher(env, "stuck1", sid, sizeof sid, &in);

    /* 8 MiB of backlog plus what the socket buffers hold is well under
     * 20 tasks of ~1 MB. */
    enum { N = 20 };
    int callers[N];
    for (int i = 0; i < N; i++)
        callers[i] = start_caller(env, "stuck1", i, 1000000);
    assert_int_equal(proc_wait_for(env->mcpd.proc, "stream backlog over", 30000), 0);
    assert_int_equal(test_wait_status(env, "stuck1", "inactive", 10000), 0);

    /* No caller is left hanging: each gets 502 or 503. */
    for (int i = 0; i < N; i++) {
        struct inbuf cb = {0};
        assert_true(wait_for(callers[i], &cb, 0, "\r\n\r\n") > 0);
        assert_true(strstr(cb.data, "HTTP/1.1 502") || strstr(cb.data, "HTTP/1.1 503"));
        free(cb.data);
        close(callers[i]);
    }
    close(pub);
    free(in.data);
}

/* mcpd sorts new connections by their first bytes (control streams to a
 * daemon of their own); however those bytes arrive, every request works. */
static void test_streams_open_however_the_request_arrives(void **state)
{
    struct test_env *env = *state;
    char sid[64], req[512];
    register_llm(env, "split1", sid, sizeof sid);
    int n = stream_request(env, sid, req, sizeof req);

    /* The request line in pieces. */
    int one = 1;
    int a = connect_to(env, 0);
    setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    send_all(a, req, 3);
    send_all(a, req + 3, 10);
    send_all(a, req + 13, (size_t)n - 13);
    struct inbuf ina = {0};
    assert_true(wait_for(a, &ina, 0, "event: hello") > 0);
    assert_int_equal(test_wait_status(env, "split1", "active", 5000), 0);
    close(a);
    assert_int_equal(test_wait_status(env, "split1", "inactive", 5000), 0);

    /* After another request on the same keep-alive connection. */
    int b = connect_to(env, 0);
    static const char health[] = "GET /healthz HTTP/1.1\r\nHost: mcpd\r\n\r\n";
    send_all(b, health, sizeof health - 1);
    struct inbuf inb = {0};
    long after = wait_for(b, &inb, 0, "{\"ok\":true}");
    assert_true(after > 0);
    send_all(b, req, (size_t)n);
    assert_true(wait_for(b, &inb, (size_t)after, "event: hello") > 0);

    /* A connection that sends nothing, and one that closes at once, get in
     * nobody's way. */
    int idle = connect_to(env, 0);
    close(connect_to(env, 0));
    struct http_resp r;
    assert_int_equal(test_call(env, "GET", "/healthz", NULL, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    close(idle);
    close(b);
    free(ina.data);
    free(inb.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_slow_publisher_gets_every_frame_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_publisher_that_never_reads_is_cut_off, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_streams_open_however_the_request_arrives, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
