/* The database layer on one backend (the URL is argv[1]; db.sh starts a
 * private PostgreSQL for the pg run): migrations from empty and again,
 * parameters that look like SQL stay data, constraint violations are told
 * apart, transactions roll back, task rows round-trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "center/center.h"
#include "tests/center/check.h"

struct center_cfg cfg;   /* the library's; unused here */

static long long count(struct db *db, const char *sql)
{
    char err[ERRLEN];
    struct db_res *r;
    if (db_exec(db, sql, 0, NULL, &r, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", sql, err);
        exit(1);
    }
    long long n = db_int(r, 0, 0);
    db_res_free(r);
    return n;
}

int main(int argc, char **argv)
{
    char err[ERRLEN];
    int v = -1;
    if (argc != 2) {
        fprintf(stderr, "usage: test_db DB-URL\n");
        return 2;
    }
    struct db *db = db_open(argv[1], err, sizeof(err));
    if (!db) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    CHECK(db_open("mysql://x", err, sizeof(err)) == NULL && strstr(err, "neither"), "mysql: accepted (%s)", err);

    /* from empty to the newest version, then a no-op */
    CHECK(db_migrate(db, &v, err, sizeof(err)) == 0, "migrate: %s", err);
    CHECK(v == db_schema_latest() && v >= 2, "version %d", v);
    CHECK(count(db, "SELECT COUNT(*) FROM schema_version") == v, "schema_version rows");
    CHECK(db_migrate(db, &v, err, sizeof(err)) == 0, "migrate again: %s", err);
    CHECK(count(db, "SELECT COUNT(*) FROM schema_version") == v, "migrating twice added rows");

    /* parameters are data, never SQL */
    const char *evil = "x'); DROP TABLE clusters; --";
    CHECK(DBQ(db, NULL, err, "INSERT INTO clusters (name, description, created) VALUES (?, ?, ?)",
              "c1", evil, "t") == 1, "insert: %s", err);
    struct db_res *r;
    CHECK(DBQ(db, &r, err, "SELECT description, name FROM clusters WHERE name = ?", "c1") == 1, "select: %s", err);
    CHECK(r && !strcmp(db_val(r, 0, 0), evil), "the quote-laden value came back changed");
    CHECK(r && !strcmp(r->names[1], "name"), "column name");
    db_res_free(r);
    CHECK(DBQ(db, NULL, err, "SELECT name FROM clusters WHERE name = ?", "c1' OR '1'='1") == 0,
          "a quoted OR matched rows");

    /* unique and foreign-key violations are -2, other errors -1 */
    CHECK(DBQ(db, NULL, err, "INSERT INTO clusters (name, description, created) VALUES (?, ?, ?)",
              "c1", "", "t") == -2, "duplicate: not -2 (%s)", err);
    CHECK(DBQ(db, NULL, err, "INSERT INTO hosts (name, address, cluster_id, state, added, updated)"
                             " VALUES (?, ?, ?, ?, ?, ?)", "h1", "a:1", "999", "adding", "t", "t") == -2,
          "unknown cluster: not -2 (%s)", err);
    CHECK(DBQ0(db, NULL, err, "SELECT nope FROM clusters") == -1 && !strncmp(err, "database: ", 10),
          "bad SQL: %s", err);

    /* a rolled-back transaction leaves nothing */
    CHECK(db_begin(db, err, sizeof(err)) == 0, "begin: %s", err);
    CHECK(DBQ(db, NULL, err, "INSERT INTO clusters (name, description, created) VALUES (?, ?, ?)",
              "c2", "", "t") == 1, "insert c2: %s", err);
    db_rollback(db);
    CHECK(count(db, "SELECT COUNT(*) FROM clusters") == 1, "rollback kept a row");

    /* hosts with their cluster; NULL in, NULL out */
    CHECK(DBQ(db, NULL, err, "INSERT INTO hosts (name, address, cluster_id, state, added, updated, facts)"
                             " SELECT ?, ?, id, ?, ?, ?, ? FROM clusters WHERE name = ?",
              "h1", "127.0.0.1:8443", "adding", "t", "t", NULL, "c1") == 1, "host: %s", err);
    CHECK(DBQ(db, &r, err, "SELECT facts, cluster_id FROM hosts WHERE name = ?", "h1") == 1, "%s", err);
    CHECK(r && db_val(r, 0, 0) == NULL && db_int(r, 0, 1) > 0, "NULL facts / cluster id");
    db_res_free(r);
    CHECK(DBQ(db, NULL, err, "UPDATE hosts SET state = ? WHERE name = ?", "connected", "h1") == 1,
          "update count: %s", err);
    CHECK(DBQ(db, NULL, err, "UPDATE hosts SET state = ? WHERE name = ?", "connected", "nope") == 0,
          "update of nothing");

    /* tasks: create, claim once, JSON out */
    json_object *p = json_object_new_object();
    long long id = task_create(db, "host.add", "h1", p, "test", err, sizeof(err));
    json_object_put(p);
    CHECK(id > 0, "task_create: %s", err);
    char ids[24];
    fmt_ll(ids, id);
    const char *claim = "UPDATE tasks SET state = 'running' WHERE id = ? AND state = 'queued'";
    CHECK(DBQ(db, NULL, err, claim, ids) == 1, "first claim");
    CHECK(DBQ(db, NULL, err, claim, ids) == 0, "second claim won too");
    CHECK(DBQ(db, &r, err, "SELECT " TASK_COLS " FROM tasks WHERE id = ?", ids) == 1, "%s", err);
    json_object *t = r ? task_row_json(r, 0) : NULL;
    const char *js = json_object_to_json_string(t);
    CHECK(strstr(js, "\"state\": \"running\"") && strstr(js, "\"kind\": \"host.add\"") &&
          strstr(js, "\"cancel_requested\": false"), "task json %s", js);
    json_object_put(t);
    db_res_free(r);
    /* RETURNING, as the API uses it */
    CHECK(DBQ(db, &r, err, "UPDATE tasks SET phase = ? WHERE id = ? RETURNING id, phase", "p", ids) == 1 &&
          !strcmp(db_val(r, 0, 1), "p"), "RETURNING: %s", err);
    db_res_free(r);

    /* a database from a newer ferry-center is refused, untouched */
    CHECK(DBQ(db, NULL, err, "INSERT INTO schema_version (version, applied) VALUES (?, ?)", "999", "t") == 1,
          "%s", err);
    CHECK(db_migrate(db, &v, err, sizeof(err)) < 0 && strstr(err, "newer"), "newer schema: %s", err);
    CHECK(!strcmp(db_backend(db), strncmp(argv[1], "sqlite:", 7) ? "postgresql" : "sqlite"), "backend");
    db_close(db);
    if (failures)
        fprintf(stderr, "test_db %s: %d failures\n", argv[1], failures);
    return failures != 0;
}
