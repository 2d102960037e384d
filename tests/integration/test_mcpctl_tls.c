/*
 * mcpctl against an HTTPS server whose certificate a private CA signed: a
 * tiny libmicrohttpd server in this process (TLS, port 0) answering
 * GET /api/v1/llms with []. `mcpctl login --cacert` saves the CA, later
 * commands trust it, MCPCTL_CACERT overrides it, and every way of not
 * trusting the server's CA fails with one clear line naming the URL.
 */
#include "cli_support.h"
#include "testca.h"
#include "tmpdir.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define TOKEN "mcp_tls_test_token"

static char *dir;
static struct testca ca;
static char *key_pem, *cert_pem; /* MHD keeps pointers to these */
static struct MHD_Daemon *server;
static char url[64];      /* https://127.0.0.1:PORT */
static char host_url[64]; /* https://localhost:PORT */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int requests;        /* requests that got through the handshake */
static char last_auth[256]; /* their last Authorization header */

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url_path,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    pthread_mutex_lock(&mu);
    requests++;
    snprintf(last_auth, sizeof last_auth, "%s", auth ? auth : "");
    pthread_mutex_unlock(&mu);
    bool list = strcmp(method, "GET") == 0 && strcmp(url_path, "/api/v1/llms") == 0;
    const char *body = list ? "[]" : "{\"error\":\"not found\"}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, list ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND, r);
    MHD_destroy_response(r);
    return ret;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    char chunk[1024];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return text;
}

static int setup(void **state)
{
    (void)state;
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        fprintf(stderr, "libmicrohttpd was built without TLS\n");
        return -1;
    }
    dir = tmpdir_create("mcpctl-tls");
    if (testca_make(dir, &ca) < 0)
        return -1;
    key_pem = slurp(ca.key);
    cert_pem = slurp(ca.cert);
    if (!key_pem || !cert_pem)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL, NULL, handle,
                              NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_HTTPS_MEM_KEY, key_pem,
                              MHD_OPTION_HTTPS_MEM_CERT, cert_pem, MHD_OPTION_END);
    if (!server) {
        fprintf(stderr, "cannot start the HTTPS server\n");
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(server, MHD_DAEMON_INFO_BIND_PORT);
    if (!di || di->port == 0)
        return -1;
    snprintf(url, sizeof url, "https://127.0.0.1:%u", (unsigned)di->port);
    snprintf(host_url, sizeof host_url, "https://localhost:%u", (unsigned)di->port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (server)
        MHD_stop_daemon(server);
    free(key_pem);
    free(cert_pem);
    tmpdir_remove(dir);
    return 0;
}

static int request_count(void)
{
    pthread_mutex_lock(&mu);
    int n = requests;
    pthread_mutex_unlock(&mu);
    return n;
}

/* A fresh mcpctl home (caller frees with tmpdir_remove()) holding a
 * credentials file for the server, with caFile when cafile is not NULL;
 * no file at all when with_file is false. */
static char *home_with(bool with_file, const char *server_url, const char *cafile)
{
    char *home = tmpdir_create("mcpctl-home");
    if (with_file) {
        json_t *j = json_pack("{s:s,s:s}", "mcpdUrl", server_url, "token", TOKEN);
        if (cafile)
            json_object_set_new(j, "caFile", json_string(cafile));
        char *text = json_dumps(j, 0);
        char *path = tmpdir_path(home, "credentials");
        assert_int_equal(cli_t_write_file(path, text), 0);
        free(path);
        free(text);
        json_decref(j);
    }
    return home;
}

/* The caFile saved in home's credentials file, as a new string; NULL when
 * there is no file or no caFile. */
static char *saved_cafile(const char *home)
{
    char *path = tmpdir_path(home, "credentials");
    json_t *j = json_load_file(path, 0, NULL);
    free(path);
    const char *s = json_string_value(json_object_get(j, "caFile"));
    char *copy = s ? strdup(s) : NULL;
    json_decref(j);
    return copy;
}

/* Checks that home's credentials file holds caFile for path (absolute, its
 * directory resolved). */
static void expect_saved(const char *home, const char *path)
{
    char *saved = saved_cafile(home);
    char *want = realpath(path, NULL);
    assert_non_null(want);
    if (!saved || strcmp(saved, want) != 0)
        fail_msg("saved caFile '%s', want '%s'", saved ? saved : "(none)", want);
    free(want);
    free(saved);
}

static bool credentials_exist(const char *home)
{
    char *path = tmpdir_path(home, "credentials");
    bool exists = access(path, F_OK) == 0;
    free(path);
    return exists;
}

/* `mcpctl get llm` against an empty list: exit 0, nothing on stdout. */
static void expect_get_works(const char *home, const char *const env[])
{
    struct cli_t_result r;
    cli_t_run(home, env, NULL, (const char *[]){"get", "llm", NULL}, &r);
    if (r.code != 0)
        fail_msg("get llm exited %d: %s", r.code, r.err);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "no Llms found\n");
    cli_t_result_free(&r);
}

