/* The access log's lines: every field, logfmt quoting, long values cut,
 * the line cap, targets, and a reopen after the file was moved. */
#include "accesslog.h"
#include "file.h"
#include "tmpdir.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define T_MS 1767225600123LL /* 2026-01-01T00:00:00.123Z */

static struct accesslog_entry entry(void)
{
    return (struct accesslog_entry){
        .time_ms = T_MS,
        .remote = "127.0.0.1:40000",
        .owner = "alice",
        .method = "POST",
        .path = "/v1/chat/completions",
        .llm = "llm1",
        .status = 200,
        .bytes = 512,
        .duration_us = 12345,
        .ttfb_us = -1,
    };
}

static char *format(const struct accesslog_entry *e)
{
    static char line[ACCESSLOG_LINE_MAX];
    size_t n = accesslog_format(e, line);
    assert_true(n > 0 && n < ACCESSLOG_LINE_MAX);
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1)); /* one line */
    line[n] = '\0';
    return line;
}

static void test_fields(void **state)
{
    (void)state;
    struct accesslog_entry e = entry();
    assert_string_equal(format(&e), "time=2026-01-01T00:00:00.123Z remote=127.0.0.1:40000 "
                                    "owner=alice method=POST path=/v1/chat/completions llm=llm1 "
                                    "status=200 bytes=512 duration_ms=12.345\n");
    /* a stream's first byte, and a request that ended early */
    e.ttfb_us = 1002;
    e.end = "client_gone";
    e.status = 0;
    e.duration_us = 7;
    assert_string_equal(format(&e), "time=2026-01-01T00:00:00.123Z remote=127.0.0.1:40000 "
                                    "owner=alice method=POST path=/v1/chat/completions llm=llm1 "
                                    "status=0 bytes=512 duration_ms=0.007 ttfb_ms=1.002 "
                                    "end=client_gone\n");
    /* what is unknown is "-" */
    e = entry();
    e.owner = "";
    e.llm = NULL;
    e.remote = NULL;
    assert_non_null(strstr(format(&e), " remote=- owner=- method=POST "));
    assert_non_null(strstr(format(&e), " llm=- status=200 "));
}

static void test_quoting(void **state)
{
    (void)state;
    static const struct {
        const char *owner, *want;
    } cases[] = {
        {"bob smith", "owner=\"bob smith\""},
        {"a=b", "owner=\"a=b\""},
        {"say \"hi\"", "owner=\"say \\\"hi\\\"\""},
        {"back\\slash", "owner=\"back\\\\slash\""},
        {"line\nbreak\r\ttab", "owner=\"line\\nbreak\\r\\ttab\""},
        {"bell\x07", "owner=\"bell\\x07\""},
        {"del\x7f", "owner=\"del\\x7f\""},
        {"caf\xc3\xa9", "owner=caf\xc3\xa9"}, /* UTF-8 passes as it is */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct accesslog_entry e = entry();
        e.owner = cases[i].owner;
        char want[128];
        snprintf(want, sizeof want, " %s ", cases[i].want);
        char *line = format(&e);
        if (!strstr(line, want))
            fail_msg("owner '%s': want %s in %s", cases[i].owner, want, line);
    }
}

