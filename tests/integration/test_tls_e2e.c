/* End to end over HTTPS: the real mcpd serving TLS (--tls-cert/--tls-key,
 * a certificate from a throwaway CA), the real mcplocal trusting that CA
 * through caFile in its credentials, the fake OpenAI backend behind it
 * (plain HTTP), a caller with libcurl trusting the CA, and mcpctl logged in
 * with --cacert.
 *
 *   publish over TLS -> active -> streaming and plain chat completions
 *   through mcpd -> mcpctl lists the Llm -> plain HTTP on the TLS port
 *   gets no HTTP answer and does not disturb mcpd -> an mcplocal trusting
 *   an unrelated CA is refused, in one log line naming the URL, while mcpd
 *   keeps serving. */
#include "cli_support.h"
#include "fake_backend.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "raw_http.h"
#include "testca.h"
#include "tmpdir.h"

#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define WAIT_MS 15000
#define LLM "laptop"

static const char *const MCPLOCAL_ENV[] = {"MCPLOCAL_BACKOFF_MIN_MS=50",
                                           "MCPLOCAL_BACKOFF_MAX_MS=300", NULL};

struct fx {
    char *dir; /* CA files and mcpd's database */
    struct testca ca;
    char *db;
    char token[256];
    struct proc *mcpd;
    int port;
    char url[64]; /* https://127.0.0.1:PORT */
    struct fake_backend *fb;
    char *home;      /* mcplocal's, trusting the test CA */
    struct proc *ml; /* that mcplocal */
    char *ctl_home;  /* mcpctl's */
};

static struct fx *fx;

/* ---- HTTPS calls trusting the test CA ---------------------------------- */

struct resp {
    CURLcode rc;
    long status; /* 0 when no HTTP response came */
    char *body;  /* never NULL after call() */
    size_t len;
    char *ctype; /* Content-Type or NULL */
    char err[CURL_ERROR_SIZE];
};

static size_t sink(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct resp *r = ud;
    size_t n = size * nmemb;
    r->body = realloc(r->body, r->len + n + 1);
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

/* One request to fx's mcpd at url_base + path (url_base NULL: the HTTPS
 * URL), trusting only the test CA, with alice's token. body NULL: GET. */
static void call(const char *url_base, const char *path, const char *body, struct resp *r)
{
    memset(r, 0, sizeof *r);
    r->body = calloc(1, 1);
    char url[256];
    snprintf(url, sizeof url, "%s%s", url_base ? url_base : fx->url, path);
    char auth[320];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", fx->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Expect:");
    if (body)
        h = curl_slist_append(h, "Content-Type: application/json");
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CAINFO, fx->ca.ca);
    curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)WAIT_MS);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->err);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    r->rc = curl_easy_perform(c);
    if (r->rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        r->ctype = ct ? strdup(ct) : NULL;
    }
    if (r->rc != CURLE_OK && !r->err[0])
        snprintf(r->err, sizeof r->err, "%s", curl_easy_strerror(r->rc));
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
}

static void resp_free(struct resp *r)
{
    free(r->body);
    free(r->ctype);
    memset(r, 0, sizeof *r);
}

/* The status of Llm name over HTTPS, as a new string, or NULL. */
static char *llm_status(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/llms/%s", name);
    struct resp r;
    call(NULL, path, NULL, &r);
    char *status = NULL;
    if (r.status == 200) {
        json_t *j = json_loads(r.body, 0, NULL);
        const char *s = json_string_value(json_object_get(j, "status"));
        status = s ? strdup(s) : NULL;
        json_decref(j);
    }
    resp_free(&r);
    return status;
}

static int wait_status(const char *name, const char *want, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        char *s = llm_status(name);
        bool match = s && strcmp(s, want) == 0;
        free(s);
        if (match)
            return 0;
        if (waited >= timeout_ms)
            return -1;
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    }
}

static void dump_logs(void)
{
    fprintf(stderr, "---- mcpd log ----\n");
    proc_dump(fx->mcpd);
    if (fx->ml) {
        fprintf(stderr, "---- mcplocal log ----\n");
        proc_dump(fx->ml);
    }
}

/* ---- processes --------------------------------------------------------- */

/* Starts mcpd with TLS on 127.0.0.1:0 and reads the port from its
 * "listening on https://127.0.0.1:PORT" line. 0 or -1. */
