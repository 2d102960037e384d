/*
 * Caller connections at the HTTP/1.1 level, on raw sockets: clients of
 * POST /v1/chat/completions and POST /api/v1/llms/NAME/infer get what any
 * correct HTTP/1.1 server gives them — keep-alive, pipelining answered in
 * order, chunked request bodies, Expect: 100-continue, requests however
 * their bytes arrive, 413 over the body cap, 401 without a good token,
 * Connection: close and HTTP/1.0 honoured, 400 (or a close) for garbage
 * and for a Content-Length that cannot frame the body, a cancel for the
 * publisher when the caller goes away, nothing lost for a caller that reads
 * late, and well-framed responses.
 */
#include "fake_publisher.h"
#include "raw_http.h"
#include "test_env.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Every wait is for a condition; this only bounds a server that stalls. */
#define WAIT_MS 10000

static const char PROVIDERS[] = "[{\"name\":\"llm1\",\"type\":\"openai\",\"model\":\"q\"}]";

enum api { OPENAI, INFER };

static int setup(void **state)
{
    *state = fixture_start(NULL, PROVIDERS);
    return *state ? 0 : -1;
}

/* The smallest body cap mcpd takes. */
static int setup_small_body(void **state)
{
    const char *args[] = {"--max-body", "1K", NULL};
    *state = fixture_start(args, PROVIDERS);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    assert_int_equal(fixture_stop(*state), 0);
    return 0;
}

static const char *token(void **state)
{
    return ((struct fixture *)*state)->env->mcpd.token;
}

static void script(struct fixture *f, enum fp_mode mode, int chunks, int delay_ms)
{
    struct fp_script s = {.mode = mode, .chunks = chunks, .delay_ms = delay_ms};
    fake_publisher_set_script(f->fp, &s);
}

static void open_conn(struct fixture *f, struct raw_conn *c, int rcvbuf)
{
    assert_int_equal(raw_connect(c, f->env->mcpd.port, rcvbuf), 0);
}

static void send_str(struct raw_conn *c, const char *s)
{
    assert_int_equal(raw_send(c, s, strlen(s)), 0);
}

static const char *chat_path(enum api api)
{
    return api == OPENAI ? "/v1/chat/completions" : "/api/v1/llms/llm1/infer";
}

/* A chat request body for llm1 with one user message. */
static int chat_body(char *out, size_t cap, enum api api, const char *content, bool stream)
{
    return snprintf(out, cap,
                    "{%s\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                    api == OPENAI ? "\"model\":\"llm1\"," : "", stream ? "true" : "false", content);
}

/* The head of a chat POST; tok NULL sends no Authorization, extra is more
 * header lines, each ending in CRLF. */
static int chat_head(char *out, size_t cap, enum api api, const char *version, const char *tok,
                     const char *extra)
{
    char auth[256] = "";
    if (tok)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    return snprintf(out, cap,
                    "POST %s %s\r\nHost: mcpd\r\n%sContent-Type: application/json\r\n%s\r\n",
                    chat_path(api), version, auth, extra);
}

/* A whole HTTP/1.1 chat request with a Content-Length body. */
static int chat_request(char *out, size_t cap, enum api api, const char *tok, const char *content,
                        bool stream, const char *extra)
{
    char body[512], hdrs[512];
    int blen = chat_body(body, sizeof body, api, content, stream);
    snprintf(hdrs, sizeof hdrs, "%sContent-Length: %d\r\n", extra, blen);
    int hlen = chat_head(out, cap, api, "HTTP/1.1", tok, hdrs);
    return hlen + snprintf(out + hlen, cap - (size_t)hlen, "%s", body);
}

static int get_request(char *out, size_t cap, const char *path, const char *tok)
{
    return snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: mcpd\r\nAuthorization: Bearer %s\r\n\r\n",
                    path, tok);
}

/* Reads one response and checks its status, printing its head otherwise. */
static void read_status(struct raw_conn *c, struct raw_resp *r, int status)
{
    enum raw_result rc = raw_read_response(c, r, WAIT_MS);
    if (rc != RAW_OK || r->status != status) {
        fprintf(stderr, "wanted %d, read result %d, head:\n%s\n", status, (int)rc,
                r->head ? r->head : "(none)");
        int got = r->status;
        raw_resp_free(r);
        assert_int_equal(rc, RAW_OK);
        assert_int_equal(got, status);
    }
}

