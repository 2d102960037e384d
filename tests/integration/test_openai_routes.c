/* The OpenAI routes besides chat, and Anthropic's Messages API, end to end:
 * the real mcpd, the real mcplocal and the fake backend answering like the
 * real APIs.
 *
 *   /v1/completions, /v1/embeddings, /v1/responses, /v1/messages: the
 *   answer reaches the caller byte for byte, a stream's events verbatim and
 *   in order, and the backend gets the caller's body at {url}{path} with
 *   only "model" replaced; x-api-key and Anthropic's error shape on
 *   /v1/messages (a failed stream included); unknown /v1 routes; GET
 *   /v1/models/{id}; CORS with and without --cors-origins; a publisher
 *   without the "paths" feature; every route's usage counted with the
 *   tokens its answer carried. */
#include "fake_backend.h"
#include "fake_publisher.h"
#include "http.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "test_env.h"
#include "tmpdir.h"
#include "usage_support.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS 15000
#define ORIGIN "https://app.example"
#define STREAM_CHUNKS 3 /* the fake backend's streamed answers */

static const char *const JSON_HDR[] = {"Content-Type: application/json", NULL};

struct fx {
    struct test_env *env;
    struct fake_backend *fb;
    char *home;
    struct proc *p;
};

/* mcpd (with extra_args), the fake backend answering realistically, and
 * mcplocal publishing "laptop" (model "served-model") with its stream up. */
static struct fx *fx_new(const char *const extra_args[])
{
    struct fx *x = calloc(1, sizeof *x);
    x->env = test_env_start(extra_args);
    x->fb = fake_backend_start();
    if (!x->env || !x->fb)
        return NULL;
    fake_backend_set_realistic(x->fb, true);
    fake_backend_set_stream(x->fb, STREAM_CHUNKS, 5);
    x->home = tmpdir_create("openai-routes");
    char text[2048];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", x->env->mcpd.url,
             x->env->mcpd.token);
    tmpdir_write(x->home, "credentials", text, 0600);
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"laptop\", \"type\": \"openai\",\n"
             "  \"model\": \"served-model\", \"url\": \"%s\", \"publish\": true}]}}\n",
             fake_backend_url(x->fb));
    tmpdir_write(x->home, "config.json", text, 0644);
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->home, NULL};
    const char *env[] = {"MCPLOCAL_BACKOFF_MIN_MS=50", "MCPLOCAL_BACKOFF_MAX_MS=500", NULL};
    x->p = proc_start(argv, env, x->home);
    if (!x->p || proc_wait_for(x->p, "stream up", WAIT_MS) != 0 ||
        test_wait_status(x->env, "laptop", "active", WAIT_MS) != 0) {
        if (x->p)
            proc_dump(x->p);
        return NULL;
    }
    return x;
}

static int setup(void **state)
{
    *state = fx_new(NULL);
    return *state ? 0 : -1;
}

static int setup_cors(void **state)
{
    const char *args[] = {"--cors-origins", "https://other.example, " ORIGIN, NULL};
    *state = fx_new(args);
    return *state ? 0 : -1;
}

static int setup_cors_any(void **state)
{
    const char *args[] = {"--cors-origins", "*", NULL};
    *state = fx_new(args);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    assert_int_equal(proc_stop(x->p, WAIT_MS), 0);
    fake_backend_stop(x->fb);
    assert_int_equal(test_env_stop(x->env), 0);
    tmpdir_remove(x->home);
    free(x);
    return 0;
}

static void post(struct fx *x, const char *path, const char *const headers[], const char *body,
                 struct http_resp *r)
{
    assert_int_equal(
        test_call(x->env, "POST", path, x->env->mcpd.token, headers ? headers : JSON_HDR, body, r),
        0);
}

/* The body the backend must get: the caller's with "model":"laptop"
 * replaced by the provider's model, nothing else changed. */
