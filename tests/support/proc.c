#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

extern char **environ;

struct proc {
    pid_t pid;
    int pidfd;
    int out_fd;
    int exited;
    int status;
    pthread_t reader;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;
    size_t len, cap;
    int eof;
    char name[64]; /* the program's file name, for reports */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char **build_env(const char *const extra[])
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        for (size_t j = 0; j < m; j++)
            if (strncmp(extra[j], environ[i], klen) == 0 && extra[j][klen] == '=')
                overridden = 1;
        if (!overridden)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

static pid_t spawn(const char *const argv[], const char *const env[], const char *cwd, int in_fd,
                   int out_fd, int err_fd)
{
    char **envp = build_env(env);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(in_fd, 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        /* libcurl's sockets are not close-on-exec: a child must not keep
         * a test's connections (a control stream, say) open. */
        syscall(SYS_close_range, 3U, ~0U, 0U);
        if (cwd && chdir(cwd) < 0)
            _exit(126);
        execve(argv[0], (char *const *)argv, envp);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    free(envp);
    return pid;
}

static void *reader_main(void *arg)
{
    struct proc *p = arg;
    char chunk[4096];
    for (;;) {
        ssize_t r = read(p->out_fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        pthread_mutex_lock(&p->mu);
        if (r <= 0) {
            p->eof = 1;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        if (p->len + (size_t)r + 1 > p->cap) {
            size_t cap = p->cap ? p->cap : 8192;
            while (cap < p->len + (size_t)r + 1)
                cap *= 2;
            p->text = realloc(p->text, cap);
            p->cap = cap;
        }
        memcpy(p->text + p->len, chunk, (size_t)r);
        p->len += (size_t)r;
        p->text[p->len] = '\0';
        if (getenv("TEST_ECHO"))
            fwrite(chunk, 1, (size_t)r, stderr);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

struct proc *proc_start(const char *const argv[], const char *const env[], const char *cwd)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return NULL;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct proc *p = calloc(1, sizeof *p);
    const char *slash = strrchr(argv[0], '/');
    snprintf(p->name, sizeof p->name, "%s", slash ? slash + 1 : argv[0]);
    p->pid = spawn(argv, env, cwd, devnull, fds[1], fds[1]);
    close(devnull);
    close(fds[1]);
    if (p->pid < 0) {
        close(fds[0]);
        free(p);
        return NULL;
    }
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    p->out_fd = fds[0];
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_create(&p->reader, NULL, reader_main, p);
    return p;
}

static int count_occurrences(const char *text, const char *needle)
{
    int n = 0;
    if (!text)
        return 0;
    for (const char *s = strstr(text, needle); s; s = strstr(s + 1, needle))
        n++;
    return n;
}

int proc_wait_for_nth(struct proc *p, const char *needle, int count, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (count_occurrences(p->text, needle) >= count) {
            rc = 0;
            break;
        }
        if (p->eof)
            break;
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (left < 50 ? left : 50) * 1000000LL;
        ts.tv_sec += ns / 1000000000LL;
        ts.tv_nsec = ns % 1000000000LL;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int proc_wait_for(struct proc *p, const char *needle, int timeout_ms)
{
    return proc_wait_for_nth(p, needle, 1, timeout_ms);
}

char *proc_output(struct proc *p)
{
    pthread_mutex_lock(&p->mu);
    char *copy = strdup(p->text ? p->text : "");
    pthread_mutex_unlock(&p->mu);
    return copy;
}

pid_t proc_pid(const struct proc *p)
{
    return p->pid;
}

int proc_signal(struct proc *p, int sig)
{
    if (p->exited)
        return -1;
    return kill(p->pid, sig);
}

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

int proc_wait_exit(struct proc *p, int timeout_ms)
{
    if (p->exited)
        return decode_status(p->status);
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    if (p->pidfd >= 0) {
        int r;
        do {
            r = poll(&pfd, 1, timeout_ms);
        } while (r < 0 && errno == EINTR);
        if (r == 0)
            return -1;
    }
    if (waitpid(p->pid, &p->status, 0) != p->pid)
        return -1;
    p->exited = 1;
    /* Let the reader take in the last bytes the program wrote, so the
     * transcript is complete once this returns (bounded: a descendant may
     * still hold the pipe open). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    pthread_mutex_lock(&p->mu);
    while (!p->eof)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) != 0)
            break;
    pthread_mutex_unlock(&p->mu);
    return decode_status(p->status);
}

void proc_free(struct proc *p)
{
    if (!p)
        return;
    if (!p->exited) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
        p->exited = 1;
    }
    pthread_join(p->reader, NULL);
    close(p->out_fd);
    if (p->pidfd >= 0)
        close(p->pidfd);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->text);
    free(p);
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

char *proc_find_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    char *copy = strdup(path), *save = NULL;
    char *found = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char *cand = NULL;
        if (asprintf(&cand, "%s/%s", *dir ? dir : ".", name) < 0)
            break;
        if (access(cand, X_OK) == 0)
            found = cand;
        else
            free(cand);
    }
    free(copy);
    return found;
}

int proc_run(const char *const argv[], const char *const env[], const char *stdin_data, char **out,
             char **err, int timeout_ms)
{
    int in[2], o[2], e[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = spawn(argv, env, NULL, in[0], o[1], e[1]);
    close(in[0]);
    close(o[1]);
    close(e[1]);
    signal(SIGPIPE, SIG_IGN);
    const char *wp = stdin_data ? stdin_data : "";
    size_t wleft = strlen(wp);
    if (wleft == 0) {
        close(in[1]);
        in[1] = -1;
    }
    char *obuf = calloc(1, 1), *ebuf = calloc(1, 1);
    size_t olen = 0, elen = 0;
    int open_fds = 2;
    long long deadline = now_ms() + timeout_ms;
    while (open_fds > 0) {
        struct pollfd pfd[3] = {{o[0], POLLIN, 0}, {e[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
        long long left = deadline - now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            break;
        }
        if (poll(pfd, 3, (int)left) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd >= 0 && (pfd[i].revents & (POLLIN | POLLHUP))) {
                char chunk[4096];
                ssize_t r = read(pfd[i].fd, chunk, sizeof chunk);
                if (r <= 0) {
                    close(pfd[i].fd);
                    if (i == 0)
                        o[0] = -1;
                    else
                        e[0] = -1;
                    open_fds--;
                } else if (i == 0) {
                    append(&obuf, &olen, chunk, (size_t)r);
                } else {
                    append(&ebuf, &elen, chunk, (size_t)r);
                }
            }
        }
        if (in[1] >= 0 && (pfd[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(in[1], wp, wleft);
            if (w > 0) {
                wp += w;
                wleft -= (size_t)w;
            }
            if (w < 0 || wleft == 0) {
                close(in[1]);
                in[1] = -1;
            }
        }
    }
    if (in[1] >= 0)
        close(in[1]);
    if (o[0] >= 0)
        close(o[0]);
    if (e[0] >= 0)
        close(e[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (out)
        *out = obuf;
    else
        free(obuf);
    if (err)
        *err = ebuf;
    else
        free(ebuf);
    return decode_status(status);
}

void proc_dump(struct proc *p)
{
    char *log = proc_output(p);
    fprintf(stderr, "---- output of %s ----\n%s----\n", p->name, log ? log : "");
    free(log);
}

void proc_expect(struct proc *p, const char *needle, int count, int timeout_ms)
{
    if (proc_wait_for_nth(p, needle, count, timeout_ms) == 0)
        return;
    proc_dump(p);
    fail_msg("never logged '%s' (%d time(s) within %d ms)", needle, count, timeout_ms);
}

int proc_stop(struct proc *p, int timeout_ms)
{
    if (!p)
        return 0;
    proc_signal(p, SIGTERM);
    int rc = proc_wait_exit(p, timeout_ms);
    if (rc != 0)
        proc_dump(p);
    proc_free(p);
    return rc;
}
