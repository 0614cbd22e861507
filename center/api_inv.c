/* Inventory endpoints: clusters, enrolments, hosts, datastores, networks,
 * VMs, tokens. Input is checked completely (unknown fields, types, names,
 * references) before anything is written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "center/center.h"

#define ENROL_TTL (24 * 3600)

static void not_allowed(struct req *q, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", allow);
    reply_error(q, 405, "method not allowed (allowed: %s)", allow);
}

static void db_failed(struct req *q, const char *err)
{
    reply_error(q, 500, "%s", err);
}

/* The body has no field but those in allowed (else a 400 was sent). */
static bool body_ok(struct req *q, const char *const *allowed)
{
    char err[ERRLEN];
    if (json_only(q->body, allowed, err, sizeof(err)) < 0) {
        reply_error(q, 400, "%s", err);
        return false;
    }
    return true;
}

static bool get_name(struct req *q, const char *key, bool required, const char **out)
{
    char err[ERRLEN];
    if (json_str(q->body, key, required, out, err, sizeof(err)) < 0) {
        reply_error(q, 400, "%s", err);
        return false;
    }
    if (*out && !name_valid(*out)) {
        reply_error(q, 400, "field '%s': '%.64s' is not a name (letters, digits, '.', '_', '-';"
                            " at most 63)", key, *out);
        return false;
    }
    return true;
}

static json_object *rows_json(const struct db_res *r, json_object *(*row)(const struct db_res *, int))
{
    json_object *a = json_object_new_array();
    for (int i = 0; i < r->nrows; i++)
        json_object_array_add(a, row(r, i));
    return a;
}

static json_object *cluster_json(const struct db_res *r, int i)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_text_or_null(db_val(r, i, 0)));
    json_object_object_add(o, "description", json_text_or_null(db_val(r, i, 1)));
    json_object_object_add(o, "created", json_text_or_null(db_val(r, i, 2)));
    json_object_object_add(o, "hosts", json_object_new_int((int)db_int(r, i, 3)));
    json_object_object_add(o, "baseline", json_parsed_or_null(db_val(r, i, 4)));
    return o;
}

#define CLUSTER_SELECT "SELECT c.name, c.description, c.created," \
    " (SELECT COUNT(*) FROM hosts h WHERE h.cluster_id = c.id), c.baseline FROM clusters c"