static char *upstream_body(const char *body)
{
    static const char from[] = "\"model\":\"laptop\"";
    const char *at = strstr(body, from);
    assert_non_null(at);
    char *out = NULL;
    assert_true(asprintf(&out, "%.*s\"model\":\"served-model\"%s", (int)(at - body), body,
                         at + sizeof from - 1) > 0);
    return out;
}

static void assert_header(const struct http_resp *r, const char *name, const char *want)
{
    char *v = http_resp_header(r, name);
    if (!v || strcmp(v, want) != 0)
        fail_msg("header %s: got '%s', want '%s'\n%s", name, v ? v : "(none)", want, r->headers);
    free(v);
}

static void assert_no_header(const struct http_resp *r, const char *name)
{
    char *v = http_resp_header(r, name);
    if (v)
        fail_msg("unexpected header %s: %s", name, v);
}

/* The backend got body at backend_path, with only the model replaced. */
static void assert_upstream(struct fx *x, const char *backend_path, const char *body)
{
    char *want = upstream_body(body);
    char *got = fake_backend_last_body(x->fb, backend_path);
    if (!got || strcmp(got, want) != 0)
        fail_msg("backend body at %s:\n got  %s\n want %s", backend_path, got ? got : "(none)",
                 want);
    free(got);
    free(want);
}

/* ---- whole answers ---- */

static const struct {
    const char *route, *backend, *body;
} PLAIN[] = {
    {"/v1/completions", "/v1/completions",
     "{\"model\":\"laptop\",\"prompt\":\"Say hi\",\"max_tokens\":5,\"temperature\":0,"
     "\"stop\":[\"\\n\"],\"user\":\"u\\u00e9\"}"},
    {"/v1/embeddings", "/v1/embeddings",
     "{\"model\":\"laptop\",\"input\":[\"a\",\"b c\"],\"encoding_format\":\"float\"}"},
    {"/v1/responses", "/v1/responses",
     "{\"model\":\"laptop\",\"input\":[{\"role\":\"user\",\"content\":\"hi\"}],"
     "\"instructions\":\"be brief\",\"store\":false}"},
    {"/v1/messages", "/v1/messages",
     "{\"model\":\"laptop\",\"max_tokens\":16,\"system\":\"terse\",\"messages\":[{\"role\":"
     "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hello\"}]}]}"},
};

static void test_whole_answers(void **state)
{
    struct fx *x = *state;
    for (size_t i = 0; i < sizeof PLAIN / sizeof PLAIN[0]; i++) {
        struct http_resp r;
        post(x, PLAIN[i].route, NULL, PLAIN[i].body, &r);
        if (r.status != 200)
            fail_msg("%s: %ld %s", PLAIN[i].route, r.status, r.body);
        char *sent = fake_backend_last_reply(x->fb, PLAIN[i].backend);
        assert_non_null(sent);
        if (strcmp(r.body, sent) != 0)
            fail_msg("%s: the caller got\n %s\nthe backend sent\n %s", PLAIN[i].route, r.body,
                     sent);
        free(sent);
        assert_header(&r, "Content-Type", "application/json");
        assert_int_equal(fake_backend_count(x->fb, PLAIN[i].backend), 1);
        assert_upstream(x, PLAIN[i].backend, PLAIN[i].body);
        http_resp_free(&r);
    }
    /* Each went to its own path; nothing to chat completions. */
    assert_int_equal(fake_backend_count(x->fb, "/v1/chat/completions"), 0);

    /* The answers are the backend's: what an SDK reads is there. */
    struct http_resp r;
    post(x, "/v1/completions", NULL, PLAIN[0].body, &r);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(j, "choices"), 0), "text")),
                        "hello from fake");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "served-model");
    json_decref(j);
    http_resp_free(&r);

    /* Embeddings never stream: "stream": true still gets the JSON list. */
    const char *emb = "{\"model\":\"laptop\",\"input\":\"x\",\"stream\":true}";
    post(x, "/v1/embeddings", NULL, emb, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    json_t *d0 = json_array_get(json_object_get(j, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "object")), "embedding");
    assert_int_equal(json_array_size(json_object_get(d0, "embedding")), 3);
    json_decref(j);
    http_resp_free(&r);
    assert_upstream(x, "/v1/embeddings", emb);

    /* What each route requires of its body, checked before any task. */
    static const struct {
        const char *route, *body, *needle;
    } bad[] = {
        {"/v1/completions", "{\"model\":\"laptop\"}", "prompt"},
        {"/v1/embeddings", "{\"model\":\"laptop\"}", "input"},
        {"/v1/responses", "{\"input\":\"x\"}", "model"},
        {"/v1/completions", "{\"model\":\"laptop\",\"prompt\":\"x\",\"stream\":\"yes\"}", "stream"},
        {"/v1/embeddings", "not json", "JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        post(x, bad[i].route, NULL, bad[i].body, &r);
        if (r.status != 400 || !strstr(r.body, bad[i].needle))
            fail_msg("%s %s: %ld %s", bad[i].route, bad[i].body, r.status, r.body);
        j = json_loads(r.body, 0, NULL);
        json_t *e = json_object_get(j, "error");
        assert_true(json_is_object(e));
        assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_request_error");
        json_decref(j);
        http_resp_free(&r);
    }
    /* An unknown model, OpenAI's shape. */
    post(x, "/v1/embeddings", NULL, "{\"model\":\"nosuch\",\"input\":\"x\"}", &r);
    assert_int_equal(r.status, 404);
    j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "model_not_found");
    json_decref(j);
    http_resp_free(&r);
    assert_int_equal(fake_backend_count(x->fb, "/v1/embeddings"), 2);
}