static json_t *body_json(const struct raw_resp *r)
{
    json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
    if (!o)
        fprintf(stderr, "not JSON: %s\n", r->body);
    assert_non_null(o);
    return o;
}

/* The next response is 200 with the fake publisher's answer to content;
 * returns whether it announced Connection: close. */
static bool expect_echo(struct raw_conn *c, const char *content)
{
    struct raw_resp r;
    read_status(c, &r, 200);
    json_t *o = body_json(&r);
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    const char *got = json_string_value(json_object_get(msg, "content"));
    char want[256];
    snprintf(want, sizeof want, "echo: %s", content);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "chat.completion");
    json_decref(o);
    bool closing = raw_resp_has_token(&r, "Connection", "close");
    raw_resp_free(&r);
    return closing;
}

/* Sends a chat request for content on c and checks the answer. */
static void round_trip(void **state, struct raw_conn *c, enum api api, const char *content)
{
    char req[2048];
    chat_request(req, sizeof req, api, token(state), content, false, "");
    send_str(c, req);
    expect_echo(c, content);
}

/* The next response is 200 with a JSON array holding llm1's row. */
static void expect_llm_list(struct raw_conn *c)
{
    struct raw_resp r;
    read_status(c, &r, 200);
    json_t *o = body_json(&r);
    assert_true(json_is_array(o));
    assert_string_equal(json_string_value(json_object_get(json_array_get(o, 0), "name")), "llm1");
    json_decref(o);
    raw_resp_free(&r);
}

/* The id of the task frame whose body carries content, as a new string. */
static char *task_carrying(struct fixture *f, const char *content)
{
    char *id = fake_publisher_task_id(f->fp, content);
    assert_non_null(id);
    return id;
}

/* 1. One connection serves a completion, two listings and another
 * completion, one after the other. */
static void test_keep_alive_serves_requests_in_order(void **state)
{
    struct fixture *f = *state;
    struct raw_conn c;
    char req[2048];
    open_conn(f, &c, 0);

    round_trip(state, &c, OPENAI, "ka-first");

    get_request(req, sizeof req, "/v1/models", token(state));
    send_str(&c, req);
    struct raw_resp r;
    read_status(&c, &r, 200);
    json_t *o = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "list");
    json_t *m = json_array_get(json_object_get(o, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "id")), "llm1");
    json_decref(o);
    raw_resp_free(&r);

    get_request(req, sizeof req, "/api/v1/llms", token(state));
    send_str(&c, req);
    expect_llm_list(&c);

    round_trip(state, &c, INFER, "ka-second");
    raw_close(&c);
}

/* 2. Requests written together are all answered, in order; or the server
 * answers the first with Connection: close and closes (RFC 9112 9.3.2:
 * the client then retries the rest). */
static void test_pipelined_requests_are_answered_in_order(void **state)
{
    struct fixture *f = *state;
    struct raw_conn c;
    char req[4096];
    open_conn(f, &c, 0);

    int n = chat_request(req, sizeof req, OPENAI, token(state), "pipe-A", false, "");
    chat_request(req + n, sizeof req - (size_t)n, INFER, token(state), "pipe-B", false, "");
    send_str(&c, req);
    expect_echo(&c, "pipe-A");
    expect_echo(&c, "pipe-B");
    /* each was relayed once, the first first: POSTs are not safe, so a
     * server may not run them in parallel (RFC 9112 9.3.2) */
    assert_int_equal(fake_publisher_wait(f->fp, "event: task", 2, WAIT_MS), 0);
    char *t = fake_publisher_transcript(f->fp);
    char *a = strstr(t, "\"content\":\"pipe-A\""), *b = strstr(t, "\"content\":\"pipe-B\"");
    assert_true(a && b && a < b);
    assert_null(strstr(a + 1, "\"content\":\"pipe-A\""));
    assert_null(strstr(b + 1, "\"content\":\"pipe-B\""));
    free(t);

    /* a completion and a listing in one write */
    n = chat_request(req, sizeof req, OPENAI, token(state), "pipe-C", false, "");
    get_request(req + n, sizeof req - (size_t)n, "/api/v1/llms", token(state));
    send_str(&c, req);
    bool closing = expect_echo(&c, "pipe-C");
    if (closing)
        assert_int_equal(raw_wait_closed(&c, WAIT_MS), RAW_OK);
    else
        expect_llm_list(&c);
    raw_close(&c);
}

