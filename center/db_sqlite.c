/* SQLite backend: the embedded default. WAL with a busy timeout, so the
 * API thread and the task workers (one connection each) read while another
 * writes, and foreign keys on (SQLite leaves them off by default). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "center/db.h"

#define CACHE 64

struct lite {
    sqlite3 *db;
    struct { const char *sql; sqlite3_stmt *st; } cache[CACHE];
};

static void *lite_open(const char *path, char *err, size_t errlen)
{
    struct lite *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(err, errlen, "database: out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &l->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    char *e = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(l->db, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;"
                                 " PRAGMA synchronous=NORMAL", NULL, NULL, &e);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "database: sqlite:%s: %s", path, e ? e : sqlite3_errmsg(l->db));
        sqlite3_free(e);
        sqlite3_close(l->db);
        free(l);
        return NULL;
    }
    sqlite3_busy_timeout(l->db, 10000);
    return l;
}

static void lite_close(void *h)
{
    struct lite *l = h;
    for (int i = 0; i < CACHE; i++)
        sqlite3_finalize(l->cache[i].st);
    sqlite3_close(l->db);
    free(l);
}

static sqlite3_stmt *prepared(struct lite *l, const char *sql, char *err, size_t errlen)
{
    int free_slot = -1;
    for (int i = 0; i < CACHE; i++) {
        if (l->cache[i].sql == sql)
            return l->cache[i].st;
        if (!l->cache[i].sql && free_slot < 0)
            free_slot = i;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "database: %s", sqlite3_errmsg(l->db));
        return NULL;
    }
    if (free_slot >= 0) {
        l->cache[free_slot].sql = sql;
        l->cache[free_slot].st = st;
    }
    return st;
}

static int lite_exec(void *h, const char *sql, int n, const char *const *params,
                     struct db_res **res, char *err, size_t errlen)
{
    struct lite *l = h;
    sqlite3_stmt *st = prepared(l, sql, err, errlen);
    if (!st)
        return -1;
    bool cached = false;
    for (int i = 0; i < CACHE; i++)
        cached |= l->cache[i].st == st;
    for (int i = 0; i < n; i++)
        if (params[i])
            sqlite3_bind_text(st, i + 1, params[i], -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, i + 1);

    int ncols = sqlite3_column_count(st), nrows = 0, cap = 0, rc;
    char **vals = NULL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!res) {
            nrows++;
            continue;
        }
        if (nrows == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(vals, (size_t)cap * (size_t)ncols * sizeof(char *) + 1);
            if (!nv)
                break;
            vals = nv;
        }
        for (int c = 0; c < ncols; c++) {
            const unsigned char *t = sqlite3_column_text(st, c);
            vals[nrows * ncols + c] = t ? strdup((const char *)t) : NULL;
        }
        nrows++;
    }
    int ret = nrows;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        int ext = sqlite3_extended_errcode(l->db);
        snprintf(err, errlen, "database: %s", sqlite3_errmsg(l->db));
        ret = (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY ||
               ext == SQLITE_CONSTRAINT_FOREIGNKEY) ? -2 : -1;
    } else if (rc == SQLITE_ROW) {
        snprintf(err, errlen, "database: out of memory");
        ret = -1;
    } else if (!ncols) {
        ret = sqlite3_changes(l->db);
    }
    if (res && ret >= 0) {
        struct db_res *r = db_res_new(nrows, ncols);
        if (r) {
            for (int i = 0; i < nrows * ncols; i++)
                r->v[i] = vals[i];
            for (int c = 0; c < ncols; c++)
                r->names[c] = strdup(sqlite3_column_name(st, c));
            nrows = 0;   /* the values belong to r now */
        } else {
            ret = -1;
            snprintf(err, errlen, "database: out of memory");
        }
        *res = r;
    }
    if (vals)
        for (int i = 0; i < nrows * ncols; i++)
            free(vals[i]);
    free(vals);
    if (cached) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
    return ret;
}

static int lite_script(void *h, const char *sql, char *err, size_t errlen)
{
    struct lite *l = h;
    char *e = NULL;
    if (sqlite3_exec(l->db, sql, NULL, NULL, &e) != SQLITE_OK) {
        snprintf(err, errlen, "database: %s", e ? e : sqlite3_errmsg(l->db));
        sqlite3_free(e);
        return -1;
    }
    return 0;
}

const struct db_ops db_sqlite_ops = { "sqlite", lite_open, lite_close, lite_exec, lite_script };
