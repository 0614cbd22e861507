/* Pre-migration checks: each finding names its check and gives a reason;
 * errors block the migration, warnings do not. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "center/center.h"
#include "center/checks.h"

static void finding(json_object *report, const char *check, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void finding(json_object *report, const char *check, const char *level, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "check", json_object_new_string(check));
    json_object_object_add(o, "level", json_object_new_string(level));
    json_object_object_add(o, "reason", json_object_new_string(reason));
    json_object_array_add(report, o);
}

/* Source and destination are different, connected hosts (and the VM is
 * in the inventory, on a known host). */
static int check_hosts(struct db *db, const char *vm, const char *dst, json_object *report,
                       char *err, size_t errlen)
{
    static const char *const check = "hosts";
    struct db_res *r;
    if (db_exec(db, "SELECT h.name, h.state FROM vms v LEFT JOIN hosts h ON h.id = v.host_id"
                    " WHERE v.name = ?", 1, (const char *[]){ vm }, &r, err, errlen) < 0)
        return -1;
    int errors = 1;
    if (!r->nrows)
        finding(report, check, "error", "no VM named '%.64s' in the inventory", vm);
    else if (!db_val(r, 0, 0))
        finding(report, check, "error", "VM %s is on no known host", vm);
    else if (!strcmp(db_val(r, 0, 0), dst))
        finding(report, check, "error", "VM %s is on host %s already", vm, dst);
    else if (strcmp(db_val(r, 0, 1), "connected"))
        finding(report, check, "error", "the source host %s is %s, not connected", db_val(r, 0, 0),
                db_val(r, 0, 1));
    else
        errors = 0;
    db_res_free(r);
    if (db_exec(db, "SELECT state FROM hosts WHERE name = ?", 1, (const char *[]){ dst }, &r, err,
                errlen) < 0)
        return -1;
    if (!r->nrows) {
        finding(report, check, "error", "no host named '%.64s' in the inventory", dst);
        errors++;
    } else if (strcmp(db_val(r, 0, 0), "connected")) {
        finding(report, check, "error", "the destination host %s is %s, not connected", dst,
                db_val(r, 0, 0));
        errors++;
    }
    db_res_free(r);
    return errors;
}

int checks_migrate(struct db *db, const char *vm, const char *dst, json_object *report, char *err,
                   size_t errlen)
{
    return check_hosts(db, vm, dst, report, err, errlen);
}
