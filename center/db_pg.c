/* PostgreSQL backend (libpq): for scale and high availability. Statements
 * are prepared once per connection (PQprepare, named by cache slot) with
 * '?' rewritten to $n, and run with PQexecPrepared: parameters never enter
 * the SQL text. Every value travels as text, like the SQLite backend's. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "center/db.h"

#define CACHE 64

struct pg {
    PGconn *c;
    bool in_tx;                 /* between BEGIN and COMMIT/ROLLBACK */
    const char *cache[CACHE];   /* slot i holds statement "s<i>" */
};

static void quiet(void *arg, const char *msg) { }   /* NOTICEs ("already exists, skipping") */

static void pg_err(PGconn *c, const char *what, char *err, size_t errlen)
{
    const char *m = PQerrorMessage(c);
    int n = (int)strcspn(m, "\n");
    snprintf(err, errlen, "database: %s%.*s", what, n, m);
}

static void *pg_open(const char *url, char *err, size_t errlen)
{
    struct pg *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "database: out of memory");
        return NULL;
    }
    p->c = PQconnectdb(url);
    if (!p->c || PQstatus(p->c) != CONNECTION_OK) {
        pg_err(p->c, "cannot connect: ", err, errlen);
        PQfinish(p->c);
        free(p);
        return NULL;
    }
    PQsetNoticeProcessor(p->c, quiet, NULL);
    return p;
}

static void pg_close(void *h)
{
    struct pg *p = h;
    PQfinish(p->c);
    free(p);
}

/* '?' -> $1, $2, ... (our SQL has no '?' inside literals) */
static char *dollar_sql(const char *sql)
{
    char *out = malloc(strlen(sql) * 4 + 1), *o = out;
    int n = 0;
    if (!out)
        return NULL;
    for (const char *s = sql; *s; s++)
        if (*s == '?')
            o += sprintf(o, "$%d", ++n);
        else
            *o++ = *s;
    *o = '\0';
    return out;
}

/* The slot of sql's prepared statement, preparing it if new; -1 on error.
 * A full cache falls back to an unnamed statement (slot CACHE). */
static int prepared(struct pg *p, const char *sql, int n, char *err, size_t errlen)
{
    int slot = CACHE;
    for (int i = 0; i < CACHE; i++) {
        if (p->cache[i] == sql)
            return i;
        if (!p->cache[i] && slot == CACHE)
            slot = i;
    }
    char name[16] = "";
    if (slot < CACHE)
        snprintf(name, sizeof(name), "s%d", slot);
    char *text = dollar_sql(sql);
    PGresult *r = text ? PQprepare(p->c, name, text, n, NULL) : NULL;
    free(text);
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        pg_err(p->c, "", err, errlen);
    PQclear(r);
    if (!ok)
        return -1;
    if (slot < CACHE)
        p->cache[slot] = sql;
    return slot;
}

/* A server restart or failover breaks the connection: reconnect (the
 * prepared statements are gone with the old session). */
static bool revive(struct pg *p)
{
    if (PQstatus(p->c) != CONNECTION_BAD)
        return false;
    PQreset(p->c);
    memset(p->cache, 0, sizeof(p->cache));
    return PQstatus(p->c) == CONNECTION_OK;
}

static int exec_once(struct pg *p, const char *sql, int n, const char *const *params,
                     struct db_res **res, char *err, size_t errlen);

/* A statement outside a transaction that failed because the connection
 * broke is run again once on a new connection; inside a transaction the
 * transaction is lost, so the error goes to the caller (who rolls back). */
static int pg_exec(void *h, const char *sql, int n, const char *const *params,
                   struct db_res **res, char *err, size_t errlen)
{
    struct pg *p = h;
    revive(p);
    int rc = exec_once(p, sql, n, params, res, err, errlen);
    if (rc == -1 && !p->in_tx && revive(p))
        rc = exec_once(p, sql, n, params, res, err, errlen);
    return rc;
}

static int exec_once(struct pg *p, const char *sql, int n, const char *const *params,
                     struct db_res **res, char *err, size_t errlen)
{
    int slot = prepared(p, sql, n, err, errlen);
    if (slot < 0)
        return -1;
    char name[16] = "";
    if (slot < CACHE)
        snprintf(name, sizeof(name), "s%d", slot);
    PGresult *r = PQexecPrepared(p->c, name, n, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    int ret;
    if (st == PGRES_TUPLES_OK) {
        ret = PQntuples(r);
        if (res) {
            int nc = PQnfields(r);
            struct db_res *out = db_res_new(ret, nc);
            if (!out) {
                snprintf(err, errlen, "database: out of memory");
                PQclear(r);
                return -1;
            }
            for (int c = 0; c < nc; c++)
                out->names[c] = strdup(PQfname(r, c));
            for (int i = 0; i < ret; i++)
                for (int c = 0; c < nc; c++)
                    out->v[i * nc + c] = PQgetisnull(r, i, c) ? NULL : strdup(PQgetvalue(r, i, c));
            *res = out;
        }
    } else if (st == PGRES_COMMAND_OK) {
        ret = atoi(PQcmdTuples(r));
        if (res)
            *res = db_res_new(0, 0);
    } else {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(err, errlen, "database: %s", m ? m : PQerrorMessage(p->c));
        ret = state && (!strcmp(state, "23505") || !strcmp(state, "23503")) ? -2 : -1;
    }
    PQclear(r);
    return ret;
}

static int pg_script(void *h, const char *sql, char *err, size_t errlen)
{
    struct pg *p = h;
    if (!strcmp(sql, "COMMIT") || !strcmp(sql, "ROLLBACK"))
        p->in_tx = false;
    if (revive(p) && !strncmp(sql, "ROLLBACK", 8))
        return 0;   /* the transaction died with the old session */
    PGresult *r = PQexec(p->c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ret = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        snprintf(err, errlen, "database: %s", m ? m : PQerrorMessage(p->c));
        ret = -1;
    }
    if (!ret && !strcmp(sql, "BEGIN"))
        p->in_tx = true;
    PQclear(r);
    return ret;
}

const struct db_ops db_pg_ops = { "postgresql", pg_open, pg_close, pg_exec, pg_script };
