/* The manager's database: one small interface over SQLite (the embedded
 * default) and PostgreSQL (libpq), with the same schema and versioned
 * migrations on both (center/schema.c).
 *
 * SQL is written once with '?' placeholders; the PostgreSQL backend
 * rewrites them to $1..$n. Every value goes in as a bound parameter (text;
 * NULL is SQL NULL) and comes out as text, so no SQL is ever built from a
 * user's string. Statements are prepared once per connection and cached by
 * the address of their (static) SQL text.
 *
 * A connection belongs to one thread; each thread opens its own. Errors are
 * one line, "database: ...". */
#ifndef FERRY_CENTER_DB_H
#define FERRY_CENTER_DB_H

#include <stddef.h>

struct db;

/* A query's rows: every value as text, NULL for SQL NULL. */
struct db_res {
    int nrows, ncols;
    char **v;        /* nrows * ncols values, row-major */
    char **names;    /* ncols column names */
};

/* "sqlite:PATH" or "postgresql://..." / "postgres://...". */
struct db *db_open(const char *url, char *err, size_t errlen);
void db_close(struct db *db);
const char *db_backend(const struct db *db);   /* "sqlite" or "postgresql" */

/* Run sql (static text, '?' placeholders) with n text parameters; the rows
 * go to *res when res is not NULL (free with db_res_free). Returns the
 * number of rows changed or returned, or -1 with a reason. A unique or
 * foreign-key violation returns -2 (so callers can answer 409). */
int db_exec(struct db *db, const char *sql, int n, const char *const *params,
            struct db_res **res, char *err, size_t errlen);

/* Static SQL without parameters, possibly several statements (migrations,
 * BEGIN/COMMIT). 0 or -1. */
int db_script(struct db *db, const char *sql, char *err, size_t errlen);

/* Transactions (SQLite takes the write lock at BEGIN, so two writers never
 * deadlock on a lock upgrade). 0 or -1. */
int db_begin(struct db *db, char *err, size_t errlen);
int db_commit(struct db *db, char *err, size_t errlen);
void db_rollback(struct db *db);

const char *db_val(const struct db_res *r, int row, int col);
long long db_int(const struct db_res *r, int row, int col);   /* NULL -> 0 */
void db_res_free(struct db_res *r);

/* Create or upgrade the schema to the newest version, in one transaction.
 * 0, or -1 (nothing applied). *version gets the resulting version. */
int db_migrate(struct db *db, int *version, char *err, size_t errlen);
int db_schema_latest(void);

#define DB_NARGS(...) ((int)(sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(const char *)))
/* db_exec with the parameters listed inline: DBQ(db, &res, err, sql, a, b) */
#define DBQ(db, res, err, sql, ...) \
    db_exec((db), (sql), DB_NARGS(__VA_ARGS__), (const char *[]){ __VA_ARGS__ }, (res), (err), sizeof(err))
/* The same where err is a pointer (a caller's buffer of errlen bytes). */
#define DBQN(db, res, err, errlen, sql, ...) \
    db_exec((db), (sql), DB_NARGS(__VA_ARGS__), (const char *[]){ __VA_ARGS__ }, (res), (err), (errlen))
#define DBQ0(db, res, err, sql) db_exec((db), (sql), 0, NULL, (res), (err), sizeof(err))

/* Backends (db_sqlite.c, db_pg.c) fill this table. */
struct db_ops {
    const char *name;
    void *(*open)(const char *target, char *err, size_t errlen);
    void (*close)(void *h);
    int (*exec)(void *h, const char *sql, int n, const char *const *params, struct db_res **res,
                char *err, size_t errlen);
    int (*script)(void *h, const char *sql, char *err, size_t errlen);
};
extern const struct db_ops db_sqlite_ops, db_pg_ops;

/* For backends: a result with nrows x ncols empty slots. */
struct db_res *db_res_new(int nrows, int ncols);

#endif
