/* config.json, credentials and provider-session: good files, bad files with
 * file/line/reason, permissions, the home directory and initialStatus. */
#include "config.h"
#include "credentials.h"
#include "jsonloc.h"
#include "tmpdir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static const char GOOD[] =
    "{\n"
    "  \"otherTool\": {\"x\": 1},\n"
    "  \"llm\": {\"providers\": [\n"
    "    {\"name\": \"vllm-local\", \"type\": \"openai\", \"model\": \"Qwen/Qwen2.5-7B\",\n"
    "     \"url\": \"http://127.0.0.1:8000/v1/\", \"apiKeyEnv\": \"VLLM_KEY\", \"tier\": "
    "\"fast\",\n"
    "     \"description\": \"laptop\", \"extraConfig\": {\"ctx\": 32768}, \"publish\": true,\n"
    "     \"poolName\": null,\n"
    "     \"wake\": {\"type\": \"http\", \"url\": \"http://127.0.0.1:9000/wake\",\n"
    "              \"headers\": {\"X-Token\": \"abc\"}, \"body\": \"{}\", \"maxWaitSeconds\": "
    "90}},\n"
    "    {\"name\": \"ollama\", \"type\": \"openai\", \"model\": \"llama3\",\n"
    "     \"url\": \"http://127.0.0.1:11434/v1\", \"publish\": true,\n"
    "     \"wake\": {\"type\": \"command\", \"command\": \"/usr/bin/systemctl\",\n"
    "              \"args\": [\"start\", \"ollama\"], \"maxWaitSeconds\": 0.5}},\n"
    "    {\"name\": \"private\", \"type\": \"openai\", \"model\": \"m\", \"url\": "
    "\"https://x\", \"pubish\": true}\n"
    "  ]}\n"
    "}\n";

static void test_good_config(void **state)
{
    (void)state;
    struct config *c = NULL;
    char err[512] = "";
    assert_int_equal(config_parse(GOOD, strlen(GOOD), "/h/config.json", &c, err, sizeof err), 0);
    assert_int_equal(c->n_providers, 3);
    assert_int_equal(config_published(c), 2);

    const struct provider_cfg *v = config_find(c, "vllm-local");
    assert_non_null(v);
    assert_string_equal(v->url, "http://127.0.0.1:8000/v1"); /* trailing slash dropped */
    assert_string_equal(v->model, "Qwen/Qwen2.5-7B");
    assert_string_equal(v->api_key_env, "VLLM_KEY");
    assert_string_equal(v->tier, "fast");
    assert_string_equal(v->extra_config, "{\"ctx\":32768}");
    assert_null(v->pool_name);
    assert_true(v->publish);
    assert_int_equal(v->wake.type, WAKE_HTTP);
    assert_string_equal(v->wake.method, "POST"); /* the default */
    assert_string_equal(v->wake.headers[0], "X-Token: abc");
    assert_null(v->wake.headers[1]);
    assert_string_equal(v->wake.body, "{}");
    assert_int_equal(v->wake.max_wait_ms, 90000);

    const struct provider_cfg *o = config_find(c, "ollama");
    assert_int_equal(o->wake.type, WAKE_COMMAND);
    assert_int_equal(o->wake.argc, 3);
    assert_string_equal(o->wake.argv[0], "/usr/bin/systemctl");
    assert_string_equal(o->wake.argv[2], "ollama");
    assert_null(o->wake.argv[3]);
    assert_int_equal(o->wake.max_wait_ms, 500);

    const struct provider_cfg *p = config_find(c, "private");
    assert_false(p->publish); /* publish defaults to false */
    assert_int_equal(p->wake.type, WAKE_NONE);
    assert_null(config_find(c, "nope"));

    /* The typo is reported with its line, not silently accepted. */
    assert_int_equal(c->n_warnings, 1);
    assert_non_null(strstr(c->warnings[0], "line 14"));
    assert_non_null(strstr(c->warnings[0], "llm.providers[2].pubish: unknown field"));

    struct config *r = config_ref(c);
    config_unref(c);
    config_unref(r);
    config_unref(NULL);
}

static void test_empty_configs(void **state)
{
    (void)state;
    const char *texts[] = {"{}", "{\"llm\": {}}", "{\"llm\": {\"providers\": []}}",
                           "{\"llm\": null}"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct config *c = NULL;
        char err[256];
        assert_int_equal(config_parse(texts[i], strlen(texts[i]), "c", &c, err, sizeof err), 0);
        assert_int_equal(c->n_providers, 0);
        assert_int_equal(config_published(c), 0);
        config_unref(c);
    }
}

