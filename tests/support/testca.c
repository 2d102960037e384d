#include "testca.h"

#include "proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run(const char *const argv[])
{
    char *out = NULL, *err = NULL;
    int rc = proc_run(argv, NULL, NULL, &out, &err, 30000);
    if (rc != 0)
        fprintf(stderr, "testca: %s %s failed (%d): %s\n", argv[0], argv[1], rc, err ? err : "");
    free(out);
    free(err);
    return rc == 0 ? 0 : -1;
}

/* A self-signed CA certificate and key. */
static int make_ca(const char *cert, const char *key, const char *cn)
{
    char subj[128];
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    const char *argv[] = {"/usr/bin/openssl",
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:prime256v1",
                          "-nodes",
                          "-keyout",
                          key,
                          "-out",
                          cert,
                          "-days",
                          "2",
                          "-subj",
                          subj,
                          "-addext",
                          "basicConstraints=critical,CA:TRUE",
                          "-addext",
                          "keyUsage=critical,keyCertSign,cRLSign",
                          NULL};
    return run(argv);
}

int testca_make(const char *dir, struct testca *out)
{
    memset(out, 0, sizeof *out);
    char ca_key[PATH_MAX], other_key[PATH_MAX], csr[PATH_MAX], ext[PATH_MAX], serial[PATH_MAX];
    snprintf(out->ca, sizeof out->ca, "%s/ca.pem", dir);
    snprintf(out->cert, sizeof out->cert, "%s/server.pem", dir);
    snprintf(out->key, sizeof out->key, "%s/server.key", dir);
    snprintf(out->other_ca, sizeof out->other_ca, "%s/other-ca.pem", dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", dir);
    snprintf(other_key, sizeof other_key, "%s/other-ca.key", dir);
    snprintf(csr, sizeof csr, "%s/server.csr", dir);
    snprintf(ext, sizeof ext, "%s/server.ext", dir);
    snprintf(serial, sizeof serial, "%s/ca.srl", dir);
    FILE *f = fopen(ext, "w");
    if (!f)
        return -1;
    fputs("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=serverAuth\n",
          f);
    fclose(f);
    if (make_ca(out->ca, ca_key, "mcp test CA") < 0 ||
        make_ca(out->other_ca, other_key, "unrelated test CA") < 0)
        return -1;
    const char *req[] = {"/usr/bin/openssl",
                         "req",
                         "-newkey",
                         "ec",
                         "-pkeyopt",
                         "ec_paramgen_curve:prime256v1",
                         "-nodes",
                         "-keyout",
                         out->key,
                         "-out",
                         csr,
                         "-subj",
                         "/CN=127.0.0.1",
                         NULL};
    const char *sign[] = {"/usr/bin/openssl",
                          "x509",
                          "-req",
                          "-in",
                          csr,
                          "-CA",
                          out->ca,
                          "-CAkey",
                          ca_key,
                          "-CAserial",
                          serial,
                          "-CAcreateserial",
                          "-out",
                          out->cert,
                          "-days",
                          "2",
                          "-extfile",
                          ext,
                          NULL};
    if (run(req) < 0 || run(sign) < 0)
        return -1;
    return 0;
}
