/* mcpd's flags: defaults, environment, flags winning, refusals naming the
 * flag, --version. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_defaults_env_and_flags(void **state)
{
    (void)state;
    struct server_config c;
    config_defaults(&c);
    assert_string_equal(c.listen_addr, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.db_path, MCPD_DEFAULT_DB);
    assert_int_equal(c.heartbeat_timeout_ms, 90000);
    assert_int_equal(c.gc_interval_ms, 60000);
    assert_int_equal(c.inactive_retention_ms, 4 * 3600 * 1000);
    assert_int_equal(c.ping_interval_ms, 20000);
    assert_int_equal(c.max_body, 1 << 20);
    setenv("MCPD_PING_INTERVAL", "5s", 1);
    setenv("MCPD_GC_INTERVAL", "7s", 1);
    char *argv[] = {"mcpd", "--listen",  "0.0.0.0:0",   "--gc-interval=250ms",
                    "--db", "/tmp/x.db", "--log-level", "debug",
                    NULL};
    char err[256];
    assert_int_equal(config_parse(&c, 8, argv, 1, err, sizeof err), 0);
    assert_int_equal(c.ping_interval_ms, 5000); /* from the environment */
    assert_int_equal(c.gc_interval_ms, 250);    /* the flag wins */
    assert_string_equal(c.listen_addr, "0.0.0.0");
    assert_int_equal(c.listen_port, 0);
    assert_string_equal(c.db_path, "/tmp/x.db");
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    unsetenv("MCPD_PING_INTERVAL");
    unsetenv("MCPD_GC_INTERVAL");
}

static void test_refusals_name_the_flag(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"--heartbeat-timeout", "soon"}, {"--listen", "localhost"},
        {"--listen", "1.2.3.4:99999"},   {"--threads", "0"},
        {"--max-body", "12Q"},           {"--log-level", "loud"},
        {"--ping-interval", "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct server_config c;
        config_defaults(&c);
        char *argv[] = {"mcpd", (char *)bad[i][0], (char *)bad[i][1], NULL};
        char err[256] = "";
        assert_int_equal(config_parse(&c, 3, argv, 1, err, sizeof err), -1);
        assert_non_null(strstr(err, bad[i][0]));
    }
    struct server_config c;
    config_defaults(&c);
    char *argv[] = {"mcpd", "--bogus", NULL};
    char err[256] = "";
    assert_int_equal(config_parse(&c, 2, argv, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "--bogus"));
    setenv("MCPD_IDLE_TIMEOUT", "forever", 1);
    config_defaults(&c);
    char *argv2[] = {"mcpd", NULL};
    assert_int_equal(config_parse(&c, 1, argv2, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "--idle-timeout"));
    unsetenv("MCPD_IDLE_TIMEOUT");
}

static void test_access_log_target(void **state)
{
    (void)state;
    struct server_config c;
    config_defaults(&c);
    assert_string_equal(c.access_log, "-"); /* stderr */
    char err[256] = "";
    setenv("MCPD_ACCESS_LOG", "off", 1);
    char *argv[] = {"mcpd", NULL};
    assert_int_equal(config_parse(&c, 1, argv, 1, err, sizeof err), 0);
    assert_string_equal(c.access_log, "off");
    char *argv2[] = {"mcpd", "--access-log", "/var/log/mcpd/access.log", NULL};
    assert_int_equal(config_parse(&c, 3, argv2, 1, err, sizeof err), 0);
    assert_string_equal(c.access_log, "/var/log/mcpd/access.log"); /* the flag wins */
    unsetenv("MCPD_ACCESS_LOG");
    char *argv3[] = {"mcpd", "--access-log=", NULL};
    assert_int_equal(config_parse(&c, 2, argv3, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "--access-log"));
}

static void test_version_is_recognised(void **state)
{
    (void)state;
    assert_string_equal(mcpd_version(), MCP_VERSION);
    struct server_config c;
    config_defaults(&c);
    char *argv[] = {"mcpd", "--version", NULL};
    char err[256] = "";
    assert_int_equal(config_parse(&c, 2, argv, 1, err, sizeof err), 1);
    assert_string_equal(err, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_defaults_env_and_flags),
                                       cmocka_unit_test(test_refusals_name_the_flag),
                                       cmocka_unit_test(test_access_log_target),
                                       cmocka_unit_test(test_version_is_recognised)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