/* 3. A chunked request body, written piece by piece, reaches the publisher
 * byte for byte. */
static void test_chunked_request_body_is_relayed_intact(void **state)
{
    struct fixture *f = *state;
    static const char body[] = "{\"model\":\"llm1\",\"messages\":[{\"role\":\"user\",\"content\":"
                               "\"sent in chunks, each its own write\"}],\"temperature\":0.25}";
    /* split points, the last at the end */
    const size_t cuts[] = {1, 17, 40, 41, 90, sizeof body - 1};
    struct raw_conn c;
    char head[1024], line[64];
    open_conn(f, &c, 0);
    chat_head(head, sizeof head, OPENAI, "HTTP/1.1", token(state),
              "Transfer-Encoding: chunked\r\n");
    send_str(&c, head);
    size_t at = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        size_t len = cuts[i] - at;
        /* one chunk carries an extension, which a recipient ignores */
        snprintf(line, sizeof line, i == 2 ? "%zx;note=x\r\n" : "%zx\r\n", len);
        send_str(&c, line);
        assert_int_equal(raw_send(&c, body + at, len), 0);
        send_str(&c, "\r\n");
        at = cuts[i];
    }
    send_str(&c, "0\r\n\r\n");
    expect_echo(&c, "sent in chunks, each its own write");

    char want[512];
    snprintf(want, sizeof want, "\"streaming\":false,\"body\":%s}\n\n", body);
    char *t = fake_publisher_transcript(f->fp);
    if (!strstr(t, want))
        fprintf(stderr, "no '%s' in:\n%s\n", want, t);
    assert_non_null(strstr(t, want));
    free(t);

    /* the connection is in step for the next request */
    round_trip(state, &c, INFER, "after-chunked");
    raw_close(&c);
}

/* 4. Expect: 100-continue gets its interim response before the body is
 * sent, and the final answer after it. */
static void test_expect_100_continue(void **state)
{
    struct fixture *f = *state;
    for (enum api api = OPENAI; api <= INFER; api++) {
        char body[512], hdrs[256], head[1024];
        char content[32], needle[64];
        snprintf(content, sizeof content, "continue-%d", (int)api);
        snprintf(needle, sizeof needle, "\"content\":\"%s\"", content);
        int blen = chat_body(body, sizeof body, api, content, false);
        snprintf(hdrs, sizeof hdrs, "Expect: 100-continue\r\nContent-Length: %d\r\n", blen);
        chat_head(head, sizeof head, api, "HTTP/1.1", token(state), hdrs);
        struct raw_conn c;
        open_conn(f, &c, 0);
        send_str(&c, head);
        struct raw_resp r;
        read_status(&c, &r, 100);
        assert_string_equal(r.version, "HTTP/1.1");
        raw_resp_free(&r);
        /* nothing was relayed before the body came */
        char *t = fake_publisher_transcript(f->fp);
        assert_null(strstr(t, needle));
        free(t);
        send_str(&c, body);
        expect_echo(&c, content);
        raw_close(&c);
    }
}

/* 5. A request that arrives one byte per write is served. */
static void test_request_sent_byte_by_byte(void **state)
{
    struct fixture *f = *state;
    for (enum api api = OPENAI; api <= INFER; api++) {
        char req[2048];
        int n = chat_request(req, sizeof req, api, token(state), "bytewise", false, "");
        struct raw_conn c;
        open_conn(f, &c, 0);
        for (int i = 0; i < n; i++)
            assert_int_equal(raw_send(&c, req + i, 1), 0);
        expect_echo(&c, "bytewise");
        raw_close(&c);
    }
}

/* The next response has this status and a JSON error body of the route's
 * shape (OpenAI's on /v1), and the header need when not NULL; returns
 * whether it announced Connection: close. */
