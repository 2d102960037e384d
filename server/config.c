#include "config.h"
#include "duration.h"
#include "protocol.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void config_defaults(struct server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen_addr, sizeof cfg->listen_addr, "127.0.0.1");
    cfg->listen_port = 8080;
    snprintf(cfg->db_path, sizeof cfg->db_path, "%s", MCPD_DEFAULT_DB);
    /* Two workers per CPU, at least 4: idle control streams stay
     * suspended on the workers, and libmicrohttpd walks a worker's whole
     * list of suspended connections on every resume, so 10,000 idle streams
     * on one worker slow every relay down; but each relay resumes
     * connections that live on other workers, and every worker more adds
     * cross-thread wake-ups. Measured on 2 cores (bench/analysis.md): 4
     * workers keep the relay at 0.9x with 10,000 idle streams and cost
     * about a tenth of the throughput 1 worker has without them. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = cpus > 2 ? (int)(cpus < 32 ? 2 * cpus : 64) : 4;
    cfg->heartbeat_timeout_ms = MCP_DEFAULT_HEARTBEAT_TIMEOUT_MS;
    cfg->gc_interval_ms = MCP_DEFAULT_GC_INTERVAL_MS;
    cfg->inactive_retention_ms = MCP_DEFAULT_INACTIVE_RETENTION_MS;
    cfg->ping_interval_ms = MCP_DEFAULT_PING_INTERVAL_MS;
    cfg->heartbeat_interval_ms = MCP_DEFAULT_HEARTBEAT_INTERVAL_MS;
    cfg->max_body = 1 << 20;
    cfg->infer_timeout_ms = 10 * 60 * 1000;
    cfg->idle_timeout_ms = 60 * 1000;
    cfg->wake_timeout_ms = 2 * 60 * 1000;
    cfg->max_inflight = 64;
    cfg->max_held = 256;
    cfg->gc_batch = 250; /* rows per GC transaction: short, so relays never wait long */
    cfg->max_connections = 0;
    cfg->connection_timeout_ms = 30 * 1000;
    cfg->log_level = LOG_LEVEL_INFO;
    snprintf(cfg->access_log, sizeof cfg->access_log, "-");
    cfg->result_stream = true;
}

