/*
 * raw_http.h - HTTP/1.1 on a bare socket, for tests that pin down how a
 * server frames its exchanges: the bytes of a request go out exactly as the
 * test wrote them (in one write, or split however it likes), and responses
 * are read back one at a time — status line, headers, and a Content-Length,
 * chunked or read-until-close body — against a deadline, so a server that
 * stalls fails the test instead of hanging it.
 */
#ifndef TEST_RAW_HTTP_H
#define TEST_RAW_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct raw_conn {
    int fd;
    char *buf; /* bytes received and not yet taken by a response */
    size_t len, cap;
    bool eof;   /* the peer closed: recv() returned 0 */
    bool reset; /* recv() failed (ECONNRESET and the like) */
};

struct raw_resp {
    char version[16]; /* "HTTP/1.1" */
    int status;
    char *head; /* status line and header lines as received, NUL-terminated */
    char *body; /* the decoded body, NUL-terminated */
    size_t body_len;
    bool chunked; /* the body came with Transfer-Encoding: chunked */
};

enum raw_result {
    RAW_OK = 0,
    RAW_CLOSED = -1,  /* the peer closed before the first byte of a response */
    RAW_TIMEOUT = -2, /* the deadline passed */
    RAW_BROKEN = -3,  /* malformed, cut short, or the connection failed */
};

/* Connects to 127.0.0.1:port. rcvbuf > 0 sets SO_RCVBUF first (a small one
 * makes a slow reader). TCP_NODELAY is on, so each raw_send() leaves as its
 * own segment. 0, or -1. */
int raw_connect(struct raw_conn *c, int port, int rcvbuf);
/* Closes the socket and frees the buffer. */
void raw_close(struct raw_conn *c);
/* Writes all len bytes in one or more send() calls. 0, or -1. */
int raw_send(struct raw_conn *c, const void *data, size_t len);
/* Reads one response (an interim 1xx one counts as a response) within
 * timeout_ms. Bytes after it stay buffered for the next call. Unless it
 * returns RAW_OK, *r holds nothing to free. */
enum raw_result raw_read_response(struct raw_conn *c, struct raw_resp *r, int timeout_ms);
void raw_resp_free(struct raw_resp *r);
/* Value of the first header called name (case-insensitive), trimmed, as a
 * new string; NULL when absent. */
char *raw_resp_header(const struct raw_resp *r, const char *name);
/* True when header name lists token (case-insensitive), as in
 * "Connection: close". */
bool raw_resp_has_token(const struct raw_resp *r, const char *name, const char *token);
/* Reads until the received bytes contain needle. 0, or a raw_result. */
enum raw_result raw_read_until(struct raw_conn *c, const char *needle, int timeout_ms);
/* Waits for the peer to close: RAW_OK once recv() returns 0 with nothing
 * left unread, RAW_BROKEN when bytes arrive or the connection is reset
 * instead, RAW_TIMEOUT. */
enum raw_result raw_wait_closed(struct raw_conn *c, int timeout_ms);

#endif