static bool expect_error(struct raw_conn *c, enum api api, int status, const char *need)
{
    struct raw_resp r;
    read_status(c, &r, status);
    char *ct = raw_resp_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncmp(ct, "application/json", 16) == 0);
    free(ct);
    if (need) {
        char *v = raw_resp_header(&r, need);
        if (!v)
            fprintf(stderr, "no %s in:\n%s\n", need, r.head);
        assert_non_null(v);
        free(v);
    }
    json_t *o = body_json(&r);
    json_t *err = json_object_get(o, "error");
    if (api == OPENAI) {
        assert_true(json_is_string(json_object_get(err, "message")));
        assert_true(json_is_string(json_object_get(err, "type")));
    } else {
        assert_true(json_is_string(err));
    }
    json_decref(o);
    bool closing = raw_resp_has_token(&r, "Connection", "close");
    raw_resp_free(&r);
    return closing;
}

/* After a refused request: a server that announced Connection: close
 * closes; otherwise the connection serves the next request, or is closed
 * cleanly before it. Never left hanging. */
static void expect_served_or_closed(void **state, struct raw_conn *c, bool closing,
                                    const char *content)
{
    if (closing) {
        assert_int_equal(raw_wait_closed(c, WAIT_MS), RAW_OK);
        return;
    }
    char req[2048];
    chat_request(req, sizeof req, OPENAI, token(state), content, false, "");
    assert_int_equal(raw_send(c, req, strlen(req)), 0);
    struct raw_resp r;
    enum raw_result rc = raw_read_response(c, &r, WAIT_MS);
    if (rc == RAW_CLOSED)
        return;
    assert_int_equal(rc, RAW_OK);
    assert_int_equal(r.status, 200);
    char want[128];
    snprintf(want, sizeof want, "\"echo: %s\"", content);
    assert_non_null(strstr(r.body, want));
    raw_resp_free(&r);
}

/* 6. Bodies over --max-body are refused: a declared length with 413 at
 * once, a chunked body by closing the connection once it grows past the
 * cap. */
static void test_body_over_the_cap_is_413(void **state)
{
    struct fixture *f = *state;
    for (enum api api = OPENAI; api <= INFER; api++) {
        /* Content-Length over the cap: the answer comes without the body */
        char head[1024];
        chat_head(head, sizeof head, api, "HTTP/1.1", token(state), "Content-Length: 100000\r\n");
        struct raw_conn c;
        open_conn(f, &c, 0);
        send_str(&c, head);
        expect_served_or_closed(state, &c, expect_error(&c, api, 413, NULL), "after-413");
        raw_close(&c);

        /* chunked, a JSON string of 8 x 256 bytes against a 1 KiB cap */
        chat_head(head, sizeof head, api, "HTTP/1.1", token(state),
                  "Transfer-Encoding: chunked\r\n");
        open_conn(f, &c, 0);
        send_str(&c, head);
        static const char first[] = "27\r\n{\"messages\":[{\"role\":\"user\",\"content\":\"\r\n";
        char piece[256 + 16];
        int n = snprintf(piece, sizeof piece, "100\r\n");
        memset(piece + n, 'x', 256);
        memcpy(piece + n + 256, "\r\n", 2);
        /* a server may answer before the rest arrives and stop reading */
        bool sent = raw_send(&c, first, sizeof first - 1) == 0;
        for (int i = 0; i < 8 && sent; i++)
            sent = raw_send(&c, piece, (size_t)n + 258) == 0;
        /* libmicrohttpd answers only before a body or after all of it, so
         * rather than read the rest for a 413, mcpd closes the connection
         * the moment the body passes the cap: no answer, and nothing
         * reaches the publisher. */
        if (sent)
            raw_send(&c, "4\r\n\"}]}\r\n0\r\n\r\n", 14);
        struct raw_resp r;
        assert_int_equal(raw_read_response(&c, &r, WAIT_MS), RAW_CLOSED);
        raw_close(&c);
    }
    /* and a request under the cap still passes */
    struct raw_conn c;
    open_conn(f, &c, 0);
    round_trip(state, &c, OPENAI, "small");
    raw_close(&c);
}

/* 7. No token or a wrong one: 401 with a JSON error, in the OpenAI shape
 * on /v1. */
