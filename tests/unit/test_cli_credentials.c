/* Unit tests for cli/credentials.c: precedence, the file, login writes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_support.h"
#include "credentials.h"
#include "testca.h"
#include "tmpdir.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Certificates for the CA file tests, made once. */
static char *ca_dir;
static struct testca ca;

static const char *file_json =
    "{\"mcpdUrl\": \"http://file.example:1\", \"token\": \"file-token\", \"other\": 42}";

static const struct {
    const char *what;
    const char *flag_url, *env_url, *flag_token, *env_token;
    const char *file; /* NULL: no file */
    const char *want_url, *want_url_from, *want_token, *want_token_from;
} cases[] = {
    {"flags win over env and file", "http://flag:1", "http://env:1", "flag-token", "env-token",
     NULL, "http://flag:1", "--server", "flag-token", "--token"},
    {"env wins over file", NULL, "http://env:1", NULL, "env-token", NULL, "http://env:1",
     "MCPCTL_URL", "env-token", "MCPCTL_TOKEN"},
    {"file alone", NULL, NULL, NULL, NULL, NULL, "http://file.example:1", "the credentials file",
     "file-token", "the credentials file"},
    {"empty env counts as unset", NULL, "", NULL, "", NULL, "http://file.example:1",
     "the credentials file", "file-token", "the credentials file"},
    {"each value on its own: flag url, env token", "http://flag:1", NULL, NULL, "env-token", NULL,
     "http://flag:1", "--server", "env-token", "MCPCTL_TOKEN"},
    {"each value on its own: env url, file token", NULL, "http://env:1", NULL, NULL, NULL,
     "http://env:1", "MCPCTL_URL", "file-token", "the credentials file"},
    {"flags need no file, even a broken one", "http://flag:1", NULL, "t", NULL, "{not json",
     "http://flag:1", "--server", "t", "--token"},
    {"trailing slashes are dropped", "http://flag:1///", NULL, "t", NULL, NULL, "http://flag:1",
     "--server", "t", "--token"},
};

static void test_precedence_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = tmpdir_create("cli-creds");
        char *path = tmpdir_path(dir, "credentials");
        assert_int_equal(cli_t_write_file(path, cases[i].file ? cases[i].file : file_json), 0);
        struct creds_sources s = {
            .flag_url = cases[i].flag_url,
            .flag_token = cases[i].flag_token,
            .env_url = cases[i].env_url,
            .env_token = cases[i].env_token,
            .env_home = dir,
            .user_home = "/nonexistent",
        };
        struct creds c;
        struct cli_error err = {0};
        if (creds_resolve(&s, true, true, &c, &err) != 0)
            fail_msg("%s: %s", cases[i].what, err.msg);
        if (strcmp(c.url, cases[i].want_url) != 0 || strcmp(c.token, cases[i].want_token) != 0 ||
            strcmp(c.url_from, cases[i].want_url_from) != 0 ||
            strcmp(c.token_from, cases[i].want_token_from) != 0)
            fail_msg("%s: got %s (%s) %s (%s)", cases[i].what, c.url, c.url_from, c.token,
                     c.token_from);
        assert_string_equal(c.path, path);
        creds_release(&c);
        free(path);
        tmpdir_remove(dir);
    }
}

static int resolve_in(const char *dir, const char *file, struct creds *c, struct cli_error *err)
{
    if (file) {
        char *path = tmpdir_path(dir, "credentials");
        assert_int_equal(cli_t_write_file(path, file), 0);
        free(path);
    }
    struct creds_sources s = {.env_home = dir};
    return creds_resolve(&s, true, true, c, err);
}

static void test_missing_values_are_usage_errors(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        const char *needle;
    } bad[] = {
        {NULL, "no mcpd server configured"},
        {"{\"mcpdUrl\": \"http://x:1\"}", "no API token configured"},
        {"{\"token\": \"t\"}", "no mcpd server configured"},
        {"{\"mcpdUrl\": \"http://x:1\", \"token\": 5}", "'token' must be a string"},
        {"[1, 2]", "is not a JSON object"},
        {"{broken", "is not a JSON object"},
        {"{\"mcpdUrl\": \"localhost:8080\", \"token\": \"t\"}", "invalid server URL"},
        {"{\"mcpdUrl\": \"\", \"token\": \"t\"}", "no mcpd server configured"},
        {"{\"mcpdUrl\": \"http://x:1\", \"token\": \"a\\r\\nX-Evil: 1\"}",
         "the token from the credentials file contains spaces or control characters"},
        {"{\"mcpdUrl\": \"http://x:1\", \"token\": \"two words\"}", "contains spaces"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *dir = tmpdir_create("cli-creds");
        struct creds c;
        struct cli_error err = {0};
        assert_int_equal(resolve_in(dir, bad[i].file, &c, &err), -1);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].needle);
        assert_null(strchr(err.msg, '\n'));
        creds_release(&c);
        tmpdir_remove(dir);
    }
}