static int start_mcpd(void)
{
    const char *argv[] = {
        MCPD_BIN,     "--listen",        "127.0.0.1:0", "--db",     fx->db,
        "--tls-cert", fx->ca.cert,       "--tls-key",   fx->ca.key, "--heartbeat-interval",
        "300ms",      "--ping-interval", "300ms",       NULL};
    const char *needle = "listening on https://127.0.0.1:";
    fx->mcpd = proc_start(argv, NULL, fx->dir);
    if (!fx->mcpd || proc_wait_for(fx->mcpd, needle, 20000) < 0)
        goto fail;
    for (int tries = 0; tries < 200 && fx->port <= 0; tries++) {
        char *log = proc_output(fx->mcpd);
        const char *p = strstr(log, needle);
        if (p && strchr(p, '\n'))
            fx->port = atoi(p + strlen(needle));
        free(log);
        if (fx->port <= 0)
            proc_wait_for(fx->mcpd, "\n", 10);
    }
    if (fx->port <= 0)
        goto fail;
    snprintf(fx->url, sizeof fx->url, "https://127.0.0.1:%d", fx->port);
    return 0;
fail:
    fprintf(stderr, "mcpd did not start with TLS\n");
    if (fx->mcpd)
        proc_dump(fx->mcpd);
    return -1;
}

/* A home for mcplocal: credentials for fx's mcpd trusting ca_file, and
 * one published provider, name, served by the fake backend. */
static char *make_home(const char *ca_file, const char *name)
{
    char *home = tmpdir_create("tls-e2e-home");
    json_t *j =
        json_pack("{s:s,s:s,s:s}", "mcpdUrl", fx->url, "token", fx->token, "caFile", ca_file);
    char *text = json_dumps(j, 0);
    tmpdir_write(home, "credentials", text, 0600);
    free(text);
    json_decref(j);
    j = json_pack("{s:{s:[{s:s,s:s,s:s,s:s,s:s,s:b}]}}", "llm", "providers", "name", name, "type",
                  "openai", "model", "served-model", "url", fake_backend_url(fx->fb), "tier",
                  "fast", "publish", 1);
    text = json_dumps(j, 0);
    tmpdir_write(home, "config.json", text, 0644);
    free(text);
    json_decref(j);
    return home;
}

static struct proc *start_mcplocal(const char *home)
{
    const char *argv[] = {MCPLOCAL_BIN, "--home", home, NULL};
    return proc_start(argv, MCPLOCAL_ENV, home);
}

/* SIGTERM and wait; the exit code (the log is printed when it is not 0). */
static int stop(struct proc **pp, const char *what)
{
    if (!*pp)
        return 0;
    proc_signal(*pp, SIGTERM);
    int rc = proc_wait_exit(*pp, 20000);
    if (rc != 0) {
        fprintf(stderr, "%s exited %d; log:\n", what, rc);
        proc_dump(*pp);
    }
    proc_free(*pp);
    *pp = NULL;
    return rc;
}

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    fx = calloc(1, sizeof *fx);
    fx->dir = tmpdir_create("tls-e2e");
    if (testca_make(fx->dir, &fx->ca) < 0)
        return -1;
    fx->db = tmpdir_path(fx->dir, "mcpd.db");
    char *tok = mcpd_create_token(fx->db, "alice");
    if (!tok)
        return -1;
    snprintf(fx->token, sizeof fx->token, "%s", tok);
    free(tok);
    if (start_mcpd() < 0)
        return -1;
    fx->fb = fake_backend_start();
    if (!fx->fb)
        return -1;
    fx->home = make_home(fx->ca.ca, LLM);
    fx->ctl_home = tmpdir_create("tls-e2e-mcpctl");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int ml_rc = stop(&fx->ml, "mcplocal");
    int mcpd_rc = stop(&fx->mcpd, "mcpd");
    fake_backend_stop(fx->fb);
    tmpdir_remove(fx->home);
    tmpdir_remove(fx->ctl_home);
    free(fx->db);
    tmpdir_remove(fx->dir);
    free(fx);
    fx = NULL;
    curl_global_cleanup();
    if (ml_rc != 0 || mcpd_rc != 0) {
        fprintf(stderr, "unclean shutdown: mcplocal %d, mcpd %d\n", ml_rc, mcpd_rc);
        return -1;
    }
    return 0;
}

/* ---- the steps --------------------------------------------------------- */

/* mcplocal registers and holds its control stream over TLS; the Llm is
 * active, as seen by a caller over HTTPS. */
