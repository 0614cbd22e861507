/* Pre-migration compatibility checks (the vMotion checks), read from the
 * inventory: docs/center.md, "Pre-migration checks". */
#ifndef FERRY_CENTER_CHECKS_H
#define FERRY_CENTER_CHECKS_H

#include <stddef.h>

#include <json-c/json.h>

#include "center/db.h"

/* Check moving VM vm to host dst. Appends {"check": ID, "level": "error" |
 * "warning", "reason": one sentence} to the JSON array report for every
 * problem found; errors block the migration, warnings do not. Returns the
 * number of errors, or -1 with err on a database failure. Changes nothing. */
int checks_migrate(struct db *db, const char *vm, const char *dst, json_object *report, char *err,
                   size_t errlen);

#endif
