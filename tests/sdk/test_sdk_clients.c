/* The official SDKs against mcpd: the real mcpd, the real mcplocal and the
 * fake backend (answering like the real APIs), driven by sdk_check.mjs
 * with the `openai`, `@anthropic-ai/sdk`, `ai` and `@ai-sdk/openai` npm
 * packages.
 *
 * The packages are installed at test time (npm install, from
 * tests/sdk/package.json and its lock file) into SDK_WORK_DIR in the build
 * tree, and reused while those files stay the same. Node.js 20 or later
 * and npm must be on PATH: without them the test fails, it never skips. */
#include "fake_backend.h"
#include "mcpd_harness.h"
#include "proc.h"
#include "test_env.h"
#include "tmpdir.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAIT_MS 15000
#define NPM_TIMEOUT_MS 240000
#define NODE_TIMEOUT_MS 60000
#define CHUNKS 3

/* The whole file as a new string; NULL when it cannot be read. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t n;
    while (out && (n = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *p = realloc(out, cap * 2);
            if (!p) {
                free(out);
                out = NULL;
                break;
            }
            out = p;
            cap *= 2;
        }
    }
    fclose(f);
    if (out)
        out[len] = '\0';
    return out;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

static char *join(const char *dir, const char *name)
{
    char *out = NULL;
    if (asprintf(&out, "%s/%s", dir, name) < 0)
        abort();
    return out;
}

/* Copies SDK_SOURCE_DIR/name to SDK_WORK_DIR/name. */
static int copy_in(const char *name)
{
    char *src = join(SDK_SOURCE_DIR, name), *dst = join(SDK_WORK_DIR, name);
    char *text = read_file(src);
    int rc = text ? write_file(dst, text) : -1;
    if (rc < 0)
        fprintf(stderr, "FAIL: cannot copy %s to %s: %s\n", src, dst, strerror(errno));
    free(text);
    free(src);
    free(dst);
    return rc;
}

static bool exists(const char *dir, const char *name)
{
    char *p = join(dir, name);
    bool ok = access(p, F_OK) == 0;
    free(p);
    return ok;
}

/* Node.js 20 or later, and npm. */
static int check_node(const char *node, const char *npm)
{
    const char *argv[] = {node, "-e",
                          "const v = process.versions.node; console.log(v);"
                          "process.exit(Number(v.split('.')[0]) >= 20 ? 0 : 1)",
                          NULL};
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, NULL, NULL, &out, &err, 20000);
    if (rc != 0)
        fprintf(stderr, "FAIL: %s is Node.js %s%s; the SDK test needs 20 or later\n", node,
                out ? out : "", err ? err : "");
    else
        printf("node %s", out);
    free(out);
    free(err);
    if (rc != 0)
        return -1;
    const char *nargv[] = {npm, "--version", NULL};
    rc = proc_run(nargv, NULL, NULL, &out, &err, 30000);
    if (rc != 0)
        fprintf(stderr, "FAIL: %s --version exited %d: %s%s\n", npm, rc, out ? out : "",
                err ? err : "");
    else
        printf("npm %s", out);
    free(out);
    free(err);
    return rc == 0 ? 0 : -1;
}

/* npm install into SDK_WORK_DIR unless an install of the same package.json
 * and lock file is already there. */
static int install_packages(const char *npm)
{
    if (mkdir(SDK_WORK_DIR, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "FAIL: cannot create %s: %s\n", SDK_WORK_DIR, strerror(errno));
        return -1;
    }
    char *pkg = read_file(SDK_SOURCE_DIR "/package.json");
    char *lock = read_file(SDK_SOURCE_DIR "/package-lock.json");
    if (!pkg) {
        fprintf(stderr, "FAIL: cannot read %s/package.json\n", SDK_SOURCE_DIR);
        free(lock);
        return -1;
    }
    char *want = NULL;
    if (asprintf(&want, "%s\n%s", pkg, lock ? lock : "") < 0)
        abort();
    free(pkg);
    free(lock);
    char *stamp_path = join(SDK_WORK_DIR, ".installed");
    char *have = read_file(stamp_path);
    int rc = 0;
    if (have && strcmp(have, want) == 0 &&
        exists(SDK_WORK_DIR, "node_modules/openai/package.json") &&
        exists(SDK_WORK_DIR, "node_modules/@anthropic-ai/sdk/package.json") &&
        exists(SDK_WORK_DIR, "node_modules/ai/package.json") &&
        exists(SDK_WORK_DIR, "node_modules/@ai-sdk/openai/package.json")) {
        printf("reusing the npm packages in %s\n", SDK_WORK_DIR);
    } else {
        unlink(stamp_path);
        rc = copy_in("package.json");
        if (rc == 0 && exists(SDK_SOURCE_DIR, "package-lock.json"))
            rc = copy_in("package-lock.json");
        if (rc == 0) {
            printf("npm install --prefix %s\n", SDK_WORK_DIR);
            fflush(stdout);
            const char *argv[] = {npm,          "install",   "--prefix", SDK_WORK_DIR,
                                  "--no-audit", "--no-fund", NULL};
            const char *env[] = {"npm_config_update_notifier=false", NULL};
            char *out = NULL, *err = NULL;
            rc = proc_run(argv, env, NULL, &out, &err, NPM_TIMEOUT_MS);
            if (rc != 0)
                fprintf(stderr, "FAIL: npm install exited %d (-1: timed out after %d s)\n%s%s\n",
                        rc, NPM_TIMEOUT_MS / 1000, out ? out : "", err ? err : "");
            else
                printf("%s", out ? out : "");
            free(out);
            free(err);
        }
        if (rc == 0 && write_file(stamp_path, want) < 0)
            fprintf(stderr, "warning: cannot write %s\n", stamp_path);
    }
    free(have);
    free(want);
    free(stamp_path);
    return rc == 0 ? 0 : -1;
}

