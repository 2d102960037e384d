/*
 * mcplocal - publishes local OpenAI-compatible model servers to mcpd and
 * serves the tasks mcpd sends for them. See docs/mcplocal.md.
 *
 * main owns the process concerns: arguments, the timing knobs read from the
 * environment, signals (blocked, and read from a signalfd on the event loop,
 * so none interrupts anything), and the loop that runs until the agent has
 * finished.
 */
#include "agent.h"
#include "config.h"
#include "log.h"
#include "loop.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

const char *mcplocal_version(void);

static int sig_fd = -1;

/* SIGTERM and SIGINT shut down, SIGHUP reloads. */
static void on_signals(struct loop *l, int fd, short revents, void *ud)
{
    (void)l;
    (void)revents;
    struct agent *a = ud;
    bool term = false, hup = false;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP)
            hup = true;
        else
            term = true;
    }
    if (term)
        agent_shutdown(a);
    if (hup)
        agent_reload(a);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mcplocal [--home DIR] [--log-level debug|info|warn|error]\n"
               "       mcplocal --help | --version\n"
               "\n"
               "Publishes the local model servers marked \"publish\": true in DIR/config.json\n"
               "to the mcpd named in DIR/credentials, and serves the tasks mcpd sends.\n"
               "DIR is --home, else $MCPCTL_HOME, else ~/.mcpctl. SIGHUP re-reads the files.\n");
}

/* Reads a non-negative millisecond knob from the environment. */
static int env_ms(const char *name, int64_t *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || !end || *end || n < 0) {
        fprintf(stderr, "mcplocal: %s='%s' is not a whole number of milliseconds\n", name, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int read_knobs(struct agent_opts *o)
{
    int64_t seed = 0;
    const char *seed_s = getenv("MCPLOCAL_BACKOFF_SEED");
    if (env_ms("MCPLOCAL_BACKOFF_MIN_MS", &o->backoff_min_ms) < 0 ||
        env_ms("MCPLOCAL_BACKOFF_MAX_MS", &o->backoff_max_ms) < 0 ||
        env_ms("MCPLOCAL_HEALTHY_MS", &o->healthy_ms) < 0 ||
        env_ms("MCPLOCAL_WAKE_POLL_FIRST_MS", &o->wake_poll_first_ms) < 0 ||
        env_ms("MCPLOCAL_WAKE_POLL_MS", &o->wake_poll_ms) < 0 ||
        env_ms("MCPLOCAL_CHECK_TIMEOUT_MS", &o->check_timeout_ms) < 0 ||
        env_ms("MCPLOCAL_SHUTDOWN_GRACE_MS", &o->shutdown_grace_ms) < 0 ||
        env_ms("MCPLOCAL_BACKOFF_SEED", &seed) < 0)
        return -1;
    if (seed_s && *seed_s) {
        o->seed = (uint64_t)seed;
        o->seeded = true;
    }
    if (o->backoff_min_ms < 1)
        o->backoff_min_ms = 1;
    if (o->backoff_max_ms < o->backoff_min_ms)
        o->backoff_max_ms = o->backoff_min_ms;
    if (o->check_timeout_ms < 1)
        o->check_timeout_ms = 1;
    return 0;
}

/* Blocks the signals mcplocal handles (before any thread exists, so every
 * thread inherits the mask) and opens the signalfd that reports them.
 * Spawned wake commands get an empty mask and default handlers (child.c). */
static int install_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int main(int argc, char **argv)
{
    const char *home_flag = NULL;
    log_set_program("mcplocal");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--home") == 0 && i + 1 < argc) {
            home_flag = argv[++i];
        } else if (strncmp(argv[i], "--home=", 7) == 0) {
            home_flag = argv[i] + 7;
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            enum log_level lv;
            if (log_level_parse(argv[++i], &lv) < 0) {
                fprintf(stderr, "mcplocal: unknown log level '%s'\n", argv[i]);
                return 2;
            }
            log_set_level(lv);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("mcplocal %s\n", mcplocal_version());
            return 0;
        } else {
            fprintf(stderr, "mcplocal: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    struct agent_opts o;
    agent_opts_defaults(&o);
    if (read_knobs(&o) < 0)
        return 2;
    char *home = config_home(home_flag, getenv("MCPCTL_HOME"), getenv("HOME"));
    if (!home) {
        fprintf(stderr, "mcplocal: no home directory: pass --home DIR or set MCPCTL_HOME\n");
        return 2;
    }
    o.home = home;

    int rc = 1;
    struct loop *loop = NULL;
    struct agent *a = NULL;
    struct loop_fd sig_w;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("cannot initialise libcurl");
        goto out;
    }
    if (install_signals() < 0) {
        log_error("cannot install signal handlers: %s", strerror(errno));
        goto out;
    }
    loop = loop_new();
    a = loop ? agent_new(loop, &o) : NULL;
    if (!a) {
        log_error("out of memory");
        goto out;
    }
    loop_fd_add(loop, &sig_w, sig_fd, CURL_WAIT_POLLIN, on_signals, a);
    log_info("mcplocal %s starting (home '%s')", mcplocal_version(), home);
    if (agent_start(a) < 0)
        goto out;
    while (!agent_finished(a)) {
        if (loop_run_once(loop, 60000) < 0) {
            log_error("the event loop failed");
            goto out;
        }
    }
    rc = 0;
out:
    agent_free(a);
    loop_free(loop);
    curl_global_cleanup();
    free(home);
    return rc;
}
