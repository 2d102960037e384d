/*
 * main.c - mcpd's entry point: the server, or the `token` subcommands.
 */
#include "auth.h"
#include "clock.h"
#include "config.h"
#include "db.h"
#include "duration.h"
#include "log.h"
#include "server.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int token_usage(void)
{
    fputs("usage: mcpd token create --owner NAME [--expires DURATION] [--admin] [--db PATH]\n"
          "       mcpd token list [--db PATH]\n"
          "       mcpd token revoke ID [--db PATH]\n",
          stderr);
    return 2;
}

/* A time for the token list: RFC 3339, or "-" for none. */
static const char *list_time(int64_t ms, char out[CLOCK_RFC3339_LEN])
{
    if (!ms)
        return "-";
    clock_format_rfc3339(ms, out);
    return out;
}

static void print_token(void *ud, const struct db_token *t)
{
    int64_t now = *(const int64_t *)ud;
    char created[CLOCK_RFC3339_LEN], used[CLOCK_RFC3339_LEN], expires[CLOCK_RFC3339_LEN],
        revoked[CLOCK_RFC3339_LEN];
    const char *status = t->revoked_at                           ? "revoked"
                         : t->expires_at && t->expires_at <= now ? "expired"
                                                                 : "active";
    printf("%-6lld %-24s %-5s %-8s %-24s %-24s %-24s %s\n", (long long)t->id, t->owner,
           t->admin ? "yes" : "no", status, list_time(t->created_at, created),
           list_time(t->last_used_at, used), list_time(t->expires_at, expires),
           list_time(t->revoked_at, revoked));
}

static int token_main(int argc, char **argv)
{
    if (argc < 3)
        return token_usage();
    const char *verb = argv[2];
    if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0)
        return token_usage() & 0;
    const char *owner = NULL, *id_arg = NULL, *expires = NULL;
    bool admin = false;
    const char *db_path = getenv("MCPD_DB");
    bool db_named = db_path && *db_path;
    if (!db_named)
        db_path = MCPD_DEFAULT_DB;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--owner") == 0 && i + 1 < argc)
            owner = argv[++i];
        else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            db_path = argv[++i];
            db_named = true;
        } else if (strcmp(argv[i], "--expires") == 0 && i + 1 < argc)
            expires = argv[++i];
        else if (strcmp(argv[i], "--admin") == 0)
            admin = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return token_usage() & 0;
        else if (argv[i][0] != '-' && !id_arg)
            id_arg = argv[i];
        else {
            fprintf(stderr, "mcpd token: unexpected argument '%s'\n", argv[i]);
            return token_usage();
        }
    }
    if ((expires || admin) && strcmp(verb, "create") != 0) {
        fprintf(stderr, "mcpd token %s: --expires and --admin are for 'token create'\n", verb);
        return token_usage();
    }
    int64_t lifetime = 0;
    if (expires && (duration_parse(expires, &lifetime) < 0 || lifetime <= 0)) {
        fprintf(stderr,
                "mcpd token create: --expires needs a duration such as 90d, 12h or 30m, got "
                "'%s'\n",
                expires);
        return 2;
    }
    /* The default database is the server's: mcpd creates it, as the user it
     * runs as. Only one named by --db or MCPD_DB is created here. */
    if (!db_named && access(db_path, F_OK) != 0) {
        fprintf(stderr,
                "mcpd token: no database at '%s' (the default): mcpd creates it when it "
                "first starts; name another with --db PATH or MCPD_DB\n",
                db_path);
        return 1;
    }
    struct db *db;
    char err[512];
    if (db_open(db_path, &db, err, sizeof err) != DB_OK) {
        fprintf(stderr, "mcpd: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (strcmp(verb, "create") == 0) {
        if (!owner || !*owner || strlen(owner) >= DB_OWNER_MAX) {
            fprintf(stderr, "mcpd token create: --owner NAME is required (at most %d chars)\n",
                    DB_OWNER_MAX - 1);
            rc = 2;
        } else {
            char token[AUTH_TOKEN_LEN];
            int64_t id;
            int64_t expires_at = lifetime ? clock_wall_ms() + lifetime : 0;
            if (auth_token_create(db, owner, admin, expires_at, token, &id) != DB_OK) {
                fprintf(stderr, "mcpd: cannot store the token: %s\n", db_errmsg(db));
                rc = 1;
            } else {
                char ts[CLOCK_RFC3339_LEN] = "", what[CLOCK_RFC3339_LEN + 32] = "";
                if (expires_at)
                    clock_format_rfc3339(expires_at, ts);
                if (admin || expires_at)
                    snprintf(what, sizeof what, " (%s%s%s)", admin ? "admin" : "",
                             admin && expires_at ? ", expires "
                             : expires_at        ? "expires "
                                                 : "",
                             ts);
                fprintf(stderr,
                        "created token %lld for owner '%s'%s in database '%s' (shown once):\n",
                        (long long)id, owner, what, db_path);
                printf("%s\n", token);
            }
        }
    } else if (strcmp(verb, "list") == 0) {
        int64_t now = clock_wall_ms();
        printf("%-6s %-24s %-5s %-8s %-24s %-24s %-24s %s\n", "ID", "OWNER", "ADMIN", "STATUS",
               "CREATED", "LAST-USED", "EXPIRES", "REVOKED");
        rc = db_token_list(db, print_token, &now) == DB_OK ? 0 : 1;
    } else if (strcmp(verb, "revoke") == 0) {
        char *end = NULL;
        long long id = id_arg ? strtoll(id_arg, &end, 10) : 0;
        if (!id_arg || *end || id <= 0) {
            fprintf(stderr, "mcpd token revoke: give the numeric ID from 'mcpd token list'\n");
            rc = 2;
        } else {
            int r = db_token_revoke(db, id, clock_wall_ms());
            if (r == DB_NOT_FOUND) {
                fprintf(stderr, "mcpd: no live token with id %lld\n", id);
                rc = 1;
            } else if (r != DB_OK) {
                fprintf(stderr, "mcpd: cannot revoke: %s\n", db_errmsg(db));
                rc = 1;
            } else {
                printf("revoked token %lld in database '%s'\n", id, db_path);
            }
        }
    } else {
        rc = token_usage();
    }
    db_close(db);
    return rc;
}

int main(int argc, char **argv)
{
    log_set_program("mcpd");
    if (argc >= 2 && strcmp(argv[1], "token") == 0)
        return token_main(argc, argv);

    struct server_config cfg;
    config_defaults(&cfg);
    char err[512];
    int rc = config_parse(&cfg, argc, argv, 1, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "mcpd: %s\n", err);
        return 2;
    }
    log_set_level(cfg.log_level);

    /* Signals are taken synchronously by this thread with sigwait(); every
     * other thread inherits the blocked mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct server srv;
    if (server_start(&srv, &cfg) < 0)
        return 1;
    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            server_reopen_logs(&srv); /* after logrotate moved it */
            continue;
        }
        break;
    }
    log_info("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server_stop(&srv);
    return 0;
}
