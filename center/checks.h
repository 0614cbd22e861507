/* Pre-migration checks (docs/center.md, "Compute migration"). */
#ifndef FERRY_CENTER_CHECKS_H
#define FERRY_CENTER_CHECKS_H

#include <stddef.h>

#include <json-c/json.h>

#include "center/db.h"

/* Check whether VM can move to host dst. Each finding is appended to report
 * (a JSON array) as {"check", "level": "error"|"warning", "reason"}.
 * Returns the number of errors (0: the migration may start), or -1 with err
 * when the database fails. */
int checks_migrate(struct db *db, const char *vm, const char *dst, json_object *report, char *err,
                   size_t errlen);

#endif
