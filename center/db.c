/* The database front end: picks the backend from the URL, owns result
 * sets, and applies the versioned schema migrations (center/db.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "center/db.h"
#include "center/schema.h"

struct db {
    const struct db_ops *ops;
    void *h;
};

struct db *db_open(const char *url, char *err, size_t errlen)
{
    const struct db_ops *ops;
    const char *target;
    if (!strncmp(url, "sqlite:", 7)) {
        ops = &db_sqlite_ops;
        target = url + 7;
    } else if (!strncmp(url, "postgresql://", 13) || !strncmp(url, "postgres://", 11)) {
        ops = &db_pg_ops;
        target = url;   /* libpq parses the whole URI */
    } else {
        snprintf(err, errlen, "database: '%s' is neither sqlite:PATH nor postgresql://...", url);
        return NULL;
    }
    if (!*target) {
        snprintf(err, errlen, "database: sqlite: needs a path");
        return NULL;
    }
    void *h = ops->open(target, err, errlen);
    if (!h)
        return NULL;
    struct db *db = calloc(1, sizeof(*db));
    if (!db) {
        ops->close(h);
        snprintf(err, errlen, "database: out of memory");
        return NULL;
    }
    db->ops = ops;
    db->h = h;
    return db;
}

void db_close(struct db *db)
{
    if (db) {
        db->ops->close(db->h);
        free(db);
    }
}

const char *db_backend(const struct db *db) { return db->ops->name; }

int db_exec(struct db *db, const char *sql, int n, const char *const *params,
            struct db_res **res, char *err, size_t errlen)
{
    if (res)
        *res = NULL;
    return db->ops->exec(db->h, sql, n, params, res, err, errlen);
}

int db_script(struct db *db, const char *sql, char *err, size_t errlen)
{
    return db->ops->script(db->h, sql, err, errlen);
}

int db_begin(struct db *db, char *err, size_t errlen)
{
    return db_script(db, db->ops == &db_pg_ops ? "BEGIN" : "BEGIN IMMEDIATE", err, errlen);
}

int db_commit(struct db *db, char *err, size_t errlen)
{
    if (db_script(db, "COMMIT", err, errlen) == 0)
        return 0;
    db_rollback(db);
    return -1;
}

void db_rollback(struct db *db)
{
    char e[256];
    db_script(db, "ROLLBACK", e, sizeof(e));
}

struct db_res *db_res_new(int nrows, int ncols)
{
    struct db_res *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->nrows = nrows;
    r->ncols = ncols;
    r->v = calloc((size_t)nrows * (size_t)ncols + 1, sizeof(char *));
    r->names = calloc((size_t)ncols + 1, sizeof(char *));
    if (!r->v || !r->names) {
        db_res_free(r);
        return NULL;
    }
    return r;
}

const char *db_val(const struct db_res *r, int row, int col)
{
    if (!r || row < 0 || row >= r->nrows || col < 0 || col >= r->ncols)
        return NULL;
    return r->v[row * r->ncols + col];
}

long long db_int(const struct db_res *r, int row, int col)
{
    const char *s = db_val(r, row, col);
    return s ? strtoll(s, NULL, 10) : 0;
}

void db_res_free(struct db_res *r)
{
    if (!r)
        return;
    if (r->v)
        for (int i = 0; i < r->nrows * r->ncols; i++)
            free(r->v[i]);
    if (r->names)
        for (int i = 0; i < r->ncols; i++)
            free(r->names[i]);
    free(r->v);
    free(r->names);
    free(r);
}

/* A migration step for this backend: the schema text is shared, only the
 * auto-increment key is spelled differently. */
static char *step_sql(const struct db *db, const char *sql)
{
    const char *id = db->ops == &db_pg_ops ? "BIGSERIAL PRIMARY KEY"
                                           : "INTEGER PRIMARY KEY AUTOINCREMENT";
    size_t cap = strlen(sql) * 4 + 1, o = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = sql; *p;) {
        if (!strncmp(p, "@ID@", 4)) {
            o += (size_t)sprintf(out + o, "%s", id);
            p += 4;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

int db_schema_latest(void) { return schema_nsteps; }

int db_migrate(struct db *db, int *version, char *err, size_t errlen)
{
    char e[512];
    struct db_res *r = NULL;
    int cur = 0;
    /* IMMEDIATE/the table lock: two managers starting at once on one
     * database migrate one after the other, never both */
    bool pg = db->ops == &db_pg_ops;
    if (db_script(db, pg ? "BEGIN" : "BEGIN IMMEDIATE", e, sizeof(e)) < 0)
        goto fail;
    if (db_script(db, "CREATE TABLE IF NOT EXISTS schema_version ("
                      " version INTEGER NOT NULL, applied TEXT NOT NULL)", e, sizeof(e)) < 0 ||
        (pg && db_script(db, "LOCK TABLE schema_version IN EXCLUSIVE MODE", e, sizeof(e)) < 0) ||
        DBQ0(db, &r, e, "SELECT MAX(version) FROM schema_version") < 0)
        goto rollback;
    cur = (int)db_int(r, 0, 0);
    db_res_free(r);
    if (cur > schema_nsteps) {
        snprintf(e, sizeof(e), "the schema is version %d, newer than this ferry-center's %d",
                 cur, schema_nsteps);
        goto rollback;
    }
    for (int v = cur + 1; v <= schema_nsteps; v++) {
        char *sql = step_sql(db, schema_steps[v - 1]);
        char vs[16], now[40];
        time_t t = time(NULL);
        strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        snprintf(vs, sizeof(vs), "%d", v);
        int rc = sql ? db_script(db, sql, e, sizeof(e)) : -1;
        free(sql);
        if (rc < 0 || DBQ(db, NULL, e, "INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                          vs, now) < 0) {
            char m[sizeof(e)];
            snprintf(m, sizeof(m), "%s", e);
            snprintf(e, sizeof(e), "migration to version %d: %.400s", v, m);
            goto rollback;
        }
    }
    if (db_script(db, "COMMIT", e, sizeof(e)) < 0)
        goto rollback;
    if (version)
        *version = schema_nsteps;
    return 0;
rollback:
    db_script(db, "ROLLBACK", err, errlen);
fail:
    snprintf(err, errlen, "%s", e);
    return -1;
}
