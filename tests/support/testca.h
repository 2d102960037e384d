/*
 * testca.h - throwaway certificates for TLS tests.
 *
 * testca_make() runs the `openssl` command (directly, never through a
 * shell) to write a private CA and a server certificate it signed, plus an
 * unrelated CA that signed nothing, so a test can check both that a client
 * trusting the right CA connects and that one trusting the wrong CA does
 * not. Keys are EC P-256; certificates are valid for a week from now.
 *
 * Files written into dir (which must exist):
 *   ca.pem, ca.key              the CA (basicConstraints CA:TRUE)
 *   server.pem, server.key      the server: CN localhost, subjectAltName
 *                               IP 127.0.0.1, IP ::1, DNS localhost;
 *                               extendedKeyUsage serverAuth
 *   other-ca.pem, other-ca.key  the unrelated CA
 * Private keys are mode 0600. The paths of the four files tests need are
 * returned in struct testca.
 */
#ifndef TEST_TESTCA_H
#define TEST_TESTCA_H

#include <limits.h>

struct testca {
    char ca[PATH_MAX];       /* dir/ca.pem: trust this to accept cert */
    char cert[PATH_MAX];     /* dir/server.pem */
    char key[PATH_MAX];      /* dir/server.key */
    char other_ca[PATH_MAX]; /* dir/other-ca.pem: trusting only this rejects cert */
};

/* Writes into dir: a CA (ca.pem), a server certificate and key (server.pem,
 * server.key) for 127.0.0.1, ::1 and localhost signed by it, and an
 * unrelated CA (other-ca.pem) for bad-certificate tests. 0, or -1 with a
 * message on stderr. */
int testca_make(const char *dir, struct testca *out);

#endif