struct bad_case {
    const char *text;
    const char *want; /* a substring of the message */
};

#define P0 "{\"llm\":{\"providers\":[\n"
#define OK_FIELDS "\"name\":\"a\",\"type\":\"openai\",\"model\":\"m\",\"url\":\"http://h/v1\""

static const struct bad_case BAD[] = {
    {"{\"llm\": {\"providers\": [}", "config 'F' line 1, column 24: "},
    {"{\n\"llm\": {\n\"providers\": [\n  {\"name\": \"a\",}\n]}}", "line 4, column 16"},
    {"[]", "config 'F' line 1: the top level must be an object"},
    {"{\"llm\": 3}", "line 1: llm: must be an object"},
    {"{\"llm\": {\"providers\": {}}}", "llm.providers: must be an array"},
    {P0 "  7\n]}}", "line 2: llm.providers[0]: must be an object"},
    {P0 "{\"type\":\"openai\",\"model\":\"m\",\"url\":\"http://h\"}]}}",
     "line 2: llm.providers[0]: missing \"name\""},
    {P0 "{\"name\":\"-bad\",\"type\":\"openai\",\"model\":\"m\",\"url\":\"http://h\"}]}}",
     "llm.providers[0].name: '-bad' is not a valid name"},
    {P0 "{\"name\":\"a\",\"type\":\"anthropic\",\"model\":\"m\",\"url\":\"http://h\"}]}}",
     "llm.providers[0].type: unsupported provider type 'anthropic'"},
    {P0 "{\"name\":\"a\",\"type\":\"openai\",\"url\":\"http://h\"}]}}", "missing \"model\""},
    {P0 "{\"name\":\"a\",\"type\":\"openai\",\"model\":\"\",\"url\":\"http://h\"}]}}",
     "llm.providers[0].model: must not be empty"},
    {P0 "{\"name\":\"a\",\"type\":\"openai\",\"model\":\"m\",\"url\":\"ftp://h\"}]}}",
     "llm.providers[0].url: must start with http:// or https://"},
    {P0 "{" OK_FIELDS ",\"publish\":\"yes\"}]}}",
     "llm.providers[0].publish: must be true or false"},
    {P0 "{" OK_FIELDS ",\"tier\":5}]}}", "llm.providers[0].tier: must be a string"},
    {P0 "{" OK_FIELDS ",\"extraConfig\":[1]}]}}",
     "llm.providers[0].extraConfig: must be an object"},
    {P0 "{" OK_FIELDS "},\n{" OK_FIELDS "}]}}",
     "line 3: llm.providers[1].name: duplicate provider name 'a'"},
    {P0 "{" OK_FIELDS ",\n\"wake\":\"curl\"}]}}",
     "line 3: llm.providers[0].wake: must be an object"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"magic\"}}]}}",
     "llm.providers[0].wake.type: unknown wake type 'magic'"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"url\":\"http://w\"}}]}}",
     "llm.providers[0].wake: missing \"type\""},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"http\"}}]}}",
     "llm.providers[0].wake: missing \"url\""},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"http\",\"url\":\"file:///x\"}}]}}",
     "llm.providers[0].wake.url: must start with http://"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"http\",\"url\":\"http://w\",\"method\":\"PO ST\"}}]}}",
     "wake.method: 'PO ST' is not an HTTP method"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"http\",\"url\":\"http://w\",\"headers\":[1]}}]}}",
     "wake.headers: must be an object of strings"},
    {P0 "{" OK_FIELDS
        ",\"wake\":{\"type\":\"http\",\"url\":\"http://w\",\"headers\":{\"X\":1}}}]}}",
     "wake.headers.X: must be a string"},
    {P0 "{" OK_FIELDS
        ",\"wake\":{\"type\":\"http\",\"url\":\"http://w\",\"headers\":{\"X\":\"a\\nb\"}}}]}}",
     "wake.headers.X: must not contain control characters"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"command\"}}]}}",
     "llm.providers[0].wake: missing \"command\""},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"command\",\"command\":\"\"}}]}}",
     "wake.command: must not be empty"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"command\",\"command\":\"x\",\"args\":\"a b\"}}]}}",
     "wake.args: must be an array of strings"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"command\",\"command\":\"x\",\"args\":[\"a\",2]}}]}}",
     "wake.args[1]: must be a string"},
    {P0 "{" OK_FIELDS ",\"wake\":{\"type\":\"command\",\"command\":\"x\",\"maxWaitSeconds\":0}}]}}",
     "wake.maxWaitSeconds: must be a number of seconds above 0"},
    {P0 "{" OK_FIELDS
        ",\"wake\":{\"type\":\"command\",\"command\":\"x\",\"maxWaitSeconds\":\"60\"}}]}}",
     "wake.maxWaitSeconds: must be a number"},
    {P0 "{" OK_FIELDS
        ",\"wake\":{\"type\":\"command\",\"command\":\"x\",\"maxWaitSeconds\":1e9}}]}}",
     "wake.maxWaitSeconds"},
    {"{\"llm\": {}, \"llm\": {}}", "duplicate object key"},
};