void api_clusters(struct req *q, const char *rest)
{
    char err[ERRLEN], now[40];
    struct db_res *r;
    const char *slash = strchr(rest, '/');
    if (slash) {
        char name[64];
        if (strcmp(slash, "/baseline") || slash - rest >= (long)sizeof(name))
            return reply_error(q, 404, "no such endpoint");
        snprintf(name, sizeof(name), "%.*s", (int)(slash - rest), rest);
        return api_cluster_baseline(q, name);
    }
    if (*rest) {
        if (q->method != EVHTTP_REQ_GET)
            return not_allowed(q, "GET");
        if (DBQ(q->db, &r, err, CLUSTER_SELECT " WHERE c.name = ?", rest) < 0)
            return db_failed(q, err);
        if (r->nrows)
            reply_json(q, 200, cluster_json(r, 0));
        else
            reply_error(q, 404, "no cluster named '%.64s'", rest);
        db_res_free(r);
        return;
    }
    if (q->method == EVHTTP_REQ_GET) {
        if (DBQ0(q->db, &r, err, CLUSTER_SELECT " ORDER BY c.name") < 0)
            return db_failed(q, err);
        reply_json(q, 200, rows_json(r, cluster_json));
        db_res_free(r);
        return;
    }
    if (q->method != EVHTTP_REQ_POST)
        return not_allowed(q, "GET, POST");
    const char *name, *desc = NULL;
    static const char *const fields[] = { "name", "description", NULL };
    if (!body_ok(q, fields) || !get_name(q, "name", true, &name))
        return;
    if (json_str(q->body, "description", false, &desc, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    now_iso(now);
    int rc = DBQ(q->db, NULL, err, "INSERT INTO clusters (name, description, created) VALUES (?, ?, ?)",
                 name, desc ? desc : "", now);
    if (rc == -2)
        return reply_error(q, 409, "a cluster named '%s' exists already", name);
    if (rc < 0)
        return db_failed(q, err);
    inv_event(q->db, "info", "cluster.create", name, 0, "cluster %s created", name);
    if (DBQ(q->db, &r, err, CLUSTER_SELECT " WHERE c.name = ?", name) < 0)
        return db_failed(q, err);
    reply_json(q, 201, cluster_json(r, 0));
    db_res_free(r);
}

/* POST /v1/enrolments {"host_name"}: a one-time token for a new host. */
void api_enrolments(struct req *q, const char *rest)
{
    char err[ERRLEN], now[40], exp[40], tok[80], hash[65];
    if (*rest)
        return reply_error(q, 404, "no such endpoint");
    if (q->method != EVHTTP_REQ_POST)
        return not_allowed(q, "POST");
    static const char *const fields[] = { "host_name", NULL };
    const char *name;
    if (!body_ok(q, fields) || !get_name(q, "host_name", true, &name))
        return;
    if (random_token("fe_", tok, sizeof(tok)) < 0)
        return reply_error(q, 500, "cannot make a random token");
    sha256_hex(tok, hash);
    now_iso(now);
    iso_after(exp, ENROL_TTL);
    if (DBQ(q->db, NULL, err, "INSERT INTO enrolments (host_name, token_hash, created, expires)"
                              " VALUES (?, ?, ?, ?)", name, hash, now, exp) < 0)
        return db_failed(q, err);
    /* the fingerprint lets the host check it talks to this manager before
     * it trusts the CA it receives */
    char path[4200], fp[65];
    snprintf(path, sizeof(path), "%s/ca.pem", cfg.tls_dir);
    char *ca = read_text(path, 1 << 16);
    sha256_hex(ca ? ca : "", fp);
    free(ca);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "host_name", json_object_new_string(name));
    json_object_object_add(o, "token", json_object_new_string(tok));
    json_object_object_add(o, "expires", json_object_new_string(exp));
    json_object_object_add(o, "ca_pem_sha256", json_object_new_string(fp));
    inv_event(q->db, "info", "enrolment.create", name, 0, "enrolment token made for host %s", name);
    reply_json(q, 201, o);
}

/* POST /v1/enrol {"token"}: the host fetches its identity (once). */
void api_enrol(struct req *q, const char *rest)
{
    char err[ERRLEN], now[40], hash[65];
    struct db_res *r;
    if (*rest)
        return reply_error(q, 404, "no such endpoint");
    if (q->method != EVHTTP_REQ_POST)
        return not_allowed(q, "POST");
    static const char *const fields[] = { "token", NULL };
    const char *tok;
    if (!body_ok(q, fields))
        return;
    if (json_str(q->body, "token", true, &tok, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    sha256_hex(tok, hash);
    now_iso(now);
    snprintf(q->who, sizeof(q->who), "enrolment");
    /* the conditional UPDATE redeems a token exactly once */
    if (DBQ(q->db, &r, err, "UPDATE enrolments SET redeemed = ? WHERE token_hash = ?"
                            " AND redeemed IS NULL AND expires > ? RETURNING host_name",
            now, hash, now) < 0)
        return db_failed(q, err);
    if (r->nrows != 1) {
        db_res_free(r);
        return reply_error(q, 401, "unknown, expired or already redeemed enrolment token");
    }
    char name[64];
    snprintf(name, sizeof(name), "%s", db_val(r, 0, 0));
    db_res_free(r);
    json_object *o;
    if (host_enrol_issue(name, &o, err, sizeof(err)) < 0) {
        DBQ(q->db, NULL, err, "UPDATE enrolments SET redeemed = NULL WHERE token_hash = ?", hash);
        return reply_error(q, 500, "%s", err);
    }
    inv_event(q->db, "info", "enrolment.redeem", name, 0, "host %s fetched its certificate", name);
    reply_json(q, 200, o);
}

void api_tokens(struct req *q, const char *rest)
{
    char err[ERRLEN], tok[80];
    if (*rest)
        return reply_error(q, 404, "no such endpoint");
    if (q->method != EVHTTP_REQ_POST)
        return not_allowed(q, "POST");
    static const char *const fields[] = { "role", "description", NULL };
    const char *role, *desc = NULL;
    if (!body_ok(q, fields))
        return;
    if (json_str(q->body, "role", true, &role, err, sizeof(err)) < 0 ||
        json_str(q->body, "description", false, &desc, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    if (strcmp(role, "admin") && strcmp(role, "readonly"))
        return reply_error(q, 400, "field 'role': '%.32s' is neither admin nor readonly", role);
    if (token_create(q->db, role, desc ? desc : "", tok, sizeof(tok), err, sizeof(err)) < 0)
        return db_failed(q, err);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "role", json_object_new_string(role));
    json_object_object_add(o, "token", json_object_new_string(tok));
    reply_json(q, 201, o);
}
