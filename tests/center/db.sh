#!/bin/bash
# db.sh sqlite|pg: the database layer's test (test_db.c) on a fresh SQLite
# file, or on a private PostgreSQL server started here.
# shellcheck source=tests/center/lib.sh
. "$(dirname "$0")/lib.sh"
: "${TEST_DB:?TEST_DB is not set}"
db_setup
"$TEST_DB" "$DBURL" 2>"$TMP/test_db.err" || { cat "$TMP/test_db.err" >&2; fail "test_db failed"; }