static void test_bad_configs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        struct config *c = NULL;
        char err[1024] = "";
        int rc = config_parse(BAD[i].text, strlen(BAD[i].text), "F", &c, err, sizeof err);
        if (rc != CONFIG_ERR_INVALID || !strstr(err, BAD[i].want))
            fail_msg("case %zu: rc %d, message '%s', wanted '%s'", i, rc, err, BAD[i].want);
        assert_null(c);
    }
}

static void test_load_files(void **state)
{
    (void)state;
    char *dir = tmpdir_create("mcplocal-config");
    char *cfg = tmpdir_path(dir, "config.json");
    char *creds = tmpdir_path(dir, "credentials");
    char err[512];
    struct config *c = NULL;
    assert_int_equal(config_load(cfg, &c, err, sizeof err), CONFIG_ERR_MISSING);

    FILE *f = fopen(cfg, "w");
    fputs("{\n  \"llm\": {\"providers\": [\n    {\"name\": 5}]}}\n", f);
    fclose(f);
    assert_int_equal(config_load(cfg, &c, err, sizeof err), CONFIG_ERR_INVALID);
    char want[600];
    snprintf(want, sizeof want, "config '%s' line 3: llm.providers[0].name: must be a string", cfg);
    assert_string_equal(err, want);

    struct credentials cr;
    bool insecure = true;
    assert_int_equal(credentials_load(creds, &cr, &insecure, err, sizeof err), CONFIG_ERR_MISSING);
    f = fopen(creds, "w");
    fputs("{\"mcpdUrl\": \"http://mcpd.example:8080/\", \"token\": \"tok-1\"}", f);
    fclose(f);
    chmod(creds, 0644);
    assert_int_equal(credentials_load(creds, &cr, &insecure, err, sizeof err), 0);
    assert_true(insecure);
    assert_string_equal(cr.mcpd_url, "http://mcpd.example:8080");
    assert_string_equal(cr.token, "tok-1");
    credentials_release(&cr);
    chmod(creds, 0600);
    assert_int_equal(credentials_load(creds, &cr, &insecure, err, sizeof err), 0);
    assert_false(insecure);
    assert_null(cr.ca_file);
    struct credentials other = {0};
    assert_false(credentials_equal(&cr, &other));
    assert_true(credentials_equal(&cr, &cr));
    credentials_release(&cr);

    /* caFile: absolute as written, relative to the credentials' directory. */
    f = fopen(creds, "w");
    fputs("{\"mcpdUrl\": \"https://m\", \"token\": \"t\", \"caFile\": \"/etc/my ca.pem\"}", f);
    fclose(f);
    assert_int_equal(credentials_load(creds, &cr, &insecure, err, sizeof err), 0);
    assert_string_equal(cr.ca_file, "/etc/my ca.pem");
    f = fopen(creds, "w");
    fputs("{\"mcpdUrl\": \"https://m\", \"token\": \"t\", \"caFile\": \"ca.pem\"}", f);
    fclose(f);
    assert_int_equal(credentials_load(creds, &other, &insecure, err, sizeof err), 0);
    snprintf(want, sizeof want, "%s/ca.pem", dir);
    assert_string_equal(other.ca_file, want);
    /* A different CA is a change of credentials. */
    assert_false(credentials_equal(&cr, &other));
    credentials_release(&cr);
    credentials_release(&other);

    free(cfg);
    free(creds);
    tmpdir_remove(dir);
}

