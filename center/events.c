/* Events: the inventory's history (host added, task failed, ...), kept in
 * the database so they survive a restart of the manager. */
#include <stdarg.h>
#include <stdio.h>

#include "center/center.h"

void inv_event(struct db *db, const char *severity, const char *kind, const char *target,
               long long task_id, const char *fmt, ...)
{
    char msg[1024], now[40], tid[24], err[ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    now_iso(now);
    fmt_ll(tid, task_id);
    if (DBQ(db, NULL, err, "INSERT INTO events (time, severity, kind, target, message, task_id)"
                           " VALUES (?, ?, ?, ?, ?, ?)",
            now, severity, kind, target, msg, task_id ? tid : NULL) < 0)
        center_log("cannot record event '%s': %s", msg, err);
}

json_object *event_row_json(const struct db_res *r, int i)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(db_int(r, i, 0)));
    json_object_object_add(o, "time", json_text_or_null(db_val(r, i, 1)));
    json_object_object_add(o, "severity", json_text_or_null(db_val(r, i, 2)));
    json_object_object_add(o, "kind", json_text_or_null(db_val(r, i, 3)));
    json_object_object_add(o, "target", json_text_or_null(db_val(r, i, 4)));
    json_object_object_add(o, "message", json_text_or_null(db_val(r, i, 5)));
    json_object_object_add(o, "task_id", db_val(r, i, 6) ? json_object_new_int64(db_int(r, i, 6)) : NULL);
    return o;
}
