/* mcplocal against the fake mcpd over HTTPS: the CA named by caFile in the
 * credentials is trusted (besides the system's), every call goes over TLS
 * (register, the control stream, heartbeats, results), and a certificate
 * that does not verify is reported in one line naming the URL, until a
 * credentials file with the right CA is written. */
#include "fake_backend.h"
#include "fake_mcpd.h"
#include "proc.h"
#include "testca.h"
#include "tmpdir.h"

#include <jansson.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS 10000

struct fx {
    char *dir;
    struct testca ca;
    struct fake_mcpd *fm;
    struct fake_backend *fb;
    struct proc *p;
};

static void write_creds(struct fx *x, const char *ca_file)
{
    char text[PATH_MAX + 256];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"t\", \"caFile\": \"%s\"}",
             fake_mcpd_url(x->fm), ca_file);
    tmpdir_write(x->dir, "credentials", text, 0600);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    *state = x;
    x->dir = tmpdir_create("mcplocal-tls");
    if (testca_make(x->dir, &x->ca) < 0)
        return -1;
    x->fm = fake_mcpd_start_tls(x->ca.cert, x->ca.key);
    x->fb = fake_backend_start();
    if (!x->fm || !x->fb)
        return -1;
    fake_mcpd_set_intervals(x->fm, 100, 20000);
    char text[1024];
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"local\", \"type\": \"openai\", "
             "\"model\": \"m\", \"url\": \"%s\", \"publish\": true}]}}",
             fake_backend_url(x->fb));
    tmpdir_write(x->dir, "config.json", text, 0644);
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    assert_int_equal(proc_stop(x->p, WAIT_MS), 0);
    fake_mcpd_stop(x->fm);
    fake_backend_stop(x->fb);
    tmpdir_remove(x->dir);
    free(x);
    return 0;
}

static struct proc *start(struct fx *x)
{
    const char *argv[] = {MCPLOCAL_BIN, "--home", x->dir, "--log-level", "debug", NULL};
    const char *env[] = {"MCPLOCAL_BACKOFF_MIN_MS=20", "MCPLOCAL_BACKOFF_MAX_MS=200", NULL};
    struct proc *p = proc_start(argv, env, x->dir);
    assert_non_null(p);
    return p;
}

static void test_trusted_ca(void **state)
{
    struct fx *x = *state;
    assert_int_equal(strncmp(fake_mcpd_url(x->fm), "https://", 8), 0);
    write_creds(x, x->ca.ca);
    x->p = start(x);
    if (fake_mcpd_wait_stream(x->fm, 1, WAIT_MS) != 0)
        proc_dump(x->p);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
    assert_int_equal(fake_mcpd_wait_count(x->fm, "/api/v1/llms/_provider-heartbeat", 2, WAIT_MS),
                     0);
    /* A task and its streamed result over TLS. */
    fake_backend_set_stream(x->fb, 3, 10);
    assert_int_equal(
        fake_mcpd_push_infer(x->fm, "t1", "local", true, "{\"stream\":true,\"messages\":[]}"), 0);
    char path[256];
    fake_mcpd_result_path("t1", path, sizeof path);
    assert_int_equal(fake_mcpd_wait_count(x->fm, path, 1, WAIT_MS), 0);
    assert_int_equal(fake_mcpd_wait_complete(x->fm, path, WAIT_MS), 0);
    struct fake_mcpd_req *r = fake_mcpd_get(x->fm, path, -1);
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->body, "data: [DONE]"));
    fake_mcpd_req_free(r);
}

static void test_bad_certificate(void **state)
{
    struct fx *x = *state;
    write_creds(x, x->ca.other_ca);
    x->p = start(x);
    char want[PATH_MAX + 256];
    snprintf(want, sizeof want, "register failed: TLS with '%s' failed (trusting caFile '%s'",
             fake_mcpd_url(x->fm), x->ca.other_ca);
    proc_expect(x->p, want, 2, WAIT_MS);
    char *log = proc_output(x->p);
    const char *line = strstr(log, want);
    const char *eol = strchr(line, '\n');
    if (!strstr(line, "certificate") || (eol && strstr(line, "certificate") > eol))
        fail_msg("no word of the certificate in: %s", line);
    free(log);
    assert_int_equal(fake_mcpd_count(x->fm, "/"), 0); /* nothing got through */
    /* Without a caFile, the system's CAs do not know this one either. */
    char text[1024];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"t\"}", fake_mcpd_url(x->fm));
    tmpdir_write(x->dir, "credentials", text, 0600);
    snprintf(want, sizeof want, "TLS with '%s' failed (trusting the system's CAs)",
             fake_mcpd_url(x->fm));
    proc_expect(x->p, want, 1, WAIT_MS);
    /* The right CA on disk: picked up, connected. */
    write_creds(x, x->ca.ca);
    assert_int_equal(fake_mcpd_wait_stream(x->fm, 1, WAIT_MS), 0);
    proc_expect(x->p, "stream up", 1, WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trusted_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_certificate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