/* A failure: the exit code, one "mcpctl: " line holding every needle, and
 * nothing on stdout. */
static void expect_failure(const struct cli_t_result *r, int code, const char *const needles[])
{
    bool ok = r->code == code && strncmp(r->err, "mcpctl: ", 8) == 0 &&
              strchr(r->err, '\n') == r->err + strlen(r->err) - 1 && r->out[0] == '\0';
    for (size_t i = 0; ok && needles[i]; i++)
        ok = strstr(r->err, needles[i]) != NULL;
    if (!ok)
        fail_msg("exit %d (want %d), stdout '%s', stderr '%s'", r->code, code, r->out, r->err);
}

static void test_login_with_cacert_then_get(void **state)
{
    (void)state;
    char *home = home_with(false, NULL, NULL);
    int before = request_count();
    struct cli_t_result r;
    cli_t_run(home, NULL, NULL,
              (const char *[]){"login", "--server", url, "--token", TOKEN, "--cacert", ca.ca, NULL},
              &r);
    if (r.code != 0)
        fail_msg("login exited %d: %s", r.code, r.err);
    assert_non_null(strstr(r.out, "trusting the CA in"));
    cli_t_result_free(&r);
    assert_int_equal(request_count(), before + 1);
    expect_saved(home, ca.ca);

    expect_get_works(home, NULL);
    pthread_mutex_lock(&mu);
    assert_string_equal(last_auth, "Bearer " TOKEN);
    pthread_mutex_unlock(&mu);

    /* A login again without --cacert keeps the CA, and its check uses it. */
    cli_t_run(home, NULL, NULL, (const char *[]){"login", "--server", url, "--token", TOKEN, NULL},
              &r);
    if (r.code != 0)
        fail_msg("second login exited %d: %s", r.code, r.err);
    cli_t_result_free(&r);
    expect_saved(home, ca.ca);
    expect_get_works(home, NULL);
    tmpdir_remove(home);
}

static void test_login_saves_an_absolute_path(void **state)
{
    (void)state;
    char *home = home_with(false, NULL, NULL);
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0); /* mcpctl starts here too */
    struct cli_t_result r;
    cli_t_run(
        home, NULL, NULL,
        (const char *[]){"login", "--server", url, "--token", TOKEN, "--cacert", "./ca.pem", NULL},
        &r);
    assert_int_equal(chdir(cwd), 0);
    if (r.code != 0)
        fail_msg("login exited %d: %s", r.code, r.err);
    cli_t_result_free(&r);
    expect_saved(home, ca.ca);
    expect_get_works(home, NULL); /* from another working directory */
    tmpdir_remove(home);
}

static void test_login_with_the_wrong_ca_saves_nothing(void **state)
{
    (void)state;
    char *home = home_with(false, NULL, NULL);
    struct cli_t_result r;
    cli_t_run(
        home, NULL, NULL,
        (const char *[]){"login", "--server", url, "--token", TOKEN, "--cacert", ca.other_ca, NULL},
        &r);
    char want[128];
    snprintf(want, sizeof want, "cannot verify the TLS certificate of '%s': ", url);
    expect_failure(&r, 3, (const char *[]){want, ca.other_ca, "from --cacert", NULL});
    cli_t_result_free(&r);
    assert_false(credentials_exist(home));
    tmpdir_remove(home);
}

static void test_login_refuses_bad_ca_files(void **state)
{
    (void)state;
    char *home = home_with(false, NULL, NULL);
    tmpdir_write(dir, "not-a-cert.txt", "hello\n", 0644);
    char *not_pem = tmpdir_path(dir, "not-a-cert.txt");
    char *missing = tmpdir_path(dir, "missing.pem");
    const struct {
        const char *file, *needle;
    } cases[] = {
        {missing, "cannot read the CA file"},
        {not_pem, "holds no PEM certificate"},
        {dir, "is a directory"},
        {"/no/such/dir/ca.pem", "cannot read the CA file '/no/such/dir/ca.pem'"},
    };
    int before = request_count();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cli_t_result r;
        cli_t_run(home, NULL, NULL,
                  (const char *[]){"login", "--server", url, "--token", TOKEN, "--cacert",
                                   cases[i].file, NULL},
                  &r);
        expect_failure(&r, 2, (const char *[]){cases[i].needle, NULL});
        cli_t_result_free(&r);
        assert_false(credentials_exist(home));
    }
    assert_int_equal(request_count(), before); /* refused before calling the server */
    free(not_pem);
    free(missing);
    tmpdir_remove(home);
}

static void test_login_no_verify_saves_the_ca(void **state)
{
    (void)state;
    char *home = home_with(false, NULL, NULL);
    int before = request_count();
    struct cli_t_result r;
    cli_t_run(home, NULL, NULL,
              (const char *[]){"login", "--server", url, "--token", TOKEN, "--cacert", ca.ca,
                               "--no-verify", NULL},
              &r);
    if (r.code != 0)
        fail_msg("login exited %d: %s", r.code, r.err);
    cli_t_result_free(&r);
    assert_int_equal(request_count(), before);
    expect_saved(home, ca.ca);
    expect_get_works(home, NULL);
    tmpdir_remove(home);
}