/* ---- streams ---- */

/* The events of a stream, by name (or "data" for unnamed ones), in order,
 * as one string "a,b,c". */
static char *event_names(const char *body)
{
    size_t cap = strlen(body) + 1, len = 0;
    char *out = calloc(1, cap);
    const char *p = body;
    while (*p) {
        const char *end = strstr(p, "\n\n");
        if (!end)
            break;
        const char *name = "data";
        size_t nlen = 4;
        if (strncmp(p, "event: ", 7) == 0) {
            name = p + 7;
            nlen = strcspn(name, "\n");
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%.*s", len ? "," : "", (int)nlen, name);
        p = end + 2;
    }
    return out;
}

static const struct {
    const char *route, *body, *events;
} STREAMS[] = {
    {"/v1/completions", "{\"model\":\"laptop\",\"prompt\":\"Say hi\",\"stream\":true}",
     "data,data,data,data"},
    {"/v1/responses",
     "{\"model\":\"laptop\",\"input\":\"hi\",\"stream\":true,\"metadata\":{\"k\":\"v\"}}",
     "response.created,response.in_progress,response.output_item.added,"
     "response.content_part.added,response.output_text.delta,response.output_text.delta,"
     "response.output_text.delta,response.output_text.done,response.content_part.done,"
     "response.output_item.done,response.completed"},
    {"/v1/messages",
     "{\"model\":\"laptop\",\"max_tokens\":16,\"stream\":true,\"messages\":[{\"role\":\"user\","
     "\"content\":\"hello\"}]}",
     "message_start,content_block_start,ping,content_block_delta,content_block_delta,"
     "content_block_delta,content_block_stop,message_delta,message_stop"},
};

static void test_streams(void **state)
{
    struct fx *x = *state;
    for (size_t i = 0; i < sizeof STREAMS / sizeof STREAMS[0]; i++) {
        struct http_resp r;
        post(x, STREAMS[i].route, NULL, STREAMS[i].body, &r);
        if (r.status != 200)
            fail_msg("%s: %ld %s", STREAMS[i].route, r.status, r.body);
        assert_header(&r, "Content-Type", "text/event-stream");
        char *sent = fake_backend_stream_bytes(x->fb);
        if (strcmp(r.body, sent) != 0)
            fail_msg("%s: the caller got\n%s\nthe backend sent\n%s", STREAMS[i].route, r.body,
                     sent);
        free(sent);
        char *names = event_names(r.body);
        if (strcmp(names, STREAMS[i].events) != 0)
            fail_msg("%s: events %s, want %s", STREAMS[i].route, names, STREAMS[i].events);
        free(names);
        assert_upstream(x, STREAMS[i].route, STREAMS[i].body);
        http_resp_free(&r);
    }
    assert_int_equal(fake_backend_wait_completed(x->fb, 3, 5000), 0);
    assert_int_equal(fake_backend_streams_completed(x->fb), 3);
    /* The completions stream ends as OpenAI's do. */
    struct http_resp r;
    post(x, STREAMS[0].route, NULL, STREAMS[0].body, &r);
    size_t n = strlen(r.body);
    assert_true(n > 14 && strcmp(r.body + n - 14, "data: [DONE]\n\n") == 0);
    assert_non_null(strstr(r.body, "\"text\":\"tok0\""));
    http_resp_free(&r);
}

/* ---- Anthropic's Messages API ---- */

/* error.type of an Anthropic error body ({"type":"error","error":{...}}). */
static void assert_anthropic_error(const char *body, const char *type)
{
    json_t *j = json_loads(body, 0, NULL);
    if (!j)
        fail_msg("not JSON: %s", body);
    json_t *e = json_object_get(j, "error");
    const char *top = json_string_value(json_object_get(j, "type"));
    const char *et = json_string_value(json_object_get(e, "type"));
    if (!top || strcmp(top, "error") != 0 || !et || strcmp(et, type) != 0 ||
        !json_is_string(json_object_get(e, "message")))
        fail_msg("want an Anthropic %s error, got %s", type, body);
    json_decref(j);
}

static void test_anthropic_keys_and_errors(void **state)
{
    struct fx *x = *state;
    const char *body = PLAIN[3].body;
    char key[256];
    snprintf(key, sizeof key, "x-api-key: %s", x->env->mcpd.token);
    const char *anthropic[] = {"Content-Type: application/json", key,
                               "anthropic-version: 2023-06-01", NULL};
    char *url = mcpd_url(&x->env->mcpd, "/v1/messages");

    /* The SDK's way: x-api-key, no Authorization. */
    struct http_resp r;
    assert_int_equal(http_do("POST", url, NULL, anthropic, body, &r), 0);
    if (r.status != 200)
        fail_msg("x-api-key: %ld %s", r.status, r.body);
    char *sent = fake_backend_last_reply(x->fb, "/v1/messages");
    assert_string_equal(r.body, sent);
    free(sent);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "message");
    json_decref(j);
    http_resp_free(&r);
    /* mcplocal sends no key of the caller's to the backend. */
    char *fwd = fake_backend_last_header(x->fb, "/v1/messages", "x-api-key");
    assert_null(fwd);

    /* No key at all; an unknown key. */
    const char *no_key[] = {"Content-Type: application/json", "anthropic-version: 2023-06-01",
                            NULL};
    assert_int_equal(http_do("POST", url, NULL, no_key, body, &r), 0);
    assert_int_equal(r.status, 401);
    assert_anthropic_error(r.body, "authentication_error");
    http_resp_free(&r);
    const char *bad_key[] = {"Content-Type: application/json", "x-api-key: not-a-token", NULL};
    assert_int_equal(http_do("POST", url, NULL, bad_key, body, &r), 0);
    assert_int_equal(r.status, 401);
    assert_anthropic_error(r.body, "authentication_error");
    http_resp_free(&r);

    /* An unknown model; a body without messages. */
    assert_int_equal(http_do("POST", url, NULL, anthropic,
                             "{\"model\":\"nosuch\",\"max_tokens\":5,\"messages\":[{\"role\":"
                             "\"user\",\"content\":\"x\"}]}",
                             &r),
                     0);
    assert_int_equal(r.status, 404);
    assert_anthropic_error(r.body, "not_found_error");
    http_resp_free(&r);
    assert_int_equal(
        http_do("POST", url, NULL, anthropic, "{\"model\":\"laptop\",\"max_tokens\":5}", &r), 0);
    assert_int_equal(r.status, 400);
    assert_anthropic_error(r.body, "invalid_request_error");
    http_resp_free(&r);
    free(url);

    /* x-api-key is Anthropic's: the OpenAI routes want a bearer token. */
    url = mcpd_url(&x->env->mcpd, "/v1/completions");
    assert_int_equal(http_do("POST", url, NULL, anthropic, PLAIN[0].body, &r), 0);
    assert_int_equal(r.status, 401);
    j = json_loads(r.body, 0, NULL);
    assert_true(json_is_object(json_object_get(j, "error")));
    json_decref(j);
    http_resp_free(&r);
    free(url);
    assert_int_equal(fake_backend_count(x->fb, "/v1/messages"), 1);
}

