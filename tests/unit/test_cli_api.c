/* Unit tests for cli/api.c: how each failure is worded and classed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "api.h"

#include <curl/curl.h>
#include <errno.h>
#include <string.h>

static struct api *a;

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    a = api_new("http://mcpd.example:8080", "tok", "MCPCTL_TOKEN");
    return a ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    api_free(a);
    api_free(NULL);
    curl_global_cleanup();
    return 0;
}

static void check(const struct cli_error *err, int code, const char *needle)
{
    if (err->code != code || !strstr(err->msg, needle) || strchr(err->msg, '\n'))
        fail_msg("got %d '%s', want %d with '%s'", err->code, err->msg, code, needle);
}

static const struct {
    long status;
    const char *body;
    long retry;
    const char *llm;
    int code;
    const char *needle;
} status_cases[] = {
    {401, "{\"error\":\"missing or unknown token\"}", -1, NULL, CLI_EXIT_AUTH,
     "token rejected by mcpd at 'http://mcpd.example:8080' (401): the token from MCPCTL_TOKEN"},
    {401, NULL, -1, "m", CLI_EXIT_AUTH, "mcpctl login --server http://mcpd.example:8080"},
    {403, "{\"error\":\"nope\"}", -1, "m", CLI_EXIT_AUTH, "(403: nope)"},
    {404, "{\"error\":\"no such llm\"}", -1, "qwen", CLI_EXIT_NOT_FOUND,
     "no Llm named 'qwen'; run 'mcpctl get llm'"},
    {404, NULL, -1, NULL, CLI_EXIT_NOT_FOUND, "points at mcpd"},
    {503, "{\"error\":\"publisher offline\"}", 5, "qwen", CLI_EXIT_UNAVAILABLE,
     "Llm 'qwen' is unavailable (503): publisher offline; retry in 5 s"},
    {503, "<html>busy</html>", -1, "qwen", CLI_EXIT_UNAVAILABLE,
     "Llm 'qwen' is unavailable (503): its publisher is offline; retry later"},
    {503, NULL, 30, NULL, CLI_EXIT_UNAVAILABLE, "retry in 30 s"},
    {502, "{\"error\":\"backend exploded\"}", -1, "qwen", CLI_EXIT_INFER,
     "Llm 'qwen' failed (502): backend exploded"},
    {504, "{\"error\":\"inference timed out\"}", -1, "qwen", CLI_EXIT_INFER,
     "Llm 'qwen' did not answer in time (504: inference timed out)"},
    {400, "{\"error\":\"messages must be a non-empty array\"}", -1, "qwen", CLI_EXIT_ERROR,
     "mcpd refused the request (400: messages must be a non-empty array)"},
    {500, "{\"error\":{\"message\":\"db locked\",\"type\":\"server_error\"}}", -1, NULL,
     CLI_EXIT_ERROR, "answered 500: db locked"},
    {418, "", -1, NULL, CLI_EXIT_ERROR, "answered 418"},
};

static void test_status_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof status_cases / sizeof status_cases[0]; i++) {
        struct cli_error err = {0};
        const char *b = status_cases[i].body;
        assert_int_equal(api_status_error(a, status_cases[i].status, b, b ? strlen(b) : 0,
                                          status_cases[i].retry, status_cases[i].llm, &err),
                         -1);
        check(&err, status_cases[i].code, status_cases[i].needle);
    }
}

static const struct {
    int curl_code;
    long os_errno;
    bool got_response;
    int code;
    const char *needle;
} transport_cases[] = {
    {CURLE_COULDNT_CONNECT, ECONNREFUSED, false, CLI_EXIT_UNREACHABLE,
     "cannot reach mcpd at 'http://mcpd.example:8080': connection refused; check the server "
     "URL and that mcpd is running"},
    {CURLE_COULDNT_CONNECT, EHOSTUNREACH, false, CLI_EXIT_UNREACHABLE, "host unreachable"},
    {CURLE_COULDNT_RESOLVE_HOST, 0, false, CLI_EXIT_UNREACHABLE, "host not found"},
    {CURLE_OPERATION_TIMEDOUT, 0, false, CLI_EXIT_UNREACHABLE, "timed out"},
    {CURLE_OPERATION_TIMEDOUT, 0, true, CLI_EXIT_UNREACHABLE, "did not answer in time"},
    {CURLE_SSL_CONNECT_ERROR, 0, false, CLI_EXIT_UNREACHABLE, "TLS handshake failed"},
    {CURLE_PEER_FAILED_VERIFICATION, 0, false, CLI_EXIT_UNREACHABLE, "TLS certificate"},
    {CURLE_GOT_NOTHING, 0, false, CLI_EXIT_UNREACHABLE, "closed the connection"},
    {CURLE_RECV_ERROR, 0, true, CLI_EXIT_UNREACHABLE, "lost the connection to mcpd"},
    {CURLE_PARTIAL_FILE, 0, true, CLI_EXIT_UNREACHABLE, "during the answer"},
    {CURLE_UNSUPPORTED_PROTOCOL, 0, false, CLI_EXIT_USAGE, "invalid server URL"},
    {CURLE_OUT_OF_MEMORY, 0, false, CLI_EXIT_ERROR, "out of memory"},
    {CURLE_FTP_WEIRD_PASV_REPLY, 0, false, CLI_EXIT_UNREACHABLE, "network error"},
};

static void test_transport_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof transport_cases / sizeof transport_cases[0]; i++) {
        struct cli_error err = {0};
        assert_int_equal(api_transport_error(a, transport_cases[i].curl_code,
                                             transport_cases[i].os_errno, NULL,
                                             transport_cases[i].got_response, &err),
                         -1);
        check(&err, transport_cases[i].code, transport_cases[i].needle);
        /* No libcurl wording leaks out. */
        assert_null(strstr(err.msg, "curl"));
        assert_null(strstr(err.msg, "CURLE"));
    }
}