struct stack {
    struct test_env *env;
    struct fake_backend *fb;
    char *home;
    struct proc *p;
};

/* mcpd, the fake backend and mcplocal publishing "laptop". */
static int stack_start(struct stack *s)
{
    s->env = test_env_start(NULL);
    s->fb = fake_backend_start();
    if (!s->env || !s->fb) {
        fprintf(stderr, "FAIL: cannot start mcpd or the fake backend\n");
        return -1;
    }
    fake_backend_set_realistic(s->fb, true);
    fake_backend_set_stream(s->fb, CHUNKS, 2);
    s->home = tmpdir_create("sdk-clients");
    char text[2048];
    snprintf(text, sizeof text, "{\"mcpdUrl\": \"%s\", \"token\": \"%s\"}", s->env->mcpd.url,
             s->env->mcpd.token);
    tmpdir_write(s->home, "credentials", text, 0600);
    snprintf(text, sizeof text,
             "{\"llm\": {\"providers\": [{\"name\": \"laptop\", \"type\": \"openai\",\n"
             "  \"model\": \"served-model\", \"url\": \"%s\", \"publish\": true}]}}\n",
             fake_backend_url(s->fb));
    tmpdir_write(s->home, "config.json", text, 0644);
    const char *argv[] = {MCPLOCAL_BIN, "--home", s->home, NULL};
    s->p = proc_start(argv, NULL, s->home);
    if (!s->p || proc_wait_for(s->p, "stream up", WAIT_MS) != 0 ||
        test_wait_status(s->env, "laptop", "active", WAIT_MS) != 0) {
        fprintf(stderr, "FAIL: mcplocal did not publish 'laptop'\n");
        if (s->p)
            proc_dump(s->p);
        return -1;
    }
    return 0;
}

static int stack_stop(struct stack *s)
{
    int rc = 0;
    if (s->p) {
        proc_signal(s->p, SIGTERM);
        if (proc_wait_exit(s->p, WAIT_MS) != 0) {
            fprintf(stderr, "mcplocal did not exit cleanly\n");
            rc = -1;
        }
        proc_free(s->p);
    }
    fake_backend_stop(s->fb);
    if (s->env && test_env_stop(s->env) != 0) {
        fprintf(stderr, "mcpd did not exit cleanly\n");
        rc = -1;
    }
    tmpdir_remove(s->home);
    return rc;
}

/* Runs sdk_check.mjs against the stack; 0 when every check passed. */
static int run_checks(const char *node, struct stack *s)
{
    if (copy_in("sdk_check.mjs") < 0)
        return -1;
    char *script = join(SDK_WORK_DIR, "sdk_check.mjs");
    char url[128], token[256], chunks[32];
    snprintf(url, sizeof url, "MCPD_URL=%s", s->env->mcpd.url);
    snprintf(token, sizeof token, "TOKEN=%s", s->env->mcpd.token);
    snprintf(chunks, sizeof chunks, "CHUNKS=%d", CHUNKS);
    const char *env[] = {url, token, "MODEL=laptop", chunks, NULL};
    const char *argv[] = {node, script, NULL};
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, env, NULL, &out, &err, NODE_TIMEOUT_MS);
    printf("%s", out ? out : "");
    if (err && *err)
        fprintf(stderr, "%s", err);
    if (rc != 0)
        fprintf(stderr, "FAIL: node %s exited %d (-1: timed out after %d s)\n", script, rc,
                NODE_TIMEOUT_MS / 1000);
    free(out);
    free(err);
    free(script);
    if (rc != 0)
        return -1;
    /* The SDKs' calls went to the backend's own routes. */
    static const char *const paths[] = {"/v1/chat/completions", "/v1/embeddings", "/v1/completions",
                                        "/v1/responses", "/v1/messages"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (fake_backend_count(s->fb, paths[i]) == 0) {
            fprintf(stderr, "FAIL: the backend got nothing at %s\n", paths[i]);
            rc = -1;
        }
    }
    return rc;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    char *node = proc_find_program("node"), *npm = proc_find_program("npm");
    if (!node || !npm) {
        fprintf(stderr,
                "FAIL: %s not found on PATH (%s): this test runs the official OpenAI and "
                "Anthropic SDKs and the Vercel AI SDK and needs Node.js 20 or later with npm\n",
                !node && !npm ? "node and npm"
                : !node       ? "node"
                              : "npm",
                getenv("PATH") ? getenv("PATH") : "PATH unset");
        free(node);
        free(npm);
        return 1;
    }
    int rc = check_node(node, npm) == 0 && install_packages(npm) == 0 ? 0 : 1;
    if (rc == 0) {
        struct stack s = {0};
        rc = stack_start(&s) == 0 && run_checks(node, &s) == 0 ? 0 : 1;
        if (rc != 0 && s.env) {
            fprintf(stderr, "---- mcpd's log ----\n");
            proc_dump(s.env->mcpd.proc);
            if (s.p) {
                fprintf(stderr, "---- mcplocal's log ----\n");
                proc_dump(s.p);
            }
        }
        if (stack_stop(&s) != 0)
            rc = 1;
    }
    free(node);
    free(npm);
    printf("%s\n", rc == 0 ? "PASS: the OpenAI, Anthropic and Vercel AI SDKs work against mcpd"
                           : "the SDK test FAILED");
    return rc;
}