static void test_publish_over_tls(void **state)
{
    (void)state;
    assert_int_equal(strncmp(fx->url, "https://", 8), 0);
    fx->ml = start_mcplocal(fx->home);
    assert_non_null(fx->ml);
    if (proc_wait_for(fx->ml, "stream up", WAIT_MS) != 0) {
        dump_logs();
        fail_msg("mcplocal never got its control stream up over TLS");
    }
    if (wait_status(LLM, "active", WAIT_MS) != 0) {
        dump_logs();
        fail_msg("'" LLM "' never became active");
    }
    struct resp r;
    call(NULL, "/api/v1/llms", NULL, &r);
    if (r.status != 200)
        fail_msg("GET /api/v1/llms: curl %d (%s), status %ld, body %s", r.rc, r.err, r.status,
                 r.body);
    json_t *list = json_loads(r.body, 0, NULL);
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 1);
    json_t *row = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(row, "name")), LLM);
    assert_string_equal(json_string_value(json_object_get(row, "kind")), "virtual");
    assert_string_equal(json_string_value(json_object_get(row, "status")), "active");
    assert_string_equal(json_string_value(json_object_get(row, "owner")), "alice");
    json_decref(list);
    resp_free(&r);
}

/* A streaming chat completion through mcpd over HTTPS carries the
 * backend's tokens in order and ends with [DONE]. */
static void stream_once(int chunks)
{
    struct resp r;
    call(NULL, "/v1/chat/completions",
         "{\"model\":\"" LLM "\",\"stream\":true,"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         &r);
    if (r.rc != CURLE_OK || r.status != 200) {
        dump_logs();
        fail_msg("streaming call: curl %d (%s), status %ld, body %s", r.rc, r.err, r.status,
                 r.body);
    }
    if (!r.ctype || strncmp(r.ctype, "text/event-stream", 17) != 0)
        fail_msg("streaming call: Content-Type %s", r.ctype ? r.ctype : "(none)");
    const char *at = r.body;
    for (int i = 0; i < chunks; i++) {
        char tok[32];
        snprintf(tok, sizeof tok, "\"tok%d\"", i);
        const char *found = strstr(at, tok);
        if (!found)
            fail_msg("token %s missing or out of order in: %s", tok, r.body);
        at = found;
    }
    const char *done = strstr(at, "data: [DONE]");
    if (!done)
        fail_msg("no data: [DONE] after the tokens in: %s", r.body);
    resp_free(&r);
}