static void test_bad_credentials(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"{", "credentials 'C' line 1, column 1:"},
        {"[]", "credentials 'C' line 1: the top level must be an object"},
        {"{\"token\": \"t\"}", "missing \"mcpdUrl\""},
        {"{\"mcpdUrl\": \"http://m\"}", "missing \"token\""},
        {"{\"mcpdUrl\": \"http://m\",\n \"token\": 5}",
         "line 2: token: must be a non-empty string"},
        {"{\"mcpdUrl\": \"http://m\", \"token\": \"\"}", "token: must be a non-empty string"},
        {"{\"mcpdUrl\": \"http://m\", \"token\": \"a b\"}", "token: must not contain spaces"},
        {"{\"mcpdUrl\": \"mcpd:8080\", \"token\": \"t\"}",
         "mcpdUrl: must start with http:// or https://"},
        {"{\"mcpdUrl\": \"https://m\", \"token\": \"t\", \"caFile\": 3}",
         "caFile: must be the path of a PEM file"},
        {"{\"mcpdUrl\": \"https://m\", \"token\": \"t\", \"caFile\": \"\"}",
         "caFile: must be the path of a PEM file"},
        {NULL, "token: longer than 1024 characters"},
    };
    char long_token[1200];
    int n = snprintf(long_token, sizeof long_token, "{\"mcpdUrl\": \"http://m\", \"token\": \"");
    memset(long_token + n, 'x', 1025);
    snprintf(long_token + n + 1025, sizeof long_token - (size_t)n - 1025, "\"}");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct credentials c;
        char err[512] = "";
        const char *text = cases[i].text ? cases[i].text : long_token;
        int rc = credentials_parse(text, strlen(text), "C", &c, err, sizeof err);
        if (rc != CONFIG_ERR_INVALID || !strstr(err, cases[i].want))
            fail_msg("case %zu: rc %d, message '%s', wanted '%s'", i, rc, err, cases[i].want);
        assert_null(c.mcpd_url);
        assert_null(c.token);
    }
}

static void test_session_file(void **state)
{
    (void)state;
    char *dir = tmpdir_create("mcplocal-session");
    char *path = tmpdir_path(dir, "provider-session");
    char id[SESSION_ID_MAX + 1];
    char err[256];
    assert_int_equal(session_load(path, id, err, sizeof err), CONFIG_ERR_MISSING);
    assert_int_equal(session_store(path, "0123abcd-ef"), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(session_load(path, id, err, sizeof err), 0);
    assert_string_equal(id, "0123abcd-ef");

    FILE *f = fopen(path, "w");
    fputs("has space\n", f);
    fclose(f);
    assert_int_equal(session_load(path, id, err, sizeof err), CONFIG_ERR_INVALID);
    assert_non_null(strstr(err, "does not hold a valid session id"));

    assert_true(session_id_valid("abc"));
    assert_false(session_id_valid(""));
    assert_false(session_id_valid("a\nb"));
    free(path);
    tmpdir_remove(dir);
}

static void test_home(void **state)
{
    (void)state;
    char *h = config_home("/flag", "/env", "/home/u");
    assert_string_equal(h, "/flag");
    free(h);
    h = config_home(NULL, "/env", "/home/u");
    assert_string_equal(h, "/env");
    free(h);
    h = config_home(NULL, "", "/home/u");
    assert_string_equal(h, "/home/u/.mcpctl");
    free(h);
    assert_null(config_home(NULL, NULL, NULL));
}

static void test_initial_status(void **state)
{
    (void)state;
    struct provider_cfg with = {.wake = {.type = WAKE_COMMAND}};
    struct provider_cfg without = {.wake = {.type = WAKE_NONE}};
    /* A recipe and a backend that does not answer: hibernating. */
    assert_string_equal(config_initial_status(&with, false), "hibernating");
    /* A recipe but the backend answers: active. */
    assert_string_equal(config_initial_status(&with, true), "active");
    /* No recipe, even unavailable: active. */
    assert_string_equal(config_initial_status(&without, false), "active");
    assert_string_equal(config_initial_status(&without, true), "active");
}

static void test_jsonloc(void **state)
{
    (void)state;
    const char *t = "{\n \"a\": [\n  1,\n  {\"b\":\n    \"x\"}\n ],\n \"c\": {}\n}";
    size_t n = strlen(t);
    assert_int_equal(jsonloc_line(t, n, ""), 1);
    assert_int_equal(jsonloc_line(t, n, "a"), 2);
    assert_int_equal(jsonloc_line(t, n, "a[0]"), 3);
    assert_int_equal(jsonloc_line(t, n, "a[1]"), 4);
    assert_int_equal(jsonloc_line(t, n, "a[1].b"), 5);
    assert_int_equal(jsonloc_line(t, n, "c"), 7);
    assert_int_equal(jsonloc_line(t, n, "c.missing"), 7); /* the nearest ancestor */
    assert_int_equal(jsonloc_line(t, n, "a[9]"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_config),
        cmocka_unit_test(test_empty_configs),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_bad_credentials),
        cmocka_unit_test(test_session_file),
        cmocka_unit_test(test_home),
        cmocka_unit_test(test_initial_status),
        cmocka_unit_test(test_jsonloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