static void test_missing_or_wrong_token_is_401(void **state)
{
    struct fixture *f = *state;
    const char *tokens[] = {NULL, "not-a-token"};
    for (int i = 0; i < 4; i++) {
        enum api api = i < 2 ? OPENAI : INFER;
        char req[2048];
        chat_request(req, sizeof req, api, tokens[i % 2], "unauthorised", false, "");
        struct raw_conn c;
        open_conn(f, &c, 0);
        send_str(&c, req);
        /* RFC 9110 11.6.1: a 401 names its scheme */
        bool closing = expect_error(&c, api, 401, "WWW-Authenticate");

        /* the next request works, or the server closed cleanly */
        expect_served_or_closed(state, &c, closing, "authorised");
        raw_close(&c);
    }
    /* nothing unauthorised reached the publisher */
    char *t = fake_publisher_transcript(f->fp);
    assert_null(strstr(t, "unauthorised"));
    free(t);
}

/* 8. Connection: close, and HTTP/1.0 without keep-alive: answered, then the
 * server closes. */
static void test_connection_close_and_http10(void **state)
{
    struct fixture *f = *state;
    char req[2048];
    struct raw_conn c;
    open_conn(f, &c, 0);
    chat_request(req, sizeof req, OPENAI, token(state), "then-close", false,
                 "Connection: close\r\n");
    send_str(&c, req);
    expect_echo(&c, "then-close");
    assert_int_equal(raw_wait_closed(&c, WAIT_MS), RAW_OK);
    raw_close(&c);

    for (int stream = 0; stream <= 1; stream++) {
        char body[512], hdrs[128];
        int blen = chat_body(body, sizeof body, INFER, "old-client", stream);
        snprintf(hdrs, sizeof hdrs, "Content-Length: %d\r\n", blen);
        int hlen = chat_head(req, sizeof req, INFER, "HTTP/1.0", token(state), hdrs);
        snprintf(req + hlen, sizeof req - (size_t)hlen, "%s", body);
        open_conn(f, &c, 0);
        send_str(&c, req);
        struct raw_resp r;
        read_status(&c, &r, 200);
        /* RFC 9112 6.1: no Transfer-Encoding for an HTTP/1.0 request */
        assert_false(r.chunked);
        if (stream) {
            assert_non_null(strstr(r.body, "tok2"));
            assert_non_null(strstr(r.body, "data: [DONE]\n\n"));
        } else {
            assert_non_null(strstr(r.body, "\"echo: old-client\""));
        }
        raw_resp_free(&r);
        assert_int_equal(raw_wait_closed(&c, WAIT_MS), RAW_OK);
        raw_close(&c);
    }
}

/* A request that is not valid HTTP (what says how) gets a 4xx or a close,
 * nothing else, and other connections are served as before. Once refused,
 * the connection closes if the server said so, or if must_close (its
 * framing is lost). */
static void expect_refused(void **state, const char *what, const char *req, bool must_close)
{
    struct fixture *f = *state;
    struct raw_conn c, ok;
    open_conn(f, &c, 0);
    send_str(&c, req);
    struct raw_resp r;
    enum raw_result rc = raw_read_response(&c, &r, WAIT_MS);

    open_conn(f, &ok, 0);
    round_trip(state, &ok, OPENAI, "still-serving");
    raw_close(&ok);

    if (rc != RAW_OK) {
        raw_close(&c);
        assert_int_equal(rc, RAW_CLOSED);
        return;
    }
    int status = r.status;
    /* one response: its body holds no second status line */
    bool second_head = strstr(r.body, "HTTP/1.") != NULL;
    enum raw_result closed = RAW_OK;
    if (must_close || raw_resp_has_token(&r, "Connection", "close"))
        closed = raw_wait_closed(&c, WAIT_MS);
    if (status != 400)
        fprintf(stderr, "%s got:\n%s\n", what, r.head);
    if (second_head)
        fprintf(stderr, "%s: a status line inside the %d response's body:\n%s\n", what, status,
                r.body);
    if (closed != RAW_OK)
        fprintf(stderr, "%s: no clean close after the response (%s); unread: '%.*s'\n", what,
                r.body, (int)c.len, c.buf ? c.buf : "");
    raw_resp_free(&r);
    raw_close(&c);
    assert_true(status >= 400 && status < 500);
    assert_false(second_head);
    assert_int_equal(closed, RAW_OK);
}

/* 9. Garbage gets 400 (or a close), and the server goes on serving. */
static void test_malformed_requests_are_refused(void **state)
{
    struct fixture *f = *state;
    char req[2048];
    expect_refused(state, "a garbage request line", "HELLO\r\n\r\n", false);

    chat_request(req, sizeof req, OPENAI, token(state), "no-colon", false,
                 "X-Broken this line has no colon\r\n");
    expect_refused(state, "a header line without a colon", req, false);

    char *t = fake_publisher_transcript(f->fp);
    assert_null(strstr(t, "no-colon"));
    free(t);
}

