#include "cli_support.h"

#include "proc.h"
#include "tmpdir.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

void cli_t_cloexec_all(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int self = dirfd(d);
    for (struct dirent *de = readdir(d); de; de = readdir(d)) {
        int fd = atoi(de->d_name);
        if (fd <= 2 || fd == self)
            continue;
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC))
            fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    closedir(d);
}

int cli_t_run(const char *home, const char *const env[], const char *stdin_data,
              const char *const args[], struct cli_t_result *r)
{
    const char *argv[64];
    const char *envv[64];
    char home_kv[1024];
    size_t n = 0, e = 0;
    argv[n++] = MCPCTL_BIN;
    for (size_t i = 0; args && args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(home_kv, sizeof home_kv, "MCPCTL_HOME=%s", home ? home : "");
    /* Defaults first, each only when env does not set it: the child's
     * getenv() would see the first of two entries. */
    const char *defaults[] = {home_kv, "MCPCTL_URL=", "MCPCTL_TOKEN=", "MCPCTL_CACERT="};
    for (size_t d = 0; d < sizeof defaults / sizeof defaults[0]; d++) {
        size_t klen = strchr(defaults[d], '=') - defaults[d] + 1;
        bool overridden = false;
        for (size_t i = 0; env && env[i]; i++)
            if (strncmp(env[i], defaults[d], klen) == 0)
                overridden = true;
        if (!overridden)
            envv[e++] = defaults[d];
    }
    for (size_t i = 0; env && env[i] && e < 63; i++)
        envv[e++] = env[i];
    envv[e] = NULL;
    memset(r, 0, sizeof *r);
    cli_t_cloexec_all();
    r->code = proc_run(argv, envv, stdin_data, &r->out, &r->err, 60000);
    if (!r->out)
        r->out = strdup("");
    if (!r->err)
        r->err = strdup("");
    return r->code;
}

void cli_t_result_free(struct cli_t_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

int cli_t_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

int cli_t_env_start(struct cli_t_env *e, const char *const mcpd_args[], const char *providers_json)
{
    memset(e, 0, sizeof *e);
    e->env = test_env_start(mcpd_args);
    if (!e->env)
        return -1;
    e->home = tmpdir_path(e->env->dir, "mcpctl-home");
    snprintf(e->url_kv, sizeof e->url_kv, "MCPCTL_URL=%s", e->env->mcpd.url);
    snprintf(e->token_kv, sizeof e->token_kv, "MCPCTL_TOKEN=%s", e->env->mcpd.token);
    if (providers_json) {
        e->pub = fake_publisher_start(e->env->mcpd.url, e->env->mcpd.token, providers_json, NULL);
        if (!e->pub) {
            cli_t_env_stop(e);
            return -1;
        }
    }
    return 0;
}

int cli_t_env_stop(struct cli_t_env *e)
{
    if (e->pub)
        fake_publisher_stop(e->pub);
    e->pub = NULL;
    free(e->home);
    e->home = NULL;
    int rc = e->env ? test_env_stop(e->env) : -1;
    e->env = NULL;
    return rc;
}

int cli_t_run_env(struct cli_t_env *e, const char *stdin_data, const char *const args[],
                  struct cli_t_result *r)
{
    const char *env[] = {e->url_kv, e->token_kv, NULL};
    return cli_t_run(e->home, env, stdin_data, args, r);
}

void cli_t_run_env_expect(struct cli_t_env *e, int want, const char *stdin_data,
                          const char *const args[], struct cli_t_result *r)
{
    cli_t_run_env(e, stdin_data, args, r);
    if (r->code != want)
        fail_msg("exit %d, want %d\nstdout: %s\nstderr: %s", r->code, want, r->out, r->err);
}

int cli_t_closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ---- YAML, through libyaml loaded at run time ---- */

struct yaml_fns {
    int (*parser_initialize)(yaml_parser_t *);
    void (*parser_delete)(yaml_parser_t *);
    void (*parser_set_input_string)(yaml_parser_t *, const unsigned char *, size_t);
    int (*parser_parse)(yaml_parser_t *, yaml_event_t *);
    void (*event_delete)(yaml_event_t *);
};

static int load_libyaml(struct yaml_fns *f)
{
    static void *lib;
    if (!lib)
        lib = dlopen("libyaml-0.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return -1;
    *(void **)&f->parser_initialize = dlsym(lib, "yaml_parser_initialize");
    *(void **)&f->parser_delete = dlsym(lib, "yaml_parser_delete");
    *(void **)&f->parser_set_input_string = dlsym(lib, "yaml_parser_set_input_string");
    *(void **)&f->parser_parse = dlsym(lib, "yaml_parser_parse");
    *(void **)&f->event_delete = dlsym(lib, "yaml_event_delete");
    return f->parser_initialize && f->parser_delete && f->parser_set_input_string &&
                   f->parser_parse && f->event_delete
               ? 0
               : -1;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* YAML 1.2 core schema resolution of a plain scalar. */
static json_t *resolve_plain(const char *s)
{
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
        return json_null();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return json_false();
    const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
    if (all_digits(d))
        return json_integer(strtoll(s, NULL, 10));
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end == '\0' && errno == 0 && strpbrk(s, "0123456789") && !strpbrk(s, "xXnN"))
        return json_real(v);
    return json_string(s);
}

struct yparse {
    struct yaml_fns f;
    yaml_parser_t p;
    char *err;
    size_t errlen;
};

static int next(struct yparse *y, yaml_event_t *ev)
{
    if (!y->f.parser_parse(&y->p, ev)) {
        snprintf(y->err, y->errlen, "yaml: %s at line %lu", y->p.problem ? y->p.problem : "?",
                 (unsigned long)y->p.problem_mark.line + 1);
        return -1;
    }
    return 0;
}

/* Builds the node that starts with ev (consumed). */
static json_t *node(struct yparse *y, yaml_event_t *ev)
{
    json_t *v = NULL;
    yaml_event_t child;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        const char *s = (const char *)ev->data.scalar.value;
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            v = resolve_plain(s);
        else
            v = json_stringn(s, ev->data.scalar.length);
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
        v = json_array();
        for (;;) {
            if (next(y, &child) < 0)
                goto fail;
            if (child.type == YAML_SEQUENCE_END_EVENT) {
                y->f.event_delete(&child);
                break;
            }
            json_t *c = node(y, &child);
            if (!c)
                goto fail;
            json_array_append_new(v, c);
        }
        break;
    case YAML_MAPPING_START_EVENT:
        v = json_object();
        for (;;) {
            if (next(y, &child) < 0)
                goto fail;
            if (child.type == YAML_MAPPING_END_EVENT) {
                y->f.event_delete(&child);
                break;
            }
            if (child.type != YAML_SCALAR_EVENT) {
                y->f.event_delete(&child);
                snprintf(y->err, y->errlen, "yaml: only scalar keys are supported");
                goto fail;
            }
            char *key = strdup((const char *)child.data.scalar.value);
            y->f.event_delete(&child);
            if (next(y, &child) < 0) {
                free(key);
                goto fail;
            }
            json_t *c = node(y, &child);
            if (!c) {
                free(key);
                goto fail;
            }
            json_object_set_new(v, key, c);
            free(key);
        }
        break;
    default:
        snprintf(y->err, y->errlen, "yaml: unexpected event %d", (int)ev->type);
        break;
    }
    y->f.event_delete(ev);
    return v;
fail:
    y->f.event_delete(ev);
    json_decref(v);
    return NULL;
}

json_t *cli_t_yaml_to_json(const char *text, char *err, size_t errlen)
{
    struct yparse y = {.err = err, .errlen = errlen};
    yaml_event_t ev;
    json_t *root = NULL;
    err[0] = '\0';
    if (load_libyaml(&y.f) < 0) {
        snprintf(err, errlen, "cannot load libyaml: %s", dlerror());
        return NULL;
    }
    if (!y.f.parser_initialize(&y.p)) {
        snprintf(err, errlen, "yaml: cannot initialise the parser");
        return NULL;
    }
    y.f.parser_set_input_string(&y.p, (const unsigned char *)text, strlen(text));
    /* stream start, document start, the node, document end, stream end */
    for (;;) {
        if (next(&y, &ev) < 0)
            goto fail;
        if (ev.type == YAML_STREAM_START_EVENT || ev.type == YAML_DOCUMENT_START_EVENT) {
            y.f.event_delete(&ev);
            continue;
        }
        break;
    }
    root = node(&y, &ev);
    if (!root)
        goto fail;
    for (;;) {
        if (next(&y, &ev) < 0)
            goto fail;
        yaml_event_type_t t = ev.type;
        y.f.event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT)
            break;
        if (t != YAML_DOCUMENT_END_EVENT) {
            snprintf(err, errlen, "yaml: more than one document");
            goto fail;
        }
    }
    y.f.parser_delete(&y.p);
    return root;
fail:
    json_decref(root);
    y.f.parser_delete(&y.p);
    return NULL;
}