static void test_empty_flags_are_rejected(void **state)
{
    (void)state;
    struct creds_sources s = {.flag_url = "", .flag_token = "t", .env_home = "/nonexistent"};
    struct creds c;
    struct cli_error err = {0};
    assert_int_equal(creds_resolve(&s, true, true, &c, &err), -1);
    assert_int_equal(err.code, CLI_EXIT_USAGE);
    creds_release(&c);
}

static void test_home_fallback_path(void **state)
{
    (void)state;
    struct creds_sources s = {.user_home = "/home/bob"};
    char *p = creds_file_path(&s);
    assert_string_equal(p, "/home/bob/.mcpctl/credentials");
    free(p);
    s.env_home = "";
    p = creds_file_path(&s);
    assert_string_equal(p, "/home/bob/.mcpctl/credentials");
    free(p);
    s.env_home = "/srv/mcp";
    p = creds_file_path(&s);
    assert_string_equal(p, "/srv/mcp/credentials");
    free(p);
    struct creds_sources none = {0};
    assert_null(creds_file_path(&none));
}

static void test_sources_from_env(void **state)
{
    (void)state;
    struct creds_sources s;
    memset(&s, 0xa5, sizeof s); /* what an uninitialised struct may hold */
    setenv("MCPCTL_CACERT", "/etc/mcp/ca.pem", 1);
    creds_sources_from_env(&s);
    unsetenv("MCPCTL_CACERT");
    assert_string_equal(s.env_cacert, "/etc/mcp/ca.pem");
    assert_null(s.flag_url);
    assert_null(s.flag_token);
    assert_null(s.flag_cacert);
}

static void test_only_needed_values(void **state)
{
    (void)state;
    struct creds_sources s = {.flag_url = "https://a.example/", .env_home = "/nonexistent"};
    struct creds c;
    struct cli_error err = {0};
    assert_int_equal(creds_resolve(&s, true, false, &c, &err), 0);
    assert_string_equal(c.url, "https://a.example");
    assert_null(c.token);
    creds_release(&c);
}

static void test_normalize_url(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"http://h", "http://h"},
        {"http://h:8080/", "http://h:8080"},
        {"HTTPS://h.example//", "HTTPS://h.example"},
        {"http://h/prefix/", "http://h/prefix"},
    };
    static const char *const bad[] = {"",        "h:8080",    "ftp://h",
                                      "http://", "http:///x", "http://a b"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *out = NULL;
        struct cli_error err = {0};
        assert_int_equal(creds_normalize_url(ok[i].in, &out, &err), 0);
        assert_string_equal(out, ok[i].out);
        free(out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = NULL;
        struct cli_error err = {0};
        if (creds_normalize_url(bad[i], &out, &err) != -1)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
    }
}

static void test_save_new_file(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "deep/er/credentials");
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "http://h:1", "tok", NULL, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *parent = tmpdir_path(dir, "deep/er");
    assert_int_equal(stat(parent, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    free(parent);
    json_t *j = json_load_file(path, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "mcpdUrl")), "http://h:1");
    assert_string_equal(json_string_value(json_object_get(j, "token")), "tok");
    assert_int_equal(json_object_size(j), 2);
    json_decref(j);
    free(path);
    tmpdir_remove(dir);
}

static void test_save_keeps_other_keys(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "credentials");
    assert_int_equal(cli_t_write_file(path, file_json), 0);
    chmod(path, 0644);
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "https://new.example", "new-token", NULL, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    json_t *j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "mcpdUrl")), "https://new.example");
    assert_string_equal(json_string_value(json_object_get(j, "token")), "new-token");
    assert_int_equal(json_integer_value(json_object_get(j, "other")), 42);
    json_decref(j);

    /* And what was saved is what resolves. */
    struct creds c;
    assert_int_equal(resolve_in(dir, NULL, &c, &err), 0);
    assert_string_equal(c.url, "https://new.example");
    assert_string_equal(c.token, "new-token");
    creds_release(&c);
    free(path);
    tmpdir_remove(dir);
}

