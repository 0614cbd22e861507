/* The schema, as migrations: step N brings the database from version N-1
 * to N (center/db.c applies the missing ones in one transaction and records
 * each in schema_version). Never edit a released step; append a new one.
 * The text is shared by SQLite and PostgreSQL: @ID@ is the auto-increment
 * key (spelled per backend), times are ISO 8601 UTC text, flags are 0/1
 * integers, JSON documents are text. */
#include "center/schema.h"

const char *const schema_steps[] = {
    /* 1: inventory, tasks, events, API tokens */
    "CREATE TABLE clusters ("
    "  id @ID@,"
    "  name TEXT NOT NULL UNIQUE,"
    "  description TEXT NOT NULL,"
    "  created TEXT NOT NULL);"
    "CREATE TABLE enrolments ("
    "  id @ID@,"
    "  host_name TEXT NOT NULL,"
    "  token_hash TEXT NOT NULL UNIQUE,"
    "  created TEXT NOT NULL,"
    "  expires TEXT NOT NULL,"
    "  redeemed TEXT,"          /* the host fetched its certificate */
    "  used TEXT);"             /* a host add consumed it */
    "CREATE TABLE hosts ("
    "  id @ID@,"
    "  name TEXT NOT NULL UNIQUE,"
    "  address TEXT NOT NULL,"
    "  cluster_id BIGINT NOT NULL REFERENCES clusters(id),"
    "  state TEXT NOT NULL,"    /* adding, connected, disconnected, error */
    "  facts TEXT,"             /* ferryd's GET /v1/host, verbatim */
    "  error TEXT,"
    "  added TEXT NOT NULL,"
    "  updated TEXT NOT NULL);"
    "CREATE TABLE datastores ("
    "  host_id BIGINT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  uuid TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  accessible INTEGER NOT NULL,"
    "  capacity_bytes BIGINT,"
    "  free_bytes BIGINT,"
    "  PRIMARY KEY (host_id, name));"
    "CREATE TABLE networks ("
    "  host_id BIGINT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  bridge TEXT NOT NULL,"
    "  bridge_exists INTEGER NOT NULL,"
    "  PRIMARY KEY (host_id, name));"
    "CREATE TABLE vms ("
    "  id @ID@,"
    "  name TEXT NOT NULL UNIQUE,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  host_id BIGINT REFERENCES hosts(id),"
    "  power_state TEXT NOT NULL,"
    "  spec TEXT,"
    "  updated TEXT NOT NULL);"
    "CREATE TABLE tasks ("
    "  id @ID@,"
    "  kind TEXT NOT NULL,"
    "  target TEXT NOT NULL,"
    "  state TEXT NOT NULL,"    /* queued, running, success, error, cancelled */
    "  percent INTEGER NOT NULL,"
    "  phase TEXT NOT NULL,"
    "  params TEXT NOT NULL,"   /* JSON: what the worker needs */
    "  result TEXT,"            /* JSON */
    "  error TEXT,"
    "  cancel_requested INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL,"
    "  created TEXT NOT NULL,"
    "  started TEXT,"
    "  finished TEXT);"
    "CREATE TABLE events ("
    "  id @ID@,"
    "  time TEXT NOT NULL,"
    "  severity TEXT NOT NULL," /* info, warning, error */
    "  kind TEXT NOT NULL,"
    "  target TEXT NOT NULL,"
    "  message TEXT NOT NULL,"
    "  task_id BIGINT);"
    "CREATE TABLE tokens ("
    "  id @ID@,"
    "  role TEXT NOT NULL,"     /* admin, readonly */
    "  hash TEXT NOT NULL UNIQUE," /* SHA-256 of the token, hex: the token itself is never stored */
    "  description TEXT NOT NULL,"
    "  created TEXT NOT NULL);",

    /* 2: the worker's claim query and the task list scan by state */
    "CREATE INDEX tasks_state ON tasks (state, id);"
    "CREATE INDEX events_target ON events (target, id);"
    "CREATE INDEX hosts_cluster ON hosts (cluster_id);",

    /* 3: a cluster's CPU baseline (the EVC analogue): the JSON array of
     * CPUID feature names its VMs see, NULL for none; the pre-migration
     * checks look up VMs by host */
    "ALTER TABLE clusters ADD COLUMN baseline TEXT;"
    "CREATE INDEX vms_host ON vms (host_id);",
};

const int schema_nsteps = sizeof(schema_steps) / sizeof(schema_steps[0]);