void config_usage(void)
{
    fputs(
        "usage: mcpd [options]\n"
        "       mcpd token create --owner NAME [--expires DURATION] [--admin] [--db PATH]\n"
        "       mcpd token list [--db PATH]\n"
        "       mcpd token revoke ID [--db PATH]\n"
        "\n"
        "The control-plane server for virtual LLMs published by mcplocal.\n"
        "\n"
        "Options (each also settable by the MCPD_* variable shown; flags win):\n"
        "  --listen ADDR:PORT          address to listen on (MCPD_LISTEN, default 127.0.0.1:8080;\n"
        "                              port 0 picks a free port, logged at start)\n"
        "  --db PATH                   SQLite database file (MCPD_DB, default\n"
        "                              " MCPD_DEFAULT_DB ")\n"
        "  --threads N                 HTTP worker threads (MCPD_THREADS, default: two per\n"
        "                              CPU, at least 4, at most 64)\n"
        "  --tls-cert FILE             serve HTTPS with this PEM certificate (chain)\n"
        "                              (MCPD_TLS_CERT; needs --tls-key)\n"
        "  --tls-key FILE              the certificate's PEM private key (MCPD_TLS_KEY)\n"
        "  --max-connections N         open connections at most; past it new ones are\n"
        "                              refused (MCPD_MAX_CONNECTIONS, default: what the\n"
        "                              open-file limit allows)\n"
        "  --cors-origins LIST         origins (comma-separated, or *) whose browser pages may\n"
        "                              call /v1; preflights need no token\n"
        "                              (MCPD_CORS_ORIGINS, default: none)\n"
        "  --connection-timeout DUR    idle connections are closed after this; control\n"
        "                              streams and waiting callers excepted\n"
        "                              (MCPD_CONNECTION_TIMEOUT, default 30s)\n"
        "  --heartbeat-timeout DUR     rows without a heartbeat this long go inactive\n"
        "                              (MCPD_HEARTBEAT_TIMEOUT, default 90s)\n"
        "  --heartbeat-interval DUR    interval told to publishers (MCPD_HEARTBEAT_INTERVAL,\n"
        "                              default 30s)\n"
        "  --gc-interval DUR           GC sweep period (MCPD_GC_INTERVAL, default 60s)\n"
        "  --inactive-retention DUR    inactive rows are deleted after this\n"
        "                              (MCPD_INACTIVE_RETENTION, default 4h)\n"
        "  --ping-interval DUR         ': ping' comment period on control streams\n"
        "                              (MCPD_PING_INTERVAL, default 20s)\n"
        "  --max-body BYTES            request body cap, K/M/G suffixes allowed\n"
        "                              (MCPD_MAX_BODY, default 1M)\n"
        "  --infer-timeout DUR         longest inference (MCPD_INFER_TIMEOUT, default 10m)\n"
        "  --idle-timeout DUR          longest silence between streamed chunks\n"
        "                              (MCPD_IDLE_TIMEOUT, default 60s)\n"
        "  --wake-timeout DUR          longest wake of a hibernating backend\n"
        "                              (MCPD_WAKE_TIMEOUT, default 2m)\n"
        "  --max-inflight N            in-flight tasks per publisher session\n"
        "                              (MCPD_MAX_INFLIGHT, default 64)\n"
        "  --max-held N                callers held per Llm while it wakes\n"
        "                              (MCPD_MAX_HELD, default 256)\n"
        "  --log-level LEVEL           debug|info|warn (MCPD_LOG_LEVEL, default info)\n"
        "  --access-log FILE|-|off     one line per request, logfmt: to FILE (appended,\n"
        "                              reopened on SIGHUP), - for stderr, or off\n"
        "                              (MCPD_ACCESS_LOG, default -)\n"
        "  --result-stream on|off      offer publishers one long request for their results\n"
        "                              (MCPD_RESULT_STREAM, default on; off behind a proxy\n"
        "                              that buffers request bodies)\n"
        "  -h, --help                  show this help\n"
        "  --version                   print \"mcpd VERSION\" and exit\n"
        "\n"
        "DUR is a whole number with ms, s, m, h or d (a bare number means seconds).\n"
        "SIGTERM or SIGINT shut down cleanly: streams closed, rows inactive, exit 0.\n"
        "SIGHUP reopens the --access-log file (after logrotate moved it).\n"
        "GET /metrics serves Prometheus metrics without a token (docs/operations.md).\n"
        "At start mcpd raises its open-file limit to the hard limit.\n",
        stdout);
}

enum opt_kind { OPT_LISTEN, OPT_PATH, OPT_INT, OPT_DUR, OPT_SIZE, OPT_LEVEL, OPT_SWITCH };

struct opt {
    const char *flag;
    const char *env;
    enum opt_kind kind;
    size_t offset;
    int64_t min; /* for OPT_INT and OPT_DUR */
};

#define OFF(f) offsetof(struct server_config, f)

static const struct opt opts[] = {
    {"--listen", "MCPD_LISTEN", OPT_LISTEN, 0, 0},
    {"--db", "MCPD_DB", OPT_PATH, OFF(db_path), 0},
    {"--threads", "MCPD_THREADS", OPT_INT, OFF(threads), 1},
    {"--heartbeat-timeout", "MCPD_HEARTBEAT_TIMEOUT", OPT_DUR, OFF(heartbeat_timeout_ms), 1},
    {"--heartbeat-interval", "MCPD_HEARTBEAT_INTERVAL", OPT_DUR, OFF(heartbeat_interval_ms), 1},
    {"--gc-interval", "MCPD_GC_INTERVAL", OPT_DUR, OFF(gc_interval_ms), 1},
    {"--inactive-retention", "MCPD_INACTIVE_RETENTION", OPT_DUR, OFF(inactive_retention_ms), 0},
    {"--ping-interval", "MCPD_PING_INTERVAL", OPT_DUR, OFF(ping_interval_ms), 1},
    {"--max-body", "MCPD_MAX_BODY", OPT_SIZE, OFF(max_body), 0},
    {"--infer-timeout", "MCPD_INFER_TIMEOUT", OPT_DUR, OFF(infer_timeout_ms), 1},
    {"--idle-timeout", "MCPD_IDLE_TIMEOUT", OPT_DUR, OFF(idle_timeout_ms), 1},
    {"--wake-timeout", "MCPD_WAKE_TIMEOUT", OPT_DUR, OFF(wake_timeout_ms), 1},
    {"--max-inflight", "MCPD_MAX_INFLIGHT", OPT_INT, OFF(max_inflight), 1},
    {"--max-held", "MCPD_MAX_HELD", OPT_INT, OFF(max_held), 1},
    {"--max-connections", "MCPD_MAX_CONNECTIONS", OPT_INT, OFF(max_connections), 1},
    {"--connection-timeout", "MCPD_CONNECTION_TIMEOUT", OPT_DUR, OFF(connection_timeout_ms), 1000},
    {"--tls-cert", "MCPD_TLS_CERT", OPT_PATH, OFF(tls_cert), 0},
    {"--tls-key", "MCPD_TLS_KEY", OPT_PATH, OFF(tls_key), 0},
    {"--cors-origins", "MCPD_CORS_ORIGINS", OPT_PATH, OFF(cors_origins), 0},
    {"--log-level", "MCPD_LOG_LEVEL", OPT_LEVEL, 0, 0},
    {"--access-log", "MCPD_ACCESS_LOG", OPT_PATH, OFF(access_log), 0},
    {"--result-stream", "MCPD_RESULT_STREAM", OPT_SWITCH, OFF(result_stream), 0},
};