/* 9b. RFC 9112 6.3: a request whose Content-Length is invalid has no
 * framing; the server answers 400 and closes. */
static void test_invalid_content_length_is_refused(void **state)
{
    struct fixture *f = *state;
    char req[2048];
    chat_head(req, sizeof req, OPENAI, "HTTP/1.1", token(state), "Content-Length: 12x\r\n");
    /* libmicrohttpd 0.9.75 refuses this itself, before mcpd sees the
     * request, and writes its 400's head twice (the second lands in the
     * first's body); what matters is the 400 and the close. */
    struct raw_conn c;
    open_conn(f, &c, 0);
    send_str(&c, req);
    struct raw_resp r;
    read_status(&c, &r, 400);
    raw_resp_free(&r);
    bool ok_seen = c.len > 0 && memmem(c.buf, c.len, " 200 ", 5) != NULL;
    c.len = 0;
    assert_int_equal(raw_wait_closed(&c, WAIT_MS), RAW_OK);
    assert_false(ok_seen);
    raw_close(&c);
}

/* 9c. Two Content-Length fields that disagree are invalid too (RFC 9110
 * 8.6): the server must not pick one. */
static void test_conflicting_content_lengths_are_refused(void **state)
{
    char req[2048];
    chat_request(req, sizeof req, OPENAI, token(state), "two-lengths", false,
                 "Content-Length: 5\r\n");
    expect_refused(state, "two different Content-Lengths", req, true);
    char *t = fake_publisher_transcript(((struct fixture *)*state)->fp);
    assert_null(strstr(t, "two-lengths"));
    free(t);
}

/* 9d. RFC 9112 6.1: Transfer-Encoding together with Content-Length is
 * refused and the connection closed (its framing is ambiguous); 3.2: an
 * HTTP/1.1 request without Host gets 400. Neither reaches the publisher. */