static void test_without_cafile_the_certificate_is_refused(void **state)
{
    (void)state;
    char *home = home_with(true, url, NULL);
    struct cli_t_result r;
    cli_t_run(home, NULL, NULL, (const char *[]){"get", "llm", NULL}, &r);
    char want[128];
    snprintf(want, sizeof want, "cannot verify the TLS certificate of '%s': ", url);
    expect_failure(&r, 3,
                   (const char *[]){want, "certificate",
                                    "; pass --cacert to mcpctl login if the server uses a "
                                    "private CA",
                                    NULL});
    cli_t_result_free(&r);

    /* So is a login without --cacert. */
    char *fresh = home_with(false, NULL, NULL);
    cli_t_run(fresh, NULL, NULL, (const char *[]){"login", "--server", url, "--token", TOKEN, NULL},
              &r);
    expect_failure(&r, 3, (const char *[]){want, "pass --cacert to mcpctl login", NULL});
    cli_t_result_free(&r);
    assert_false(credentials_exist(fresh));
    tmpdir_remove(fresh);
    tmpdir_remove(home);
}

static void test_other_ca_in_the_file_is_refused(void **state)
{
    (void)state;
    char *home = home_with(true, url, ca.other_ca);
    struct cli_t_result r;
    cli_t_run(home, NULL, NULL, (const char *[]){"get", "llm", NULL}, &r);
    char want[128];
    snprintf(want, sizeof want, "cannot verify the TLS certificate of '%s': ", url);
    expect_failure(&r, 3, (const char *[]){want, ca.other_ca, "from the credentials file", NULL});
    cli_t_result_free(&r);
    tmpdir_remove(home);
}

static void test_env_overrides_the_file(void **state)
{
    (void)state;
    char ca_kv[PATH_MAX + 32], other_kv[PATH_MAX + 32];
    snprintf(ca_kv, sizeof ca_kv, "MCPCTL_CACERT=%s", ca.ca);
    snprintf(other_kv, sizeof other_kv, "MCPCTL_CACERT=%s", ca.other_ca);

    /* MCPCTL_CACERT alone, or over the wrong caFile, trusts the CA. */
    char *plain = home_with(true, url, NULL);
    expect_get_works(plain, (const char *[]){ca_kv, NULL});
    char *wrong = home_with(true, url, ca.other_ca);
    expect_get_works(wrong, (const char *[]){ca_kv, NULL});

    /* The wrong CA in MCPCTL_CACERT wins over a right caFile. */
    char *right = home_with(true, url, ca.ca);
    expect_get_works(right, NULL);
    struct cli_t_result r;
    cli_t_run(right, (const char *[]){other_kv, NULL}, NULL, (const char *[]){"get", "llm", NULL},
              &r);
    expect_failure(&r, 3,
                   (const char *[]){"cannot verify the TLS certificate", "MCPCTL_CACERT", NULL});
    cli_t_result_free(&r);

    /* With the URL and token from the environment, the caFile still
     * applies; a bad MCPCTL_CACERT is a configuration error. */
    char url_kv[96];
    snprintf(url_kv, sizeof url_kv, "MCPCTL_URL=%s", url);
    expect_get_works(right, (const char *[]){url_kv, "MCPCTL_TOKEN=" TOKEN, NULL});
    cli_t_run(right, (const char *[]){"MCPCTL_CACERT=/no/such/ca.pem", NULL}, NULL,
              (const char *[]){"get", "llm", NULL}, &r);
    expect_failure(&r, 2,
                   (const char *[]){"cannot read the CA file '/no/such/ca.pem' from MCPCTL_CACERT",
                                    "fix or unset MCPCTL_CACERT", NULL});
    cli_t_result_free(&r);
    tmpdir_remove(plain);
    tmpdir_remove(wrong);
    tmpdir_remove(right);
}

static void test_certificate_names(void **state)
{
    (void)state;
    /* The certificate is for localhost too. */
    char *home = home_with(true, host_url, ca.ca);
    expect_get_works(home, NULL);
    tmpdir_remove(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_login_with_cacert_then_get),
        cmocka_unit_test(test_login_saves_an_absolute_path),
        cmocka_unit_test(test_login_with_the_wrong_ca_saves_nothing),
        cmocka_unit_test(test_login_refuses_bad_ca_files),
        cmocka_unit_test(test_login_no_verify_saves_the_ca),
        cmocka_unit_test(test_without_cafile_the_certificate_is_refused),
        cmocka_unit_test(test_other_ca_in_the_file_is_refused),
        cmocka_unit_test(test_env_overrides_the_file),
        cmocka_unit_test(test_certificate_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
