/* CPU baselines, the EVC analogue: a cluster's list of CPUID feature names
 * (as ferryd reports them in cpu.kvm_features). Every host of the cluster
 * has them all: a baseline a member lacks is refused, and so is a host that
 * lacks one (host.add). VMs started in the cluster are given the list as
 * their spec's cpu_features (ferry-vmm --cpu-features), so they can move to
 * any of its hosts.
 *
 * PUT /v1/clusters/NAME/baseline {"features": [...]} or {"mode": "common"}
 * (the features every member has), DELETE to remove it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "center/center.h"

#define MAX_FEATURES 512

static bool has_feature(json_object *list, const char *name)
{
    for (size_t i = 0; list && i < json_object_array_length(list); i++)
        if (!strcmp(json_object_get_string(json_object_array_get_idx(list, i)), name))
            return true;
    return false;
}

static json_object *host_features(json_object *facts)
{
    json_object *cpu = NULL;
    json_object_object_get_ex(facts, "cpu", &cpu);
    return jarr(cpu, "kvm_features");
}

int features_missing(json_object *want, json_object *facts, char *out, size_t outlen)
{
    json_object *have = host_features(facts);
    int n = 0;
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(want); i++) {
        const char *f = json_object_get_string(json_object_array_get_idx(want, i));
        if (has_feature(have, f))
            continue;
        if (len < outlen)
            len += (size_t)snprintf(out + len, outlen - len, "%s%s", n ? ", " : "", f);
        n++;
    }
    return n;
}

int baseline_lock(struct db *db, const char *cluster_id, char *name, size_t namelen,
                  json_object **baseline, char *err, size_t errlen)
{
    struct db_res *r;
    /* a no-op write: the cluster's row stays locked until the transaction
     * ends, so a baseline being set and a host being added are serialised */
    if (DBQN(db, &r, err, errlen,
             "UPDATE clusters SET baseline = baseline WHERE id = ? RETURNING name, baseline", cluster_id) < 0)
        return -1;
    snprintf(name, namelen, "%s", r->nrows ? db_val(r, 0, 0) : "");
    *baseline = r->nrows ? json_parsed_or_null(db_val(r, 0, 1)) : NULL;
    db_res_free(r);
    return 0;
}

/* {"features": [names]}: distinct names, as ferryd spells them. */
static json_object *features_given(json_object *a, char *err, size_t errlen)
{
    size_t n = json_object_array_length(a);
    if (n == 0 || n > MAX_FEATURES) {
        snprintf(err, errlen, "field 'features': 1 to %d feature names", MAX_FEATURES);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(a, i);
        const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        if (!*s || strlen(s) > 32 ||
            strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(s)) {
            snprintf(err, errlen, "field 'features': item %zu is not a CPU feature name", i);
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s, json_object_get_string(json_object_array_get_idx(a, j)))) {
                snprintf(err, errlen, "field 'features': '%s' listed twice", s);
                return NULL;
            }
    }
    return json_object_get(a);
}

/* The features every host of the cluster has, in the first host's order. */
static json_object *features_common(const struct db_res *hosts)
{
    json_object **facts = calloc((size_t)hosts->nrows, sizeof(*facts)), *common = json_object_new_array();
    if (!facts)
        return common;
    for (int h = 0; h < hosts->nrows; h++)
        facts[h] = json_parsed_or_null(db_val(hosts, h, 1));
    json_object *list = host_features(facts[0]);
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        json_object *f = json_object_array_get_idx(list, i);
        bool everywhere = true;
        for (int h = 1; everywhere && h < hosts->nrows; h++)
            everywhere = has_feature(host_features(facts[h]), json_object_get_string(f));
        if (everywhere)
            json_object_array_add(common, json_object_get(f));
    }
    for (int h = 0; h < hosts->nrows; h++)
        json_object_put(facts[h]);
    free(facts);
    return common;
}

/* A member that lacks a feature of want: its name and the missing ones in
 * err; false when every member has them all. */
static bool member_lacks(const struct db_res *hosts, json_object *want, char *err, size_t errlen)
{
    char missing[1024];
    for (int h = 0; h < hosts->nrows; h++) {
        json_object *facts = json_parsed_or_null(db_val(hosts, h, 1));
        int n = features_missing(want, facts, missing, sizeof(missing));
        json_object_put(facts);
        if (n) {
            snprintf(err, errlen, "host %s of the cluster lacks %d baseline feature%s: %.300s",
                     db_val(hosts, h, 0), n, n == 1 ? "" : "s", missing);
            return true;
        }
    }
    return false;
}