static int parse_listen(struct server_config *cfg, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v)
        return -1;
    size_t hlen = (size_t)(colon - v);
    if (v[0] == '[' && hlen >= 2 && v[hlen - 1] == ']') {
        v++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof cfg->listen_addr)
        return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    memcpy(cfg->listen_addr, v, hlen);
    cfg->listen_addr[hlen] = '\0';
    cfg->listen_port = (int)port;
    return 0;
}

static int apply(struct server_config *cfg, const struct opt *o, const char *v)
{
    char *base = (char *)cfg;
    int64_t n;
    switch (o->kind) {
    case OPT_LISTEN:
        return parse_listen(cfg, v);
    case OPT_PATH:
        if (!*v || strlen(v) >= sizeof cfg->db_path)
            return -1;
        snprintf(base + o->offset, sizeof cfg->db_path, "%s", v);
        return 0;
    case OPT_INT: {
        char *end;
        errno = 0;
        long l = strtol(v, &end, 10);
        if (errno || *end || end == v || l < o->min || l > 1000000)
            return -1;
        *(int *)(void *)(base + o->offset) = (int)l;
        return 0;
    }
    case OPT_DUR:
        if (duration_parse(v, &n) < 0 || n < o->min)
            return -1;
        *(int64_t *)(void *)(base + o->offset) = n;
        return 0;
    case OPT_SIZE:
        if (size_parse(v, &n) < 0 || n < 1024)
            return -1;
        *(int64_t *)(void *)(base + o->offset) = n;
        return 0;
    case OPT_LEVEL:
        return log_level_parse(v, &cfg->log_level);
    case OPT_SWITCH:
        if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
            return -1;
        *(bool *)(void *)(base + o->offset) = strcmp(v, "on") == 0;
        return 0;
    }
    return -1;
}

int config_parse(struct server_config *cfg, int argc, char **argv, int first, char *err,
                 size_t errlen)
{
    size_t nopts = sizeof opts / sizeof opts[0];
    for (size_t i = 0; i < nopts; i++) {
        const char *v = getenv(opts[i].env);
        if (v && *v && apply(cfg, &opts[i], v) < 0) {
            snprintf(err, errlen, "invalid value '%s' for %s (from %s)", v, opts[i].flag,
                     opts[i].env);
            return -1;
        }
    }
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            config_usage();
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("mcpd %s\n", mcpd_version());
            return 1;
        }
        const char *eq = strchr(arg, '=');
        size_t flen = eq ? (size_t)(eq - arg) : strlen(arg);
        const struct opt *o = NULL;
        for (size_t i = 0; i < nopts; i++)
            if (strlen(opts[i].flag) == flen && strncmp(arg, opts[i].flag, flen) == 0)
                o = &opts[i];
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see mcpd --help)", arg);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (a + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", o->flag);
                return -1;
            }
            v = argv[++a];
        }
        if (apply(cfg, o, v) < 0) {
            snprintf(err, errlen, "invalid value '%s' for %s", v, o->flag);
            return -1;
        }
    }
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together: give both or neither");
        return -1;
    }
    return 0;
}
