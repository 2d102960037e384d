/*
 * testca.h - a throwaway certificate authority for TLS tests, made with the
 * openssl command: a CA, a server certificate for 127.0.0.1 and localhost
 * signed by it (with its key), and an unrelated CA that did not sign it
 * (for bad-certificate tests). All PEM files, written into dir.
 */
#ifndef TEST_TESTCA_H
#define TEST_TESTCA_H

#include <limits.h>

struct testca {
    char ca[PATH_MAX];       /* the CA's certificate */
    char cert[PATH_MAX];     /* the server's certificate, signed by ca */
    char key[PATH_MAX];      /* the server's private key */
    char other_ca[PATH_MAX]; /* a CA that signed nothing here */
};

/* Writes the files into dir (which must exist). Returns 0, or -1 with a
 * message on stderr. */
int testca_make(const char *dir, struct testca *out);

#endif