static void baseline_put(struct req *q, const char *cluster)
{
    static const char *const fields[] = { "features", "mode", NULL };
    char err[ERRLEN], cid[24];
    json_object *feats = NULL, *want = NULL;
    const char *mode = NULL;
    struct db_res *r = NULL, *hosts = NULL;
    if (json_only(q->body, fields, err, sizeof(err)) < 0 ||
        json_str(q->body, "mode", false, &mode, err, sizeof(err)) < 0)
        return reply_error(q, 400, "%s", err);
    json_object_object_get_ex(q->body, "features", &feats);
    if (!mode == !feats)
        return reply_error(q, 400, "give either 'features' (a list of names) or 'mode': 'common'");
    if (mode && strcmp(mode, "common"))
        return reply_error(q, 400, "field 'mode': '%.32s' is not 'common'", mode);
    if (feats && !json_object_is_type(feats, json_type_array))
        return reply_error(q, 400, "field 'features': must be a list of feature names");
    if (feats && !(want = features_given(feats, err, sizeof(err))))
        return reply_error(q, 400, "%s", err);
    int code = 500;
    if (db_begin(q->db, err, sizeof(err)) < 0)
        goto fail;
    if (DBQ(q->db, &r, err, "UPDATE clusters SET baseline = baseline WHERE name = ? RETURNING id",
            cluster) < 0)
        goto fail;
    if (!r->nrows) {
        code = 404;
        snprintf(err, sizeof(err), "no cluster named '%.64s'", cluster);
        goto fail;
    }
    snprintf(cid, sizeof(cid), "%s", db_val(r, 0, 0));
    if (DBQ(q->db, &hosts, err, "SELECT name, facts FROM hosts WHERE cluster_id = ? AND facts IS NOT NULL"
                                " ORDER BY name", cid) < 0)
        goto fail;
    code = 409;
    if (mode && !hosts->nrows) {
        snprintf(err, sizeof(err), "cluster %s has no hosts to compute a common baseline from", cluster);
        goto fail;
    }
    if (mode)
        want = features_common(hosts);
    if (member_lacks(hosts, want, err, sizeof(err)))
        goto fail;
    code = 500;
    if (DBQ(q->db, NULL, err, "UPDATE clusters SET baseline = ? WHERE id = ?",
            json_object_to_json_string_ext(want, JSON_C_TO_STRING_PLAIN), cid) < 0 ||
        db_commit(q->db, err, sizeof(err)) < 0)
        goto fail;
    inv_event(q->db, "info", "cluster.baseline", cluster, 0, "cluster %s's CPU baseline set: %zu features%s",
              cluster, json_object_array_length(want), mode ? " common to its hosts" : "");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(cluster));
    json_object_object_add(o, "baseline", want);
    db_res_free(r);
    db_res_free(hosts);
    return reply_json(q, 200, o);
fail:
    db_rollback(q->db);
    db_res_free(r);
    db_res_free(hosts);
    json_object_put(want);
    reply_error(q, code, "%s", err);
}

void api_cluster_baseline(struct req *q, const char *cluster)
{
    char err[ERRLEN];
    if (q->method == EVHTTP_REQ_PUT)
        return baseline_put(q, cluster);
    if (q->method != EVHTTP_REQ_DELETE) {
        evhttp_add_header(evhttp_request_get_output_headers(q->r), "Allow", "PUT, DELETE");
        return reply_error(q, 405, "method not allowed (allowed: PUT, DELETE)");
    }
    int n = DBQ(q->db, NULL, err, "UPDATE clusters SET baseline = NULL WHERE name = ?", cluster);
    if (n < 0)
        return reply_error(q, 500, "%s", err);
    if (!n)
        return reply_error(q, 404, "no cluster named '%.64s'", cluster);
    inv_event(q->db, "info", "cluster.baseline", cluster, 0, "cluster %s's CPU baseline removed", cluster);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(cluster));
    json_object_object_add(o, "baseline", NULL);
    reply_json(q, 200, o);
}
