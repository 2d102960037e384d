#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define LINE_MAX_BYTES 2048
#define REAP_POLL_MS 100

struct child {
    struct spawner *sp;
    pid_t pid;
    char *tag;
    int pidfd;  /* -1 when exited or unavailable */
    int out_fd; /* -1 once drained */
    bool exited;
    bool detached;
    struct loop_fd pid_w;
    struct loop_fd out_w;
    struct loop_timer reap_timer; /* when there is no pidfd */
    char line[LINE_MAX_BYTES + 1];
    size_t line_len;
    child_exit_fn on_exit;
    void *ud;
    struct child *prev, *next;
};

struct spawner {
    struct loop *loop;
    child_line_fn on_line;
    void *ud;
    struct child *children;
};

struct spawner *spawner_new(struct loop *l, child_line_fn on_line, void *ud)
{
    struct spawner *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = l;
    s->on_line = on_line;
    s->ud = ud;
    return s;
}

static void child_destroy(struct child *c)
{
    struct spawner *s = c->sp;
    loop_fd_remove(s->loop, &c->pid_w);
    loop_fd_remove(s->loop, &c->out_w);
    loop_timer_stop(s->loop, &c->reap_timer);
    if (c->pidfd >= 0)
        close(c->pidfd);
    if (c->out_fd >= 0)
        close(c->out_fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->children = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->tag);
    free(c);
}

void spawner_free(struct spawner *s)
{
    if (!s)
        return;
    struct child *c = s->children;
    while (c) {
        struct child *next = c->next;
        child_destroy(c);
        c = next;
    }
    free(s);
}

static void maybe_free(struct child *c)
{
    if (c->exited && c->out_fd < 0 && c->detached)
        child_destroy(c);
}

static void emit_line(struct child *c)
{
    c->line[c->line_len] = '\0';
    if (c->sp->on_line)
        c->sp->on_line(c->sp->ud, c->tag, c->line);
    c->line_len = 0;
}

/* Reads what the pipe holds now. Returns true once it reached EOF (the fd
 * is then closed). */
static bool drain_output(struct child *c)
{
    char chunk[4096];
    for (;;) {
        ssize_t n = read(c->out_fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] == '\n') {
                emit_line(c);
                continue;
            }
            if (chunk[i] == '\r')
                continue;
            c->line[c->line_len++] = chunk[i];
            if (c->line_len == LINE_MAX_BYTES)
                emit_line(c);
        }
    }
    if (c->line_len > 0)
        emit_line(c);
    loop_fd_remove(c->sp->loop, &c->out_w);
    close(c->out_fd);
    c->out_fd = -1;
    return true;
}

static void on_output(struct loop *l, int fd, short revents, void *ud)
{
    (void)l;
    (void)fd;
    (void)revents;
    struct child *c = ud;
    if (drain_output(c))
        maybe_free(c);
}

/* Reaps the child if it ended. Returns true when it had. */
static bool try_reap(struct child *c)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(c->pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    if (r < 0)
        status = 0x7f00; /* lost (ECHILD): report as exit 127 */
    c->exited = true;
    loop_fd_remove(c->sp->loop, &c->pid_w);
    loop_timer_stop(c->sp->loop, &c->reap_timer);
    if (c->pidfd >= 0) {
        close(c->pidfd);
        c->pidfd = -1;
    }
    /* Whatever the child printed last belongs before its exit is reported. */
    if (c->out_fd >= 0)
        drain_output(c);
    child_exit_fn cb = c->on_exit;
    c->on_exit = NULL;
    if (cb && !c->detached) {
        cb(c->ud, status); /* may detach (and so free) c */
        return true;
    }
    maybe_free(c);
    return true;
}

static void on_pidfd(struct loop *l, int fd, short revents, void *ud)
{
    (void)l;
    (void)fd;
    (void)revents;
    try_reap(ud);
}

static void on_reap_timer(struct loop *l, void *ud)
{
    struct child *c = ud;
    if (!try_reap(c))
        loop_timer_start(l, &c->reap_timer, REAP_POLL_MS);
}

int spawner_run(struct spawner *s, char *const argv[], const char *tag, child_exit_fn on_exit,
                void *ud, struct child **out, char *err, size_t errlen)
{
    *out = NULL;
    int fds[2] = {-1, -1};
    struct child *c = calloc(1, sizeof *c);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    int rc = -1;
    if (!c || !(c->tag = strdup(tag))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    c->sp = s;
    c->pidfd = -1;
    c->out_fd = -1;
    c->on_exit = on_exit;
    c->ud = ud;
    loop_timer_init(&c->reap_timer, on_reap_timer, c);
    if (pipe2(fds, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
        goto out;
    }
    if (posix_spawn_file_actions_init(&fa) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    fa_ok = true;
    if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, fds[1], 2) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    int dflt_sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof dflt_sigs / sizeof dflt_sigs[0]; i++)
        sigaddset(&dflt, dflt_sigs[i]);
    if (posix_spawnattr_init(&attr) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    attr_ok = true;
    short flags = POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (posix_spawnattr_setflags(&attr, flags) != 0 || posix_spawnattr_setpgroup(&attr, 0) != 0 ||
        posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &dflt) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    int e = posix_spawnp(&c->pid, argv[0], &fa, &attr, argv, environ);
    if (e != 0) {
        snprintf(err, errlen, "cannot run '%s': %s", argv[0], strerror(e));
        goto out;
    }
    close(fds[1]);
    fds[1] = -1;
    c->out_fd = fds[0];
    fds[0] = -1;
    fcntl(c->out_fd, F_SETFL, fcntl(c->out_fd, F_GETFL) | O_NONBLOCK);
    loop_fd_add(s->loop, &c->out_w, c->out_fd, CURL_WAIT_POLLIN, on_output, c);
    c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    if (c->pidfd >= 0) {
        fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
        loop_fd_add(s->loop, &c->pid_w, c->pidfd, CURL_WAIT_POLLIN, on_pidfd, c);
    } else {
        loop_timer_start(s->loop, &c->reap_timer, REAP_POLL_MS);
    }
    c->next = s->children;
    if (s->children)
        s->children->prev = c;
    s->children = c;
    *out = c;
    c = NULL;
    rc = 0;
out:
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (c) {
        free(c->tag);
        free(c);
    }
    return rc;
}

void child_detach(struct child *c)
{
    if (!c || c->detached)
        return;
    c->detached = true;
    c->on_exit = NULL;
    maybe_free(c);
}

pid_t child_pid(const struct child *c)
{
    return c->pid;
}