static void test_long_values_are_cut(void **state)
{
    (void)state;
    char path[8192];
    memset(path, 'a', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    struct accesslog_entry e = entry();
    e.path = path;
    char *line = format(&e);
    char want[ACCESSLOG_PATH_MAX + 16];
    snprintf(want, sizeof want, " path=%.*s... llm=", ACCESSLOG_PATH_MAX, path);
    assert_non_null(strstr(line, want));

    /* the worst case: every byte escaped, in every field */
    char ctl[8192];
    memset(ctl, '\x01', sizeof ctl - 1);
    ctl[sizeof ctl - 1] = '\0';
    e = (struct accesslog_entry){.remote = ctl,
                                 .owner = ctl,
                                 .method = ctl,
                                 .path = ctl,
                                 .llm = ctl,
                                 .end = ctl,
                                 .status = 599,
                                 .bytes = UINT64_MAX,
                                 .duration_us = INT64_MAX,
                                 .ttfb_us = INT64_MAX};
    line = format(&e);
    assert_true(strlen(line) < PIPE_BUF);
    assert_non_null(strstr(line, " path=\"\\x01\\x01"));
    assert_non_null(strstr(line, "...\" llm="));
    assert_non_null(strstr(line, " status=599 bytes=18446744073709551615 "));
}

static void test_targets(void **state)
{
    (void)state;
    struct accesslog *al = (struct accesslog *)1;
    char err[256] = "";
    assert_int_equal(accesslog_open("off", &al, err, sizeof err), 0);
    assert_null(al);
    accesslog_write(NULL, NULL); /* off: nothing to do */
    assert_int_equal(accesslog_reopen(NULL), 0);
    assert_int_equal(accesslog_errors(NULL), 0);

    assert_int_equal(accesslog_open("-", &al, err, sizeof err), 0);
    assert_non_null(al);
    assert_int_equal(accesslog_reopen(al), 0); /* stderr stays */
    accesslog_free(al);

    assert_int_equal(accesslog_open("/nonexistent-dir/access.log", &al, err, sizeof err), -1);
    assert_null(al);
    assert_non_null(strstr(err, "cannot open access log '/nonexistent-dir/access.log'"));
    accesslog_free(NULL);
}

static char *slurp(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(file_read_all(path, 1 << 20, &text, &len), 0);
    return text;
}

/* The file at path has the line of request path has and, when lacks is
 * not NULL, not that of lacks. */
static void expect_file(const char *path, const char *has, const char *lacks)
{
    char *text = slurp(path);
    char want[64];
    snprintf(want, sizeof want, " path=%s ", has);
    if (!strstr(text, want))
        fail_msg("no%sin %s:\n%s", want, path, text);
    snprintf(want, sizeof want, " path=%s ", lacks ? lacks : "");
    if (lacks && strstr(text, want))
        fail_msg("%s in %s:\n%s", want, path, text);
    free(text);
}

static void test_file_and_reopen(void **state)
{
    (void)state;
    char *dir = tmpdir_create("accesslog");
    char *path = tmpdir_path(dir, "access.log");
    char *moved = tmpdir_path(dir, "access.log.1");
    tmpdir_write(dir, "access.log", "earlier line\n", 0600);
    struct accesslog *al;
    char err[256];
    assert_int_equal(accesslog_open(path, &al, err, sizeof err), 0);
    struct accesslog_entry e = entry();
    e.path = "/one";
    accesslog_write(al, &e);
    char *text = slurp(path);
    assert_string_equal(text, "earlier line\n"); /* buffered */
    free(text);
    accesslog_sync(al);
    text = slurp(path);
    assert_true(strncmp(text, "earlier line\ntime=", 18) == 0); /* appended */
    assert_non_null(strstr(text, " path=/one "));
    free(text);

    /* logrotate moves the file, then mcpd gets SIGHUP */
    assert_int_equal(rename(path, moved), 0);
    e.path = "/two";
    accesslog_write(al, &e); /* for the old file, under its new name */
    assert_int_equal(accesslog_reopen(al), 0);
    e.path = "/three";
    accesslog_write(al, &e);
    accesslog_sync(al);
    expect_file(moved, "/two", "/three");
    expect_file(path, "/three", "/two");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(accesslog_errors(al), 0);

    /* a reopen that fails keeps the file in use */
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(accesslog_reopen(al), -1);
    assert_int_equal(errno, EISDIR);
    e.path = "/four";
    accesslog_write(al, &e);
    accesslog_sync(al);
    expect_file(moved, "/three", NULL);
    expect_file(moved, "/four", NULL);
    assert_int_equal(rmdir(path), 0);
    accesslog_free(al);
    free(path);
    free(moved);
    tmpdir_remove(dir);
}

/* Lines go out whole and in order, a chunk at a time, the last ones when
 * the log is closed. */
static void test_buffered_lines_stay_whole(void **state)
{
    (void)state;
    char *dir = tmpdir_create("accesslog");
    char *path = tmpdir_path(dir, "access.log");
    struct accesslog *al;
    char err[256];
    assert_int_equal(accesslog_open(path, &al, err, sizeof err), 0);
    enum { LINES = 1000 };
    char p[64];
    for (int i = 0; i < LINES; i++) {
        struct accesslog_entry e = entry();
        snprintf(p, sizeof p, "/n/%d", i);
        e.path = p;
        accesslog_write(al, &e);
    }
    accesslog_free(al); /* writes every line first */
    char *text = slurp(path);
    int n = 0;
    for (char *line = text; *line; n++) {
        char want[64];
        snprintf(want, sizeof want, " path=/n/%d ", n);
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        assert_true(strncmp(line, "time=", 5) == 0);
        assert_non_null(strstr(line, want));
        line = nl + 1;
    }
    assert_int_equal(n, LINES);
    free(text);
    free(path);
    tmpdir_remove(dir);
}

/* Reads a pipe to its end, counting whole lines. */
static uint64_t read_lines;
static void *read_all(void *arg)
{
    int fd = *(int *)arg;
    char buf[65536];
    ssize_t n;
    read_lines = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            read_lines += buf[i] == '\n';
    return NULL;
}

/* A reader that stops reading (a stuck pipe, a slow disk) blocks only the
 * writer thread: lines past the queue's cap are dropped and counted, and
 * adding one never waits. */
static void test_a_stuck_reader_never_blocks_a_worker(void **state)
{
    (void)state;
    char *dir = tmpdir_create("accesslog");
    char *path = tmpdir_path(dir, "pipe");
    assert_int_equal(mkfifo(path, 0600), 0);
    int rd = open(path, O_RDONLY | O_NONBLOCK); /* a reader that never reads */
    assert_true(rd >= 0);
    struct accesslog *al;
    char err[256];
    assert_int_equal(accesslog_open(path, &al, err, sizeof err), 0);
    struct accesslog_entry e = entry();
    /* far more than the pipe and the queue hold together */
    int lines = (ACCESSLOG_QUEUE_MAX + 64) * (PIPE_BUF / 150);
    for (int i = 0; i < lines; i++)
        accesslog_write(al, &e);
    assert_true(accesslog_errors(al) > 0);
    /* the reader comes back: what was kept gets through, whole lines */
    int flags = fcntl(rd, F_GETFL);
    assert_int_equal(fcntl(rd, F_SETFL, flags & ~O_NONBLOCK), 0);
    pthread_t drainer;
    assert_int_equal(pthread_create(&drainer, NULL, read_all, &rd), 0);
    uint64_t dropped = accesslog_errors(al);
    accesslog_free(al); /* writes what was queued, closes its end */
    pthread_join(drainer, NULL);
    assert_int_equal(read_lines + dropped, (uint64_t)lines);
    close(rd);
    free(path);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_long_values_are_cut),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_file_and_reopen),
        cmocka_unit_test(test_buffered_lines_stay_whole),
        cmocka_unit_test(test_a_stuck_reader_never_blocks_a_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