/* A stream that breaks after it started ends with an error event in
 * Anthropic's shape. */
static void test_anthropic_stream_error_event(void **state)
{
    struct fx *x = *state;
    fake_backend_set_stream(x->fb, 200, 50);
    char key[256];
    snprintf(key, sizeof key, "x-api-key: %s", x->env->mcpd.token);
    const char *anthropic[] = {"Content-Type: application/json", key, NULL};
    char *url = mcpd_url(&x->env->mcpd, "/v1/messages");
    struct http_stream *s = http_stream_open("POST", url, NULL, anthropic, STREAMS[2].body);
    free(url);
    assert_int_equal(http_stream_wait_for(s, "event: content_block_delta", 2, WAIT_MS), 0);
    /* The publisher vanishes mid-stream. */
    proc_signal(x->p, SIGKILL);
    proc_wait_exit(x->p, WAIT_MS);
    proc_free(x->p);
    x->p = NULL;
    assert_int_equal(http_stream_wait_for(s, "event: error\n", 1, WAIT_MS), 0);
    assert_int_equal(http_stream_wait_done(s, WAIT_MS), 0);
    assert_int_equal(http_stream_status(s), 200);
    char *body = http_stream_body(s);
    const char *ev = strstr(body, "event: error\ndata: ");
    assert_non_null(ev);
    char *data = strndup(ev + 19, strcspn(ev + 19, "\n"));
    assert_anthropic_error(data, "api_error");
    free(data);
    /* The error is the last event; no message_stop came. */
    assert_null(strstr(body, "message_stop"));
    assert_true(strcmp(body + strlen(body) - 2, "\n\n") == 0);
    assert_null(strstr(ev + 1, "event: "));
    free(body);
    http_stream_close(s);
}

