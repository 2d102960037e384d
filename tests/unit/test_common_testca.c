/* The test CA helper: the files it writes, and that openssl accepts the
 * server certificate under ca.pem (for each name it claims) and rejects it
 * under other-ca.pem. */
#include "proc.h"
#include "testca.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char *dir;
static struct testca ca;
static char openssl[PATH_MAX];

/* Finds the openssl program on PATH, as testca_make() does. */
static int find_openssl(void)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path && *path ? path : "/usr/bin:/bin");
    char *save = NULL;
    int rc = -1;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(openssl, sizeof openssl, "%s/openssl", d);
        if (access(openssl, X_OK) == 0) {
            rc = 0;
            break;
        }
    }
    free(copy);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    if (find_openssl() < 0) {
        fprintf(stderr, "openssl is not on PATH (scripts/install-deps installs it)\n");
        return -1;
    }
    dir = tmpdir_create("testca");
    return testca_make(dir, &ca);
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(dir);
    return 0;
}

/* Runs openssl with args (NULL-terminated, without argv[0]); returns its
 * exit code, with its stdout in *out when out is not NULL. */
static int run(const char *const args[], char **out)
{
    const char *argv[32] = {openssl};
    size_t n = 1;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char *o = NULL, *e = NULL;
    int rc = proc_run(argv, NULL, NULL, &o, &e, 30000);
    if (out)
        *out = o;
    else
        free(o);
    free(e);
    return rc;
}

static void test_files_exist(void **state)
{
    (void)state;
    const struct {
        const char *path, *name;
        mode_t mode; /* 0: any */
    } files[] = {
        {ca.ca, "ca.pem", 0},
        {ca.cert, "server.pem", 0},
        {ca.key, "server.key", 0600},
        {ca.other_ca, "other-ca.pem", 0},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *want = tmpdir_path(dir, files[i].name);
        assert_string_equal(files[i].path, want);
        free(want);
        struct stat st;
        if (stat(files[i].path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
            fail_msg("'%s' is missing or empty", files[i].path);
        if (files[i].mode && (st.st_mode & 0777) != files[i].mode)
            fail_msg("'%s' has mode %o", files[i].path, (unsigned)(st.st_mode & 0777));
    }
}

static void test_verify(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        int trust_other;         /* 1: -CAfile other-ca.pem */
        const char *opt, *value; /* an extra check, or NULL */
        int ok;
    } cases[] = {
        {"signed by ca.pem", 0, NULL, NULL, 1},
        {"a TLS server certificate", 0, "-purpose", "sslserver", 1},
        {"for 127.0.0.1", 0, "-verify_ip", "127.0.0.1", 1},
        {"for ::1", 0, "-verify_ip", "::1", 1},
        {"for localhost", 0, "-verify_hostname", "localhost", 1},
        {"not for another name", 0, "-verify_hostname", "example.com", 0},
        {"not for another address", 0, "-verify_ip", "127.0.0.2", 0},
        {"not under other-ca.pem", 1, NULL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[8] = {"verify", "-CAfile", cases[i].trust_other ? ca.other_ca : ca.ca};
        size_t n = 3;
        if (cases[i].opt) {
            args[n++] = cases[i].opt;
            args[n++] = cases[i].value;
        }
        args[n++] = ca.cert;
        args[n] = NULL;
        int rc = run(args, NULL);
        if ((rc == 0) != cases[i].ok)
            fail_msg("%s: openssl verify exited %d", cases[i].what, rc);
    }
}

static void test_key_matches_certificate(void **state)
{
    (void)state;
    char *from_cert = NULL, *from_key = NULL;
    assert_int_equal(
        run((const char *[]){"x509", "-in", ca.cert, "-noout", "-pubkey", NULL}, &from_cert), 0);
    assert_int_equal(run((const char *[]){"pkey", "-in", ca.key, "-pubout", NULL}, &from_key), 0);
    assert_non_null(strstr(from_cert, "BEGIN PUBLIC KEY"));
    assert_string_equal(from_cert, from_key);
    free(from_cert);
    free(from_key);
}

static void test_missing_directory_fails(void **state)
{
    (void)state;
    struct testca other;
    char *missing = tmpdir_path(dir, "no/such/dir");
    assert_int_equal(testca_make(missing, &other), -1);
    free(missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files_exist),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_key_matches_certificate),
        cmocka_unit_test(test_missing_directory_fails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
