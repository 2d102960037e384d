#include "testca.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define OPENSSL "openssl"
#define ARGS_MAX 32
#define OUTPUT_MAX 4096
#define VALID_DAYS "7"

/* Runs `openssl args...` (args NULL-terminated, without argv[0]), found on
 * PATH, with stdin from /dev/null. 0 when it exits 0; else -1 with the
 * command's output on stderr. */
static int run_openssl(const char *const args[])
{
    const char *argv[ARGS_MAX + 2] = {OPENSSL};
    size_t n = 1;
    for (size_t i = 0; args[i]; i++) {
        if (n > ARGS_MAX) {
            fprintf(stderr, "testca: too many arguments for openssl %s\n", args[0]);
            return -1;
        }
        argv[n++] = args[i];
    }
    argv[n] = NULL;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        fprintf(stderr, "testca: pipe: %s\n", strerror(errno));
        return -1;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t pid = devnull < 0 ? -1 : fork();
    if (pid == 0) {
        dup2(devnull, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        /* Leave the test's sockets and files behind. */
        syscall(SYS_close_range, 3U, ~0U, 0U);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "cannot run '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int saved = errno;
    if (devnull >= 0)
        close(devnull);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        fprintf(stderr, "testca: cannot start openssl: %s\n", strerror(saved));
        return -1;
    }

    /* Read to the end so the child never blocks on a full pipe; keep the
     * start, which says what went wrong. */
    char out[OUTPUT_MAX];
    size_t len = 0;
    for (;;) {
        char chunk[1024];
        ssize_t r = read(fds[0], chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t take = (size_t)r < sizeof out - 1 - len ? (size_t)r : sizeof out - 1 - len;
        memcpy(out + len, chunk, take);
        len += take;
    }
    out[len] = '\0';
    close(fds[0]);

    int status = 0;
    pid_t w;
    do {
        w = waitpid(pid, &status, 0);
    } while (w < 0 && errno == EINTR);
    if (w == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char how[32] = "no exit status";
    if (w == pid && WIFEXITED(status))
        snprintf(how, sizeof how, "exit %d", WEXITSTATUS(status));
    else if (w == pid && WIFSIGNALED(status))
        snprintf(how, sizeof how, "signal %d", WTERMSIG(status));
    fprintf(stderr, "testca: 'openssl %s' failed (%s):\n%s\n", args[0], how, out);
    return -1;
}

/* A new EC P-256 private key at path, mode 0600. */
static int make_key(const char *path)
{
    const char *args[] = {"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-out",    path,         NULL};
    if (run_openssl(args) < 0)
        return -1;
    if (chmod(path, 0600) < 0) {
        fprintf(stderr, "testca: chmod '%s': %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* A self-signed CA certificate for key. -config /dev/null keeps the
 * system's openssl.cnf (its default extensions) out of the result. */
static int make_ca(const char *key, const char *subject, const char *cert)
{
    const char *args[] = {
        "req",
        "-batch",
        "-new",
        "-x509",
        "-config",
        "/dev/null",
        "-key",
        key,
        "-sha256",
        "-days",
        VALID_DAYS,
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "subjectKeyIdentifier=hash",
        "-out",
        cert,
        NULL,
    };
    return run_openssl(args);
}

/* A server certificate for key, signed by ca_cert/ca_key. */
static int make_server(const char *key, const char *ca_cert, const char *ca_key, const char *cert)
{
    const char *args[] = {
        "req",
        "-batch",
        "-new",
        "-x509",
        "-config",
        "/dev/null",
        "-key",
        key,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-sha256",
        "-days",
        VALID_DAYS,
        "-subj",
        "/CN=localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-addext",
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
        "-out",
        cert,
        NULL,
    };
    return run_openssl(args);
}

static bool join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX) {
        fprintf(stderr, "testca: path '%s/%s' is too long\n", dir, name);
        return false;
    }
    return true;
}

int testca_make(const char *dir, struct testca *out)
{
    char ca_key[PATH_MAX], other_key[PATH_MAX];
    memset(out, 0, sizeof *out);
    if (!join(out->ca, dir, "ca.pem") || !join(ca_key, dir, "ca.key") ||
        !join(out->cert, dir, "server.pem") || !join(out->key, dir, "server.key") ||
        !join(out->other_ca, dir, "other-ca.pem") || !join(other_key, dir, "other-ca.key"))
        return -1;
    if (make_key(ca_key) < 0 || make_ca(ca_key, "/CN=mcp test CA", out->ca) < 0)
        return -1;
    if (make_key(other_key) < 0 ||
        make_ca(other_key, "/CN=mcp unrelated test CA", out->other_ca) < 0)
        return -1;
    if (make_key(out->key) < 0 || make_server(out->key, out->ca, ca_key, out->cert) < 0)
        return -1;
    return 0;
}
