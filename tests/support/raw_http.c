#include "raw_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int raw_connect(struct raw_conn *c, int port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

void raw_close(struct raw_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

int raw_send(struct raw_conn *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receives what is there, waiting until deadline: 1 when bytes came, 0 at
 * EOF, or RAW_TIMEOUT / RAW_BROKEN. */
static int fill(struct raw_conn *c, int64_t deadline)
{
    if (c->eof)
        return 0;
    if (c->reset)
        return RAW_BROKEN;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left < 0)
            left = 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return RAW_TIMEOUT;
        if (c->cap - c->len < 16384) {
            size_t cap = c->cap * 2 + 65536;
            char *nb = realloc(c->buf, cap + 1);
            if (!nb)
                return RAW_BROKEN;
            c->buf = nb;
            c->cap = cap;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        if (n < 0) {
            c->reset = true;
            return RAW_BROKEN;
        }
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        return 1;
    }
}

/* Waits until at least want bytes are buffered. */
static enum raw_result need(struct raw_conn *c, size_t want, int64_t deadline)
{
    while (c->len < want) {
        int rc = fill(c, deadline);
        if (rc == 0)
            return RAW_BROKEN;
        if (rc < 0)
            return (enum raw_result)rc;
    }
    return RAW_OK;
}

/* Offset just past the first "\r\n" at or after from, reading more as
 * needed; 0 on failure (*err says why). */
static size_t line_end(struct raw_conn *c, size_t from, int64_t deadline, enum raw_result *err)
{
    for (;;) {
        if (c->len > from) {
            const char *p = memmem(c->buf + from, c->len - from, "\r\n", 2);
            if (p)
                return (size_t)(p - c->buf) + 2;
        }
        if (c->len - from > HEAD_MAX) {
            *err = RAW_BROKEN;
            return 0;
        }
        int rc = fill(c, deadline);
        if (rc <= 0) {
            *err = rc == 0 ? RAW_BROKEN : (enum raw_result)rc;
            return 0;
        }
    }
}

static void consume(struct raw_conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = '\0';
}

static int append(struct raw_resp *r, const char *data, size_t n)
{
    if (n == 0)
        return 0;
    char *nb = realloc(r->body, r->body_len + n + 1);
    if (!nb)
        return -1;
    r->body = nb;
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

/* Decodes a chunked body that starts at c->buf[0]; consumes it. */
static enum raw_result read_chunked(struct raw_conn *c, struct raw_resp *r, int64_t deadline)
{
    enum raw_result err = RAW_BROKEN;
    for (;;) {
        size_t end = line_end(c, 0, deadline, &err);
        if (!end)
            return err;
        char *stop;
        unsigned long size = strtoul(c->buf, &stop, 16);
        if (stop == c->buf || (*stop != ';' && *stop != '\r'))
            return RAW_BROKEN;
        if (size == 0) {
            /* Trailer fields, then an empty line. */
            for (;;) {
                size_t next = line_end(c, end, deadline, &err);
                if (!next)
                    return err;
                bool empty = next == end + 2;
                end = next;
                if (empty)
                    break;
            }
            consume(c, end);
            return RAW_OK;
        }
        if ((err = need(c, end + size + 2, deadline)) != RAW_OK)
            return err;
        if (memcmp(c->buf + end + size, "\r\n", 2) != 0)
            return RAW_BROKEN;
        if (append(r, c->buf + end, size) < 0)
            return RAW_BROKEN;
        consume(c, end + size + 2);
    }
}

static enum raw_result read_response(struct raw_conn *c, struct raw_resp *r, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    const char *eoh;
    while (!(eoh = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL)) {
        if (c->len > HEAD_MAX)
            return RAW_BROKEN;
        int rc = fill(c, deadline);
        if (rc == 0)
            return c->len == 0 ? RAW_CLOSED : RAW_BROKEN;
        if (rc < 0)
            return (enum raw_result)rc;
    }
    size_t head_len = (size_t)(eoh - c->buf) + 2;
    r->head = strndup(c->buf, head_len);
    r->body = calloc(1, 1);
    if (!r->head || !r->body)
        return RAW_BROKEN;
    consume(c, head_len + 2);

    int minor;
    char sp;
    if (sscanf(r->head, "HTTP/1.%1d %3d%c", &minor, &r->status, &sp) != 3 || sp != ' ' ||
        r->status < 100 || r->status > 599)
        return RAW_BROKEN;
    snprintf(r->version, sizeof r->version, "HTTP/1.%d", minor);

    if (r->status < 200 || r->status == 204 || r->status == 304)
        return RAW_OK;
    if (raw_resp_has_token(r, "Transfer-Encoding", "chunked")) {
        r->chunked = true;
        return read_chunked(c, r, deadline);
    }
    char *cl = raw_resp_header(r, "Content-Length");
    if (cl) {
        char *stop;
        unsigned long long n = strtoull(cl, &stop, 10);
        bool ok = *cl && !*stop;
        free(cl);
        if (!ok)
            return RAW_BROKEN;
        enum raw_result err = need(c, (size_t)n, deadline);
        if (err != RAW_OK || append(r, c->buf, (size_t)n) < 0)
            return err != RAW_OK ? err : RAW_BROKEN;
        consume(c, (size_t)n);
        return RAW_OK;
    }
    /* Neither: the body runs until the server closes. */
    for (;;) {
        int rc = fill(c, deadline);
        if (rc < 0)
            return (enum raw_result)rc;
        if (rc == 0)
            break;
    }
    if (append(r, c->buf ? c->buf : "", c->len) < 0)
        return RAW_BROKEN;
    consume(c, c->len);
    return RAW_OK;
}

enum raw_result raw_read_response(struct raw_conn *c, struct raw_resp *r, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    enum raw_result rc = read_response(c, r, timeout_ms);
    if (rc != RAW_OK)
        raw_resp_free(r);
    return rc;
}

void raw_resp_free(struct raw_resp *r)
{
    free(r->head);
    free(r->body);
    r->head = r->body = NULL;
}

char *raw_resp_header(const struct raw_resp *r, const char *name)
{
    if (!r->head)
        return NULL;
    size_t nlen = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line && line[2]) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1, *e = end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            return strndup(v, (size_t)(e - v));
        }
        line = end;
    }
    return NULL;
}

bool raw_resp_has_token(const struct raw_resp *r, const char *name, const char *token)
{
    char *v = raw_resp_header(r, name);
    bool found = false;
    char *save = NULL;
    for (char *t = v ? strtok_r(v, ",", &save) : NULL; t && !found;
         t = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*t))
            t++;
        size_t n = strlen(t);
        while (n > 0 && isspace((unsigned char)t[n - 1]))
            n--;
        found = n == strlen(token) && strncasecmp(t, token, n) == 0;
    }
    free(v);
    return found;
}

enum raw_result raw_read_until(struct raw_conn *c, const char *needle, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    size_t nlen = strlen(needle);
    while (!(c->len && memmem(c->buf, c->len, needle, nlen))) {
        int rc = fill(c, deadline);
        if (rc == 0)
            return RAW_CLOSED;
        if (rc < 0)
            return (enum raw_result)rc;
    }
    return RAW_OK;
}

enum raw_result raw_wait_closed(struct raw_conn *c, int timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    if (c->len > 0)
        return RAW_BROKEN;
    int rc = fill(c, deadline);
    if (rc == 0)
        return RAW_OK;
    return rc == RAW_TIMEOUT ? RAW_TIMEOUT : RAW_BROKEN;
}