static void test_framing_and_host_rules(void **state)
{
    struct fixture *f = *state;
    char req[2048];
    const char *te_cl = "{\"model\":\"llm1\",\"messages\":[{\"role\":\"user\","
                        "\"content\":\"te-and-cl\"}]}";
    snprintf(req, sizeof req,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: mcpd\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
             "Content-Length: %zu\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
             token(state), strlen(te_cl), strlen(te_cl), te_cl);
    expect_refused(state, "Transfer-Encoding with Content-Length", req, true);

    const char *no_host = "{\"model\":\"llm1\",\"messages\":[{\"role\":\"user\","
                          "\"content\":\"without-host\"}]}";
    snprintf(req, sizeof req,
             "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             token(state), strlen(no_host), no_host);
    expect_refused(state, "an HTTP/1.1 request without Host", req, false);

    char *t = fake_publisher_transcript(f->fp);
    assert_null(strstr(t, "te-and-cl"));
    assert_null(strstr(t, "without-host"));
    free(t);
}

/* Waits for the publisher to be told to cancel task id. */
static void expect_cancel(struct fixture *f, const char *id)
{
    char needle[128];
    snprintf(needle, sizeof needle, "event: cancel\ndata: {\"taskId\":\"%s\"}", id);
    assert_int_equal(fake_publisher_wait(f->fp, needle, 1, WAIT_MS), 0);
}

/* 10. A streaming caller that closes its socket, before the first chunk or
 * in the middle of the stream: the publisher gets a cancel for its task. */
static void test_caller_gone_cancels_the_task(void **state)
{
    struct fixture *f = *state;
    char req[2048];
    struct raw_conn c;

    script(f, FP_SILENT, 0, 0);
    open_conn(f, &c, 0);
    chat_request(req, sizeof req, OPENAI, token(state), "gone-early", true, "");
    send_str(&c, req);
    assert_int_equal(fake_publisher_wait(f->fp, "gone-early", 1, WAIT_MS), 0);
    char *id = task_carrying(f, "gone-early");
    raw_close(&c);
    expect_cancel(f, id);
    free(id);

    /* 100 chunks 50 ms apart: the stream is still going when the caller
     * leaves */
    script(f, FP_ANSWER, 100, 50);
    open_conn(f, &c, 0);
    chat_request(req, sizeof req, INFER, token(state), "gone-midway", true, "");
    send_str(&c, req);
    /* the answer has begun and two chunks went out */
    assert_int_equal(raw_read_until(&c, "\r\n\r\n", WAIT_MS), RAW_OK);
    assert_true(strncmp(c.buf, "HTTP/1.1 200 ", 13) == 0);
    assert_int_equal(fake_publisher_wait_posts(f->fp, 200, 2, WAIT_MS), 0);
    id = task_carrying(f, "gone-midway");
    raw_close(&c);
    expect_cancel(f, id);
    free(id);
}

/* 11. A caller that reads nothing until the publisher has sent all 1000
 * chunks still gets every one, intact and in order, then [DONE]. */
static void test_slow_reader_gets_every_chunk(void **state)
{
    struct fixture *f = *state;
    enum { N = 1000 };
    script(f, FP_ANSWER, N, 0);
    char req[2048];
    struct raw_conn c;
    open_conn(f, &c, 2048);
    chat_request(req, sizeof req, OPENAI, token(state), "slow-reader", true, "");
    send_str(&c, req);
    /* every chunk and the done post accepted by mcpd */
    assert_int_equal(fake_publisher_wait_posts(f->fp, 200, N + 1, 60000), 0);

    struct raw_resp r;
    read_status(&c, &r, 200);
    char *ct = raw_resp_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_true(strncmp(ct, "text/event-stream", 17) == 0);
    free(ct);
    int events = 0;
    for (const char *p = r.body; *p;) {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        if (*p != ':') { /* comments may come between events */
            assert_true(strncmp(p, "data: ", 6) == 0);
            const char *data = p + 6;
            size_t len = (size_t)(end - data);
            if (events < N) {
                json_t *o = json_loadb(data, len, 0, NULL);
                assert_non_null(o);
                json_t *delta =
                    json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
                char want[16];
                snprintf(want, sizeof want, "tok%d ", events);
                assert_string_equal(json_string_value(json_object_get(delta, "content")), want);
                json_decref(o);
            } else {
                assert_int_equal(len, 6);
                assert_memory_equal(data, "[DONE]", 6);
            }
            events++;
        }
        p = end + 2;
    }
    assert_int_equal(events, N + 1);
    raw_resp_free(&r);
    raw_close(&c);
}

/* 12. A non-streaming answer: HTTP/1.1 200, application/json, and a body
 * framed exactly (the next response starts right after it). */
static void test_response_is_framed_exactly(void **state)
{
    struct fixture *f = *state;
    struct raw_conn c;
    open_conn(f, &c, 0);
    for (enum api api = OPENAI; api <= INFER; api++) {
        char req[2048];
        chat_request(req, sizeof req, api, token(state), "framing", false, "");
        send_str(&c, req);
        struct raw_resp r;
        read_status(&c, &r, 200);
        assert_true(strncmp(r.head, "HTTP/1.1 200 ", 13) == 0);
        char *ct = raw_resp_header(&r, "Content-Type");
        assert_non_null(ct);
        assert_true(strncmp(ct, "application/json", 16) == 0);
        free(ct);
        char *cl = raw_resp_header(&r, "Content-Length");
        assert_true(cl != NULL || r.chunked);
        assert_false(cl != NULL && r.chunked); /* RFC 9112 6.2 */
        if (cl)
            assert_int_equal(strtoul(cl, NULL, 10), r.body_len);
        free(cl);
        json_t *o = body_json(&r); /* the whole body, nothing after it */
        json_decref(o);
        raw_resp_free(&r);
    }
    /* nothing stray after the last body either */
    char req[512];
    get_request(req, sizeof req, "/api/v1/llms", token(state));
    send_str(&c, req);
    expect_llm_list(&c);
    raw_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keep_alive_serves_requests_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_requests_are_answered_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_chunked_request_body_is_relayed_intact, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expect_100_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_sent_byte_by_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_the_cap_is_413, setup_small_body, teardown),
        cmocka_unit_test_setup_teardown(test_missing_or_wrong_token_is_401, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close_and_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_requests_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_content_length_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicting_content_lengths_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_framing_and_host_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caller_gone_cancels_the_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader_gets_every_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_is_framed_exactly, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