static void test_save_refuses_to_clobber_a_broken_file(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "credentials");
    assert_int_equal(cli_t_write_file(path, "not json"), 0);
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "http://h:1", "tok", NULL, &err), -1);
    assert_int_equal(err.code, CLI_EXIT_ERROR);
    assert_non_null(strstr(err.msg, "fix or remove it"));
    FILE *f = fopen(path, "r");
    char buf[64] = {0};
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "not json");
    free(path);
    tmpdir_remove(dir);
}

/* ---- caFile ---- */

/* A credentials file in dir with url, token "t" and caFile (raw JSON text,
 * NULL: none). */
static void write_creds(const char *dir, const char *url, const char *cafile_json)
{
    char text[2 * PATH_MAX];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"t\"%s%s}", url,
             cafile_json ? ", \"caFile\": " : "", cafile_json ? cafile_json : "");
    char *path = tmpdir_path(dir, "credentials");
    assert_int_equal(cli_t_write_file(path, text), 0);
    free(path);
}

static void test_cafile_precedence(void **state)
{
    (void)state;
    char quoted_ca[PATH_MAX + 2], quoted_other[PATH_MAX + 2];
    snprintf(quoted_ca, sizeof quoted_ca, "\"%s\"", ca.ca);
    snprintf(quoted_other, sizeof quoted_other, "\"%s\"", ca.other_ca);
    const struct {
        const char *what;
        const char *file_url; /* the file's mcpdUrl */
        const char *file_ca;  /* the file's caFile as JSON, NULL: none */
        const char *file_raw; /* instead of the above, this text */
        const char *flag_url, *flag_token, *flag_cacert, *env_cacert;
        const char *want, *want_from; /* NULL: no CA file */
    } ca_cases[] = {
        {"the file's caFile for its https URL", "https://h:1", quoted_ca, NULL, NULL, NULL, NULL,
         NULL, ca.ca, "the credentials file"},
        {"MCPCTL_CACERT over the file", "https://h:1", quoted_ca, NULL, NULL, NULL, NULL,
         ca.other_ca, ca.other_ca, "MCPCTL_CACERT"},
        {"--cacert over MCPCTL_CACERT", "https://h:1", quoted_ca, NULL, NULL, NULL, ca.ca,
         ca.other_ca, ca.ca, "--cacert"},
        {"empty MCPCTL_CACERT counts as unset", "https://h:1", quoted_other, NULL, NULL, NULL, NULL,
         "", ca.other_ca, "the credentials file"},
        {"no caFile: the system's CAs only", "https://h:1", NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL},
        {"the caFile applies with URL and token from flags", "https://h:1", quoted_ca, NULL,
         "https://flag:2", "ft", NULL, NULL, ca.ca, "the credentials file"},
        {"a broken file gives no CA when flags give the rest", NULL, NULL, "{broken",
         "https://flag:2", "ft", NULL, NULL, NULL, NULL},
        {"no CA for http://, even a bad one", "http://h:1", "\"/no/such/ca.pem\"", NULL, NULL, NULL,
         NULL, "/no/such/either.pem", NULL, NULL},
        {"an explicit null caFile is none", "https://h:1", "null", NULL, NULL, NULL, NULL, NULL,
         NULL, NULL},
    };
    for (size_t i = 0; i < sizeof ca_cases / sizeof ca_cases[0]; i++) {
        char *dir = tmpdir_create("cli-creds");
        if (ca_cases[i].file_raw)
            tmpdir_write(dir, "credentials", ca_cases[i].file_raw, 0600);
        else
            write_creds(dir, ca_cases[i].file_url, ca_cases[i].file_ca);
        struct creds_sources s = {
            .flag_url = ca_cases[i].flag_url,
            .flag_token = ca_cases[i].flag_token,
            .flag_cacert = ca_cases[i].flag_cacert,
            .env_cacert = ca_cases[i].env_cacert,
            .env_home = dir,
        };
        struct creds c;
        struct cli_error err = {0};
        if (creds_resolve(&s, true, true, &c, &err) != 0)
            fail_msg("%s: %s", ca_cases[i].what, err.msg);
        if (ca_cases[i].want ? !c.cafile || strcmp(c.cafile, ca_cases[i].want) != 0 ||
                                   strcmp(c.cafile_from, ca_cases[i].want_from) != 0
                             : c.cafile != NULL || c.cafile_from != NULL)
            fail_msg("%s: got '%s' from %s", ca_cases[i].what, c.cafile ? c.cafile : "(none)",
                     c.cafile_from ? c.cafile_from : "(nowhere)");
        creds_release(&c);
        tmpdir_remove(dir);
    }
}

