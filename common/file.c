#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int file_read_all(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = 4096, n = 0;
    char *data = malloc(cap);
    int rc = -1;
    if (!data)
        goto out;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > max + 1) {
                rc = -2;
                goto out;
            }
            char *p = realloc(data, cap * 2);
            if (!p)
                goto out;
            data = p;
            cap *= 2;
        }
        ssize_t r = read(fd, data + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            rc = -2;
            goto out;
        }
    }
    data[n] = '\0';
    *out = data;
    if (len)
        *len = n;
    data = NULL;
    rc = 0;
out:
    free(data);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp)
        return -1;
    snprintf(tmp, plen + 16, "%s.tmpXXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        free(tmp);
        return -1;
    }
    int rc = -1;
    const char *p = data;
    size_t left = len;
    if (fchmod(fd, mode) < 0)
        goto fail;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    rc = 0;
    goto out;
fail : {
    int saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = saved;
}
out:
    free(tmp);
    return rc;
}