/* ---- /v1 odds and ends, and no CORS by default ---- */

static void test_unknown_route_models_and_no_cors(void **state)
{
    struct fx *x = *state;
    struct http_resp r;
    const char *origin[] = {"Content-Type: application/json", "Origin: " ORIGIN, NULL};

    post(x, "/v1/nosuch", origin, "{\"model\":\"laptop\"}", &r);
    assert_int_equal(r.status, 404);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "unknown_url");
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    json_decref(j);
    assert_no_header(&r, "Access-Control-Allow-Origin");
    http_resp_free(&r);
    assert_int_equal(test_call(x->env, "GET", "/v1/chat", x->env->mcpd.token, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "unknown_url"));
    http_resp_free(&r);

    /* GET /v1/models/{id}. */
    assert_int_equal(
        test_call(x->env, "GET", "/v1/models/laptop", x->env->mcpd.token, origin, NULL, &r), 0);
    if (r.status != 200)
        fail_msg("models/laptop: %ld %s", r.status, r.body);
    assert_no_header(&r, "Access-Control-Allow-Origin");
    j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "laptop");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "model");
    assert_string_equal(json_string_value(json_object_get(j, "owned_by")), "alice");
    assert_true(json_is_integer(json_object_get(j, "created")));
    assert_true(json_integer_value(json_object_get(j, "created")) > 1600000000);
    json_decref(j);
    http_resp_free(&r);
    assert_int_equal(
        test_call(x->env, "GET", "/v1/models/nosuch", x->env->mcpd.token, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    j = json_loads(r.body, 0, NULL);
    assert_true(json_is_string(json_object_get(json_object_get(j, "error"), "message")));
    json_decref(j);
    http_resp_free(&r);
    assert_int_equal(test_call(x->env, "GET", "/v1/models/laptop", NULL, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    http_resp_free(&r);

    /* Without --cors-origins: no CORS headers, streams and preflights
     * included. */
    post(x, STREAMS[1].route, origin, STREAMS[1].body, &r);
    assert_int_equal(r.status, 200);
    assert_no_header(&r, "Access-Control-Allow-Origin");
    http_resp_free(&r);
    const char *pre[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: POST",
                         "Access-Control-Request-Headers: authorization, content-type", NULL};
    assert_int_equal(test_call(x->env, "OPTIONS", "/v1/chat/completions", NULL, pre, NULL, &r), 0);
    assert_true(r.status == 204 || r.status == 200 || r.status == 404 || r.status == 405);
    assert_no_header(&r, "Access-Control-Allow-Origin");
    assert_no_header(&r, "Access-Control-Allow-Methods");
    http_resp_free(&r);
}

/* ---- CORS ---- */

static void preflight(struct fx *x, const char *path, const char *origin, struct http_resp *r)
{
    char o[256];
    snprintf(o, sizeof o, "Origin: %s", origin);
    const char *h[] = {o, "Access-Control-Request-Method: POST",
                       "Access-Control-Request-Headers: authorization, content-type", NULL};
    assert_int_equal(test_call(x->env, "OPTIONS", path, NULL, h, NULL, r), 0);
}

static void test_cors(void **state)
{
    struct fx *x = *state;
    struct http_resp r;
    static const char *const paths[] = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                        "/v1/responses",        "/v1/messages",    "/v1/models"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        preflight(x, paths[i], ORIGIN, &r);
        if (r.status != 204)
            fail_msg("preflight %s: %ld %s", paths[i], r.status, r.body);
        assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
        char *m = http_resp_header(&r, "Access-Control-Allow-Methods");
        assert_non_null(m);
        assert_non_null(strstr(m, "POST"));
        free(m);
        char *h = http_resp_header(&r, "Access-Control-Allow-Headers");
        assert_non_null(h);
        assert_non_null(strcasestr(h, "authorization"));
        assert_non_null(strcasestr(h, "content-type"));
        free(h);
        char *age = http_resp_header(&r, "Access-Control-Max-Age");
        assert_non_null(age);
        assert_true(atoi(age) > 0);
        free(age);
        http_resp_free(&r);
    }
    /* The other listed origin too; an unlisted one gets nothing. */
    preflight(x, "/v1/messages", "https://other.example", &r);
    assert_int_equal(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Origin", "https://other.example");
    http_resp_free(&r);
    preflight(x, "/v1/chat/completions", "https://evil.example", &r);
    assert_no_header(&r, "Access-Control-Allow-Origin");
    http_resp_free(&r);

    /* A streamed answer, a whole one, an error: all carry the header. */
    const char *origin[] = {"Content-Type: application/json", "Origin: " ORIGIN, NULL};
    post(x, STREAMS[1].route, origin, STREAMS[1].body, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "text/event-stream");
    assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
    assert_non_null(strstr(r.body, "event: response.completed"));
    http_resp_free(&r);
    post(x, STREAMS[2].route, origin, STREAMS[2].body, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
    http_resp_free(&r);
    post(x, PLAIN[1].route, origin, PLAIN[1].body, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
    http_resp_free(&r);
    assert_int_equal(test_call(x->env, "POST", "/v1/embeddings", NULL, origin, PLAIN[1].body, &r),
                     0);
    assert_int_equal(r.status, 401);
    assert_header(&r, "Access-Control-Allow-Origin", ORIGIN);
    http_resp_free(&r);
    /* An unlisted origin's request works but is not shared with it. */
    const char *evil[] = {"Content-Type: application/json", "Origin: https://evil.example", NULL};
    post(x, PLAIN[1].route, evil, PLAIN[1].body, &r);
    assert_int_equal(r.status, 200);
    assert_no_header(&r, "Access-Control-Allow-Origin");
    http_resp_free(&r);
}

static void test_cors_any_origin(void **state)
{
    struct fx *x = *state;
    struct http_resp r;
    preflight(x, "/v1/responses", "http://localhost:5173", &r);
    assert_int_equal(r.status, 204);
    assert_header(&r, "Access-Control-Allow-Origin", "*");
    http_resp_free(&r);
    const char *origin[] = {"Content-Type: application/json", "Origin: http://localhost:5173",
                            NULL};
    post(x, STREAMS[0].route, origin, STREAMS[0].body, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "text/event-stream");
    assert_header(&r, "Access-Control-Allow-Origin", "*");
    http_resp_free(&r);
}

/* ---- a publisher without "paths" ---- */

static void test_publisher_without_paths(void **state)
{
    struct fx *x = *state;
    struct fake_publisher *fp =
        fake_publisher_start(x->env->mcpd.url, x->env->mcpd.token,
                             "[{\"name\":\"nopaths\",\"type\":\"openai\",\"model\":\"q\"}]", NULL);
    assert_non_null(fp);
    struct http_resp r;
    post(x, "/v1/embeddings", NULL, "{\"model\":\"nopaths\",\"input\":\"x\"}", &r);
    if (r.status != 400 || !strstr(r.body, "paths"))
        fail_msg("embeddings on a publisher without paths: %ld %s", r.status, r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "paths"));
    json_decref(j);
    http_resp_free(&r);
    /* Streaming or not, every route with a path; Anthropic's shape there. */
    post(x, "/v1/completions", NULL, "{\"model\":\"nopaths\",\"prompt\":\"x\",\"stream\":true}",
         &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "paths"));
    http_resp_free(&r);
    post(x, "/v1/messages", NULL,
         "{\"model\":\"nopaths\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         &r);
    assert_int_equal(r.status, 400);
    assert_anthropic_error(r.body, "invalid_request_error");
    assert_non_null(strstr(r.body, "paths"));
    http_resp_free(&r);
    /* No task reached it. */
    char *tr = fake_publisher_transcript(fp);
    assert_null(strstr(tr, "event: task"));
    free(tr);

    /* Its chat completions still work, plain and streaming. */
    post(x, "/v1/chat/completions", NULL,
         "{\"model\":\"nopaths\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r);
    if (r.status != 200)
        fail_msg("chat on a publisher without paths: %ld %s", r.status, r.body);
    assert_non_null(strstr(r.body, "echo: hi"));
    http_resp_free(&r);
    post(x, "/v1/chat/completions", NULL,
         "{\"model\":\"nopaths\",\"stream\":true,\"messages\":[{\"role\":\"user\","
         "\"content\":\"hi\"}]}",
         &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "tok0"));
    assert_non_null(strstr(r.body, "data: [DONE]"));
    http_resp_free(&r);
    tr = fake_publisher_transcript(fp);
    assert_null(strstr(tr, "\"path\""));
    free(tr);
    /* mcplocal's Llm beside it keeps its paths. */
    post(x, PLAIN[1].route, NULL, PLAIN[1].body, &r);
    assert_int_equal(r.status, 200);
    http_resp_free(&r);
    fake_publisher_stop(fp);
}

/* One relayed call; what its answer says is added to want. */
static void relay(struct fx *x, const char *path, const char *body, struct usage_t_counts *want)
{
    struct http_resp r;
    post(x, path, NULL, body, &r);
    usage_t_add_answer(want, r.status, r.body);
    http_resp_free(&r);
}

/* ---- usage accounting ---- */

/* Every relayed route, whole and streamed, is counted with the tokens its
 * backend reported: a chat stream's only when the caller asked for
 * stream_options.include_usage (mcpd never adds it), the Responses API's
 * in response.completed, Anthropic's input in message_start and output in
 * message_delta; a backend's failure is an error. */
static void test_every_route_is_counted(void **state)
{
    struct fx *x = *state;
    struct usage_t_counts want = {0}, step;
    static const struct {
        const char *path;
        const char *body;
        int64_t prompt, completion; /* what the fake backend reports */
    } calls[] = {
        {"/v1/chat/completions",
         "{\"model\":\"laptop\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"hi\"}]}",
         1, 3},
        {"/v1/chat/completions",
         "{\"model\":\"laptop\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         1, STREAM_CHUNKS},
        {"/v1/chat/completions",
         "{\"model\":\"laptop\",\"stream\":true,\"messages\":[{\"role\":"
         "\"user\",\"content\":\"no usage asked\"}]}",
         0, 0},
        {"/api/v1/llms/laptop/infer",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":"
         "\"user\",\"content\":\"hi\"}]}",
         1, STREAM_CHUNKS},
        {"/v1/completions", "{\"model\":\"laptop\",\"prompt\":\"hi\"}", 1, 3},
        {"/v1/completions",
         "{\"model\":\"laptop\",\"prompt\":\"hi\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}",
         1, STREAM_CHUNKS},
        {"/v1/embeddings", "{\"model\":\"laptop\",\"input\":[\"a\",\"b\"]}", 2, 0},
        {"/v1/responses", "{\"model\":\"laptop\",\"input\":\"hi\"}", 1, 3},
        {"/v1/responses", "{\"model\":\"laptop\",\"input\":\"hi\",\"stream\":true}", 1, 3},
        {"/v1/messages",
         "{\"model\":\"laptop\",\"max_tokens\":16,\"messages\":[{\"role\":"
         "\"user\",\"content\":\"hi\"}]}",
         1, 3},
        {"/v1/messages",
         "{\"model\":\"laptop\",\"max_tokens\":16,\"stream\":true,\"messages\":"
         "[{\"role\":\"user\",\"content\":\"hi\"}]}",
         1, STREAM_CHUNKS},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        step = (struct usage_t_counts){0};
        relay(x, calls[i].path, calls[i].body, &step);
        char what[512];
        snprintf(what, sizeof what, "the answer to %s %s", calls[i].path, calls[i].body);
        usage_t_expect(what, step,
                       (struct usage_t_counts){1, 0, calls[i].prompt, calls[i].completion});
        want.requests += step.requests;
        want.prompt += step.prompt;
        want.completion += step.completion;
        /* mcpd leaves the caller's request as it is: no stream_options added */
        const char *upstream =
            strncmp(calls[i].path, "/api/", 5) == 0 ? "/v1/chat/completions" : calls[i].path;
        char *sent = fake_backend_last_body(x->fb, upstream);
        assert_non_null(sent);
        assert_true(!strstr(sent, "stream_options") == !strstr(calls[i].body, "stream_options"));
        free(sent);
    }

    /* a backend's failure reaches the caller as it is, and is an error */
    fake_backend_set_fail(x->fb, 500);
    relay(x, "/v1/chat/completions",
          "{\"model\":\"laptop\",\"messages\":[{\"role\":\"user\",\"content\":\"fail\"}]}", &want);
    fake_backend_set_fail(x->fb, 0);
    assert_int_equal(want.errors, 1);

    json_t *j =
        usage_t_wait(x->env, x->env->mcpd.token, "llm=laptop", "alice", "laptop", want.requests);
    usage_t_expect("GET /api/v1/usage", usage_t_sum(j, "alice", "laptop"), want);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_whole_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_keys_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anthropic_stream_error_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_route_models_and_no_cors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cors, setup_cors, teardown),
        cmocka_unit_test_setup_teardown(test_cors_any_origin, setup_cors_any, teardown),
        cmocka_unit_test_setup_teardown(test_publisher_without_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_route_is_counted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