static void test_bad_cafiles(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    tmpdir_write(dir, "text.pem", "not a certificate\n", 0644);
    tmpdir_write(dir, "corrupt.pem",
                 "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
                 0644);
    tmpdir_write(dir, "key-only.pem",
                 "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0600);
    char *text = tmpdir_path(dir, "text.pem"), *corrupt = tmpdir_path(dir, "corrupt.pem");
    char *key_only = tmpdir_path(dir, "key-only.pem"), *missing = tmpdir_path(dir, "missing.pem");
    const struct {
        const char *path, *from, *needle, *hint;
    } ca_cases[] = {
        {missing, "the credentials file", "cannot read the CA file '", "--cacert FILE"},
        {missing, "MCPCTL_CACERT", "from MCPCTL_CACERT: no such file or directory",
         "fix or unset MCPCTL_CACERT"},
        {dir, "--cacert", "from --cacert: is a directory", "the PEM file of the CA"},
        {text, "the credentials file", "holds no PEM certificate", "mcpctl login"},
        {key_only, "--cacert", "holds no PEM certificate", "the PEM file of the CA"},
        {corrupt, "--cacert", "holds a PEM certificate that cannot be read (", "the PEM file"},
    };
    for (size_t i = 0; i < sizeof ca_cases / sizeof ca_cases[0]; i++) {
        struct cli_error err = {0};
        assert_int_equal(creds_check_cafile(ca_cases[i].path, ca_cases[i].from, &err), -1);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
        if (!strstr(err.msg, ca_cases[i].needle) || !strstr(err.msg, ca_cases[i].hint) ||
            !strstr(err.msg, ca_cases[i].path) || strchr(err.msg, '\n'))
            fail_msg("case %zu: '%s' lacks '%s' or '%s'", i, err.msg, ca_cases[i].needle,
                     ca_cases[i].hint);
    }

    /* The same checks run when a command resolves an https URL... */
    char quoted[PATH_MAX + 2];
    snprintf(quoted, sizeof quoted, "\"%s\"", text);
    write_creds(dir, "https://h:1", quoted);
    struct creds_sources s = {.env_home = dir};
    struct creds c;
    struct cli_error err = {0};
    assert_int_equal(creds_resolve(&s, true, true, &c, &err), -1);
    assert_int_equal(err.code, CLI_EXIT_USAGE);
    assert_non_null(strstr(err.msg, "from the credentials file holds no PEM certificate"));
    creds_release(&c);
    /* ...and a caFile that is not a string is reported, not ignored. */
    write_creds(dir, "https://h:1", "42");
    assert_int_equal(creds_resolve(&s, true, true, &c, &err), -1);
    assert_non_null(strstr(err.msg, "'caFile' must be a string"));
    creds_release(&c);

    free(text);
    free(corrupt);
    free(key_only);
    free(missing);
    tmpdir_remove(dir);
}

static void test_good_cafiles(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    /* A bundle: two CAs with text around them, as system bundles have. */
    char *bundle_text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&bundle_text, &len);
    const char *parts[] = {ca.ca, ca.other_ca};
    fputs("# two CAs\n", m);
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(parts[i], "r");
        assert_non_null(f);
        char line[256];
        while (fgets(line, sizeof line, f))
            fputs(line, m);
        fclose(f);
        fputs("\n", m);
    }
    fclose(m);
    tmpdir_write(dir, "bundle.pem", bundle_text, 0644);
    free(bundle_text);
    char *bundle = tmpdir_path(dir, "bundle.pem");
    const char *good[] = {ca.ca, ca.other_ca, bundle, ca.cert};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct cli_error err = {0};
        if (creds_check_cafile(good[i], "--cacert", &err) != 0)
            fail_msg("'%s' refused: %s", good[i], err.msg);
    }
    free(bundle);
    tmpdir_remove(dir);
}

