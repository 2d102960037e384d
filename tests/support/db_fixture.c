#include "db_fixture.h"
#include "tmpdir.h"

#include <stdio.h>
#include <stdlib.h>

struct db_fixture *db_fixture_open(const char *prefix)
{
    struct db_fixture *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->dir = tmpdir_create(prefix);
    f->path = tmpdir_path(f->dir, "test.db");
    char err[512];
    if (db_open(f->path, &f->db, err, sizeof err) != DB_OK) {
        fprintf(stderr, "%s\n", err);
        db_fixture_close(f);
        return NULL;
    }
    return f;
}

void db_fixture_close(struct db_fixture *f)
{
    if (!f)
        return;
    db_close(f->db);
    free(f->path);
    tmpdir_remove(f->dir);
    free(f);
}

struct usage_text {
    char s[4096];
    size_t len;
};

static void append_row(void *ud, const struct db_usage *u)
{
    struct usage_text *t = ud;
    if (t->len >= sizeof t->s)
        return;
    t->len +=
        (size_t)snprintf(t->s + t->len, sizeof t->s - t->len, "%s %s %s %lld %lld %lld %lld\n",
                         u->day, u->owner, u->llm, (long long)u->requests, (long long)u->errors,
                         (long long)u->prompt_tokens, (long long)u->completion_tokens);
}

const char *db_fixture_usage_text(struct db *db, const struct db_usage_filter *filter)
{
    static struct usage_text t;
    static const struct db_usage_filter all = {0};
    t.len = 0;
    t.s[0] = '\0';
    if (db_usage_list(db, filter ? filter : &all, append_row, &t) != DB_OK)
        return "(database error)";
    return t.s;
}
