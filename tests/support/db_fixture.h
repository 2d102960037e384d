/*
 * db_fixture.h - a fresh mcpd database in a temp dir of its own, for the
 * db and server unit tests (which link mcpd_core).
 */
#ifndef TEST_DB_FIXTURE_H
#define TEST_DB_FIXTURE_H

#include "db.h"

struct db_fixture {
    char *dir;
    char *path; /* dir/test.db */
    struct db *db;
};

/* Opens a new database (every migration applied) in a new temp dir named
 * after prefix. Returns a new fixture, or NULL (with a message on stderr). */
struct db_fixture *db_fixture_open(const char *prefix);
/* Closes the database, removes the dir, frees f. NULL is a no-op. */
void db_fixture_close(struct db_fixture *f);

/* The usage rows filter selects (NULL: all), one "day owner llm requests
 * errors prompt completion" line each, in a buffer that lives until the
 * next call. */
const char *db_fixture_usage_text(struct db *db, const struct db_usage_filter *filter);

#endif
