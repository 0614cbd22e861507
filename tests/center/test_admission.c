/* Admission of migrations (center/admission.c) on a fresh SQLite inventory:
 * a host labelled 1 GbE takes 4 migrations at once, one labelled 10 GbE 8,
 * a host without a migration interface 4, either end counts (source or
 * destination), and a datastore takes 128. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "center/center.h"
#include "tests/center/check.h"

struct center_cfg cfg;   /* the library's; unused here */

static void add_host(struct db *db, const char *name, const char *facts)
{
    char err[ERRLEN];
    if (DBQ(db, NULL, err, "INSERT INTO hosts (name, address, cluster_id, state, facts, added, updated)"
                           " VALUES (?, '127.0.0.1:1', 1, 'connected', ?, 'now', 'now')", name, facts) < 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
}

static json_object *migration(const char *src, const char *dst, const char *ds)
{
    char text[1024];
    snprintf(text, sizeof(text), "{\"source\": \"%s\", \"host\": \"%s\", \"datastores\": [%s%s%s]}", src,
             dst, ds ? "\"" : "", ds ? ds : "", ds ? "\"" : "");
    return json_tokener_parse(text);
}

/* How many src -> dst migrations (on datastore ds) are admitted one after
 * the other, each running once admitted (at most 200). */
static int admitted(struct db *db, const char *src, const char *dst, const char *ds)
{
    json_object *running = json_object_new_array();
    int n = 0;
    for (; n < 200; n++) {
        json_object *p = migration(src, dst, ds);
        if (!admission_admit(db, running, p)) {
            json_object_put(p);
            break;
        }
        json_object_array_add(running, p);
    }
    json_object_put(running);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/test_admission.XXXXXX", url[64], err[ERRLEN];
    int v;
    if (!mkdtemp(dir))
        return 1;
    snprintf(url, sizeof(url), "sqlite:%s/center.db", dir);
    struct db *db = db_open(url, err, sizeof(err));
    if (!db || db_migrate(db, &v, err, sizeof(err)) < 0 ||
        DBQ0(db, NULL, err, "INSERT INTO clusters (name, description, created) VALUES ('c1', '', 'now')") < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    add_host(db, "g1", "{\"migration_interfaces\": [{\"speed_mbps\": 1000}]}");
    add_host(db, "g2", "{\"migration_interfaces\": [{\"speed_mbps\": 1000}]}");
    add_host(db, "t1", "{\"migration_interfaces\": [{\"speed_mbps\": 10000}]}");
    add_host(db, "t2", "{\"migration_interfaces\": [{\"speed_mbps\": 25000}]}");
    add_host(db, "none", "{\"migration_interfaces\": []}");

    CHECK(admission_host_limit(1000) == 4 && admission_host_limit(9999) == 4, "under 10 GbE: 4");
    CHECK(admission_host_limit(10000) == 8 && admission_host_limit(100000) == 8, "10 GbE and more: 8");
    CHECK(admitted(db, "g1", "t1", NULL) == 4, "1 GbE source: %d", admitted(db, "g1", "t1", NULL));
    CHECK(admitted(db, "t1", "g1", NULL) == 4, "1 GbE destination: %d", admitted(db, "t1", "g1", NULL));
    CHECK(admitted(db, "t1", "t2", NULL) == 8, "10 GbE both: %d", admitted(db, "t1", "t2", NULL));
    CHECK(admitted(db, "none", "t2", NULL) == 4, "no interface: %d", admitted(db, "none", "t2", NULL));

    /* the ends count wherever they appear: g1's 4 slots are full with two
     * migrations out and two in */
    json_object *running = json_object_new_array();
    json_object_array_add(running, migration("g1", "t1", NULL));
    json_object_array_add(running, migration("g1", "t2", NULL));
    json_object_array_add(running, migration("t1", "g1", NULL));
    json_object *p = migration("g2", "t2", NULL);
    CHECK(admission_admit(db, running, p), "g2 -> t2 with 3 on g1: refused");
    json_object_array_add(running, migration("t2", "g1", NULL));
    CHECK(admission_admit(db, running, p), "g2 -> t2 with 4 on g1: refused");
    json_object_put(p);
    p = migration("g2", "g1", NULL);
    CHECK(!admission_admit(db, running, p), "g2 -> g1 with 4 on g1: admitted");
    json_object_put(p);

    /* 128 per datastore: fill it from many 10 GbE pairs (8 each) */
    char names[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "x%d", i);
        add_host(db, names[i], "{\"migration_interfaces\": [{\"speed_mbps\": 10000}]}");
    }
    json_object_put(running);
    running = json_object_new_array();
    int n = 0;
    for (int i = 0; i < 40; i += 2)
        for (int k = 0; k < 8; k++) {
            p = migration(names[i], names[i + 1], "ds-uuid");
            if (admission_admit(db, running, p)) {
                json_object_array_add(running, p);
                n++;
            } else {
                json_object_put(p);
            }
        }
    CHECK(n == 128, "one datastore admitted %d migrations", n);
    p = migration("g2", "t2", "other-uuid");
    CHECK(admission_admit(db, running, p), "another datastore refused");
    json_object_put(p);
    json_object_put(running);

    db_close(db);
    char path[128];
    snprintf(path, sizeof(path), "%s/center.db", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/center.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/center.db-shm", dir);
    unlink(path);
    rmdir(dir);
    if (failures)
        fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}
