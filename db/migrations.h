/*
 * migrations.h - the SQL migrations embedded at build time.
 *
 * Generated from migrations/NNNN_name.sql by embed_migrations.cmake, sorted
 * by version. Migration N takes the schema from user_version N-1 to N.
 */
#ifndef MCP_MIGRATIONS_H
#define MCP_MIGRATIONS_H

struct migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct migration db_migrations[];
extern const int db_migrations_count;

#endif