/* TLS failures quote libcurl's reason (what was wrong with the certificate)
 * and name the URL and, when one is set, the CA file and where it came
 * from. */
static void test_tls_errors(void **state)
{
    (void)state;
    const char *reason = "SSL certificate problem: unable to get local issuer certificate\n";
    struct api *t = api_new("https://127.0.0.1:8443", "tok", "MCPCTL_TOKEN");
    assert_non_null(t);
    struct cli_error err = {0};
    assert_int_equal(api_transport_error(t, CURLE_PEER_FAILED_VERIFICATION, 0, reason, false, &err),
                     -1);
    check(&err, CLI_EXIT_UNREACHABLE,
          "cannot verify the TLS certificate of 'https://127.0.0.1:8443': SSL certificate "
          "problem: unable to get local issuer certificate; pass --cacert to mcpctl login if the "
          "server uses a private CA");

    assert_int_equal(api_set_cafile(t, "/etc/mcp/ca.pem", "MCPCTL_CACERT"), 0);
    assert_int_equal(api_transport_error(t, CURLE_PEER_FAILED_VERIFICATION, 0, reason, false, &err),
                     -1);
    check(&err, CLI_EXIT_UNREACHABLE,
          "check that the CA file '/etc/mcp/ca.pem' from MCPCTL_CACERT holds the CA that "
          "signed mcpd's certificate");
    assert_null(strstr(err.msg, "pass --cacert"));

    /* No reason from libcurl: still one plain line. */
    assert_int_equal(api_transport_error(t, CURLE_PEER_FAILED_VERIFICATION, 0, "", false, &err),
                     -1);
    check(&err, CLI_EXIT_UNREACHABLE, "': the certificate was not accepted; check that");

    assert_int_equal(api_transport_error(t, CURLE_SSL_CACERT_BADFILE, 0,
                                         "error setting certificate file", false, &err),
                     -1);
    check(&err, CLI_EXIT_USAGE,
          "cannot use the CA file '/etc/mcp/ca.pem' for "
          "'https://127.0.0.1:8443': error setting certificate file");

    assert_int_equal(api_transport_error(t, CURLE_SSL_CONNECT_ERROR, 0,
                                         "error:0A00010B:SSL routines::wrong version number", false,
                                         &err),
                     -1);
    check(&err, CLI_EXIT_UNREACHABLE,
          "TLS handshake failed (error:0A00010B:SSL routines::wrong version number); check the "
          "server URL");

    /* Back to the system's CAs only. */
    assert_int_equal(api_set_cafile(t, NULL, NULL), 0);
    assert_int_equal(api_transport_error(t, CURLE_PEER_FAILED_VERIFICATION, 0, reason, false, &err),
                     -1);
    check(&err, CLI_EXIT_UNREACHABLE, "pass --cacert to mcpctl login");
    api_free(t);
}

static void test_error_reason(void **state)
{
    (void)state;
    char out[320];
    const char *nl_body = "{\"error\":\"a\\nb\"}";
    api_error_reason(nl_body, strlen(nl_body), out, sizeof out);
    assert_string_equal(out, "a b");
    api_error_reason("{\"error\":{\"message\":\"m\"}}", 25, out, sizeof out);
    assert_string_equal(out, "m");
    api_error_reason("{\"error\":5}", 11, out, sizeof out);
    assert_string_equal(out, "");
    api_error_reason("oops", 4, out, sizeof out);
    assert_string_equal(out, "");
    api_error_reason(NULL, 0, out, sizeof out);
    assert_string_equal(out, "");
    char long_body[2048];
    strcpy(long_body, "{\"error\":\"");
    memset(long_body + 10, 'x', 1000);
    strcpy(long_body + 1010, "\"}");
    api_error_reason(long_body, strlen(long_body), out, sizeof out);
    assert_true(strlen(out) <= 300);
    assert_string_equal(out + strlen(out) - 3, "...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_errors),
        cmocka_unit_test(test_transport_errors),
        cmocka_unit_test(test_tls_errors),
        cmocka_unit_test(test_error_reason),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
