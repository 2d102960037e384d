/*
 * --version on mcpd, mcplocal and mcpctl: "PROGRAM VERSION" on stdout,
 * nothing on stderr, exit 0. VERSION is the CMake project's.
 */
#include "proc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void check_version(const char *bin, const char *name)
{
    const char *argv[] = {bin, "--version", NULL};
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, NULL, NULL, &out, &err, 10000);
    char want[64];
    snprintf(want, sizeof want, "%s %s\n", name, MCP_VERSION);
    if (rc != 0 || !out || strcmp(out, want) != 0 || !err || err[0])
        fail_msg("%s --version: exit %d, stdout '%s', stderr '%s' (want '%s')", name, rc,
                 out ? out : "(none)", err ? err : "(none)", want);
    free(out);
    free(err);
}

static void test_mcpd_version(void **state)
{
    (void)state;
    check_version(MCPD_BIN, "mcpd");
}

static void test_mcplocal_version(void **state)
{
    (void)state;
    check_version(MCPLOCAL_BIN, "mcplocal");
}

static void test_mcpctl_version(void **state)
{
    (void)state;
    check_version(MCPCTL_BIN, "mcpctl");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mcpd_version),
        cmocka_unit_test(test_mcplocal_version),
        cmocka_unit_test(test_mcpctl_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