static void plain_once(void)
{
    struct resp r;
    call(NULL, "/v1/chat/completions",
         "{\"model\":\"" LLM "\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}", &r);
    if (r.rc != CURLE_OK || r.status != 200) {
        dump_logs();
        fail_msg("plain call: curl %d (%s), status %ld, body %s", r.rc, r.err, r.status, r.body);
    }
    json_t *ans = json_loads(r.body, 0, NULL);
    assert_non_null(ans);
    assert_string_equal(json_string_value(json_object_get(ans, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(ans, "model")), "served-model");
    json_t *msg = json_object_get(json_array_get(json_object_get(ans, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "hello from fake");
    json_decref(ans);
    resp_free(&r);
}

static void test_chat_completions_over_tls(void **state)
{
    (void)state;
    fake_backend_set_stream(fx->fb, 5, 20);
    int before = fake_backend_count(fx->fb, "/v1/chat/completions");
    stream_once(5);
    plain_once();
    assert_int_equal(fake_backend_count(fx->fb, "/v1/chat/completions"), before + 2);
    /* The backend saw the provider's model, not the Llm name. */
    char *body = fake_backend_last_body(fx->fb, "/v1/chat/completions");
    assert_non_null(body);
    json_t *j = json_loads(body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "served-model");
    json_decref(j);
    free(body);
}

static void test_mcpctl_over_tls(void **state)
{
    (void)state;
    struct cli_t_result r;
    cli_t_run(fx->ctl_home, NULL, NULL,
              (const char *[]){"login", "--server", fx->url, "--token", fx->token, "--cacert",
                               fx->ca.ca, NULL},
              &r);
    if (r.code != 0)
        fail_msg("mcpctl login exited %d; stdout '%s', stderr '%s'", r.code, r.out, r.err);
    cli_t_result_free(&r);

    cli_t_run(fx->ctl_home, NULL, NULL, (const char *[]){"get", "llm", NULL}, &r);
    if (r.code != 0)
        fail_msg("mcpctl get llm exited %d; stdout '%s', stderr '%s'", r.code, r.out, r.err);
    /* The header, then one row: NAME KIND STATUS ... */
    char *copy = strdup(r.out);
    char *save = NULL;
    char *header = strtok_r(copy, "\n", &save);
    char *row = strtok_r(NULL, "\n", &save);
    if (!header || strncmp(header, "NAME", 4) != 0 || !row || strtok_r(NULL, "\n", &save))
        fail_msg("mcpctl get llm printed: '%s'", r.out);
    char *fsave = NULL;
    const char *name = strtok_r(row, " ", &fsave);
    const char *kind = strtok_r(NULL, " ", &fsave);
    const char *status = strtok_r(NULL, " ", &fsave);
    if (!name || strcmp(name, LLM) != 0 || !kind || strcmp(kind, "virtual") != 0 || !status ||
        strcmp(status, "active") != 0)
        fail_msg("mcpctl get llm printed: '%s'", r.out);
    free(copy);
    cli_t_result_free(&r);
}

/* Plain HTTP to the TLS port: no HTTP answer (the connection is closed,
 * promptly), and mcpd serves HTTPS as before right after. */
static void test_plain_http_is_refused(void **state)
{
    (void)state;
    char plain_url[64];
    snprintf(plain_url, sizeof plain_url, "http://127.0.0.1:%d", fx->port);
    struct resp r;
    call(plain_url, "/api/v1/llms", NULL, &r);
    if (r.rc == CURLE_OK || r.status != 0)
        fail_msg("plain HTTP got an answer: curl %d, status %ld, body '%s'", r.rc, r.status,
                 r.body);
    if (r.rc == CURLE_OPERATION_TIMEDOUT)
        fail_msg("plain HTTP: mcpd neither answered nor closed within %d ms", WAIT_MS);
    print_message("plain HTTP to the TLS port: curl %d (%s)\n", r.rc, r.err);
    resp_free(&r);

    /* The same on a bare socket: whatever comes back is no HTTP response. */
    struct raw_conn c;
    assert_int_equal(raw_connect(&c, fx->port, 0), 0);
    const char req[] = "GET /api/v1/llms HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(raw_send(&c, req, sizeof req - 1), 0);
    struct raw_resp rr;
    enum raw_result got = raw_read_response(&c, &rr, 5000);
    if (got == RAW_OK) {
        fail_msg("plain HTTP on a bare socket got HTTP %d: %s", rr.status, rr.head);
    }
    if (got == RAW_TIMEOUT)
        fail_msg("plain HTTP on a bare socket: mcpd did not close within 5 s");
    raw_close(&c);

    /* HTTPS callers are not disturbed. */
    stream_once(5);
    plain_once();
    assert_true(proc_wait_exit(fx->mcpd, 0) == -1); /* still running */
}

/* An mcplocal trusting an unrelated CA: every register fails at the TLS
 * handshake, reported in one line naming mcpd's URL and the CA file;
 * nothing is published, and mcpd, the first mcplocal and callers carry
 * on. */
static void test_wrong_ca_is_refused(void **state)
{
    (void)state;
    char *home = make_home(fx->ca.other_ca, "intruder");
    struct proc *p = start_mcplocal(home);
    assert_non_null(p);
    char want[PATH_MAX + 256];
    snprintf(want, sizeof want,
             "register failed: TLS with '%s' failed (trusting caFile '%s' and the system's CAs): ",
             fx->url, fx->ca.other_ca);
    int waited = proc_wait_for_nth(p, want, 2, WAIT_MS);
    char *log = proc_output(p);
    if (waited != 0) {
        fprintf(stderr, "---- mcplocal (other CA) log ----\n%s\n", log);
        free(log);
        fail_msg("no (repeated) line '%s' in the log", want);
    }
    /* The whole reason is on that one line and speaks of the certificate. */
    const char *line = strstr(log, want);
    const char *eol = strchr(line, '\n');
    assert_non_null(eol);
    const char *cert = strstr(line, "certificate");
    if (!cert || cert > eol)
        fail_msg("the line does not say the certificate was the problem: %.*s", (int)(eol - line),
                 line);
    print_message("%.*s\n", (int)(eol - line), line);
    assert_null(strstr(log, "stream up"));
    assert_null(strstr(log, "published"));
    free(log);

    /* mcpd serves on: nothing of the intruder, the Llm still active, the
     * first mcplocal's stream still up, callers served. */
    char *s = llm_status("intruder");
    assert_null(s);
    assert_int_equal(wait_status(LLM, "active", 1000), 0);
    stream_once(5);
    plain_once();
    assert_true(proc_wait_exit(fx->mcpd, 0) == -1);
    char *ml_log = proc_output(fx->ml);
    if (strstr(ml_log, "stream down"))
        fail_msg("the first mcplocal lost its stream: %s", ml_log);
    free(ml_log);

    assert_int_equal(stop(&p, "mcplocal (other CA)"), 0);
    tmpdir_remove(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_over_tls),
        cmocka_unit_test(test_chat_completions_over_tls),
        cmocka_unit_test(test_mcpctl_over_tls),
        cmocka_unit_test(test_plain_http_is_refused),
        cmocka_unit_test(test_wrong_ca_is_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