static void test_absolute_path(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *real = realpath(dir, NULL);
    char *sub = tmpdir_path(dir, "sub");
    char *link = tmpdir_path(dir, "link");
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(symlink(sub, link), 0);
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(sub), 0);

    char want_sub[PATH_MAX], want_real[PATH_MAX];
    snprintf(want_sub, sizeof want_sub, "%s/sub/ca.pem", real);
    snprintf(want_real, sizeof want_real, "%s/ca.pem", real);
    char abs_link[PATH_MAX];
    snprintf(abs_link, sizeof abs_link, "%s/link/ca.pem", dir);
    const struct {
        const char *in, *want;
    } ok[] = {
        {"ca.pem", want_sub},        /* relative: from the working directory */
        {"./ca.pem", want_sub},      /* dot components go */
        {"../sub/ca.pem", want_sub}, /* (the files need not exist: they are checked next) */
        {"../ca.pem", want_real},    /* parents are resolved */
        {abs_link, want_sub},        /* a linked directory is resolved... */
        {"/ca.pem", "/ca.pem"},      /* the root directory */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *out = NULL;
        struct cli_error err = {0};
        if (creds_absolute_path(ok[i].in, &out, &err) != 0)
            fail_msg("'%s': %s", ok[i].in, err.msg);
        if (strcmp(out, ok[i].want) != 0)
            fail_msg("'%s' became '%s', want '%s'", ok[i].in, out, ok[i].want);
        free(out);
    }
    /* ...but a linked file keeps its name, so renewing the link's target
     * keeps working. */
    char *file_link = tmpdir_path(sub, "current.pem");
    assert_int_equal(symlink(ca.ca, file_link), 0);
    char *out = NULL;
    struct cli_error err = {0};
    assert_int_equal(creds_absolute_path("current.pem", &out, &err), 0);
    char want_link[PATH_MAX];
    snprintf(want_link, sizeof want_link, "%s/sub/current.pem", real);
    assert_string_equal(out, want_link);
    free(out);

    static const char *const bad[] = {"no/such/dir/ca.pem", "sub/", ".", ".."};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out = NULL;
        if (creds_absolute_path(bad[i], &out, &err) != -1)
            fail_msg("'%s' accepted as '%s'", bad[i], out);
        assert_int_equal(err.code, CLI_EXIT_USAGE);
        assert_non_null(strstr(err.msg, bad[i]));
    }

    assert_int_equal(chdir(cwd), 0);
    free(file_link);
    free(sub);
    free(link);
    free(real);
    tmpdir_remove(dir);
}

static void test_save_cafile(void **state)
{
    (void)state;
    char *dir = tmpdir_create("cli-creds");
    char *path = tmpdir_path(dir, "credentials");
    struct cli_error err = {0};
    assert_int_equal(creds_save(path, "https://h:1", "tok", ca.ca, &err), 0);
    json_t *j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "caFile")), ca.ca);
    json_decref(j);

    /* Saved, it is what an https URL resolves with. */
    struct creds_sources s = {.env_home = dir};
    struct creds c;
    assert_int_equal(creds_resolve(&s, true, true, &c, &err), 0);
    assert_string_equal(c.url, "https://h:1");
    assert_string_equal(c.cafile, ca.ca);
    assert_string_equal(c.cafile_from, "the credentials file");
    creds_release(&c);

    /* A login without a CA keeps the one saved; a new CA replaces it. */
    assert_int_equal(creds_save(path, "https://h:2", "tok2", NULL, &err), 0);
    j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "mcpdUrl")), "https://h:2");
    assert_string_equal(json_string_value(json_object_get(j, "caFile")), ca.ca);
    json_decref(j);
    assert_int_equal(creds_save(path, "https://h:2", "tok2", ca.other_ca, &err), 0);
    j = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "caFile")), ca.other_ca);
    assert_int_equal(json_object_size(j), 3);
    json_decref(j);
    free(path);
    tmpdir_remove(dir);
}

static int group_setup(void **state)
{
    (void)state;
    ca_dir = tmpdir_create("cli-creds-ca");
    return testca_make(ca_dir, &ca);
}

static int group_teardown(void **state)
{
    (void)state;
    tmpdir_remove(ca_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence_table),
        cmocka_unit_test(test_missing_values_are_usage_errors),
        cmocka_unit_test(test_empty_flags_are_rejected),
        cmocka_unit_test(test_home_fallback_path),
        cmocka_unit_test(test_sources_from_env),
        cmocka_unit_test(test_only_needed_values),
        cmocka_unit_test(test_normalize_url),
        cmocka_unit_test(test_save_new_file),
        cmocka_unit_test(test_save_keeps_other_keys),
        cmocka_unit_test(test_save_refuses_to_clobber_a_broken_file),
        cmocka_unit_test(test_cafile_precedence),
        cmocka_unit_test(test_bad_cafiles),
        cmocka_unit_test(test_good_cafiles),
        cmocka_unit_test(test_absolute_path),
        cmocka_unit_test(test_save_cafile),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
