/* ferryd's configuration file (docs/ferryd.md): strict JSON, unknown keys
 * and wrong types are errors, as in VM specs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/ferryd.h"

const struct datastore *config_datastore(const struct config *c, const char *name)
{
    for (int i = 0; i < c->ndss && c->dss[i].name; i++)   /* NULL: still loading */
        if (!strcmp(c->dss[i].name, name))
            return &c->dss[i];
    return NULL;
}

const struct network *config_network(const struct config *c, const char *name)
{
    for (int i = 0; i < c->nnets && c->nets[i].name; i++)
        if (!strcmp(c->nets[i].name, name))
            return &c->nets[i];
    return NULL;
}

static char *dup_abs(const char *s, const char *what, char *err, size_t errlen)
{
    if (s[0] != '/') {
        snprintf(err, errlen, "%s: '%s' must be an absolute path", what, s);
        return NULL;
    }
    return strdup(s);
}

/* Each element of a config array: an object with only `keys`. */
static json_object *config_item(json_object *a, size_t i, const char *list, const char *const *keys,
                                char *what, size_t whatlen, char *err, size_t errlen)
{
    json_object *o = json_object_array_get_idx(a, i);
    snprintf(what, whatlen, "config.%s[%zu]", list, i);
    if (!json_object_is_type(o, json_type_object)) {
        snprintf(err, errlen, "%s: expected an object", what);
        return NULL;
    }
    return json_only_keys(o, what, keys, err, errlen) < 0 ? NULL : o;
}

static int config_lists(json_object *root, struct config *c, char *err, size_t errlen)
{
    static const char *const mig_keys[] = { "address", "nic", "speed_mbps", NULL };
    static const char *const net_keys[] = { "name", "bridge", NULL };
    static const char *const ds_keys[] = { "name", "path", NULL };
    json_object *migs, *nets, *dss, *o;
    char what[64];
    if (json_get_typed(root, "migration_interfaces", "config", json_type_array, &migs, err, errlen) < 0 ||
        json_get_typed(root, "networks", "config", json_type_array, &nets, err, errlen) < 0 ||
        json_get_typed(root, "datastores", "config", json_type_array, &dss, err, errlen) < 0)
        return -1;
    c->nmigs = migs ? (int)json_object_array_length(migs) : 0;
    c->nnets = nets ? (int)json_object_array_length(nets) : 0;
    c->ndss = dss ? (int)json_object_array_length(dss) : 0;
    c->migs = calloc((size_t)c->nmigs + 1, sizeof(*c->migs));
    c->nets = calloc((size_t)c->nnets + 1, sizeof(*c->nets));
    c->dss = calloc((size_t)c->ndss + 1, sizeof(*c->dss));
    for (int i = 0; i < c->nmigs; i++) {
        const char *addr = NULL, *nic = NULL;
        int64_t speed = 0;
        if (!(o = config_item(migs, (size_t)i, "migration_interfaces", mig_keys, what,
                              sizeof(what), err, errlen)) ||
            json_get_string(o, "address", what, true, &addr, err, errlen) < 0 ||
            json_get_string(o, "nic", what, true, &nic, err, errlen) < 0 ||
            json_get_int(o, "speed_mbps", what, true, 1, 10000000, &speed, err, errlen) < 0)
            return -1;
        c->migs[i] = (struct mig_iface){ strdup(addr), strdup(nic), (int)speed };
    }
    for (int i = 0; i < c->nnets; i++) {
        const char *name = NULL, *bridge = NULL;
        if (!(o = config_item(nets, (size_t)i, "networks", net_keys, what, sizeof(what), err, errlen)) ||
            json_get_string(o, "name", what, true, &name, err, errlen) < 0 ||
            json_get_string(o, "bridge", what, true, &bridge, err, errlen) < 0)
            return -1;
        if (config_network(c, name) || !*name || !*bridge || strlen(bridge) > 15) {
            snprintf(err, errlen, "%s: empty or duplicate name, or bad bridge name", what);
            return -1;
        }
        c->nets[i] = (struct network){ strdup(name), strdup(bridge) };
    }
    for (int i = 0; i < c->ndss; i++) {
        const char *name = NULL, *path = NULL;
        if (!(o = config_item(dss, (size_t)i, "datastores", ds_keys, what, sizeof(what), err, errlen)) ||
            json_get_string(o, "name", what, true, &name, err, errlen) < 0 ||
            json_get_string(o, "path", what, true, &path, err, errlen) < 0)
            return -1;
        if (config_datastore(c, name) || !*name) {
            snprintf(err, errlen, "%s: empty or duplicate name '%s'", what, name);
            return -1;
        }
        c->dss[i].name = strdup(name);
        if (!(c->dss[i].path = dup_abs(path, what, err, errlen)))
            return -1;
    }
    return 0;
}

int config_load(const char *path, struct config *c, char *err, size_t errlen)
{
    static const char *const keys[] = { "host_name", "listen", "state_dir", "tls_dir", "ferry_vmm",
                                        "migration_interfaces", "networks", "datastores", NULL };
    size_t len;
    char *text = read_file(path, 1 << 20, &len), host[256] = "";
    if (!text) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    json_object *root = json_parse_strict(text, len, err, errlen);
    free(text);
    const char *name = NULL, *listen = NULL, *state = NULL, *tls = NULL, *vmm = FERRY_VMM_DEFAULT;
    int rc = -1;
    if (!root)
        return -1;
    if (!json_object_is_type(root, json_type_object))
        snprintf(err, errlen, "config: expected a JSON object");
    else if (json_only_keys(root, "config", keys, err, errlen) == 0 &&
             json_get_string(root, "host_name", "config", false, &name, err, errlen) == 0 &&
             json_get_string(root, "listen", "config", true, &listen, err, errlen) == 0 &&
             json_get_string(root, "state_dir", "config", true, &state, err, errlen) == 0 &&
             json_get_string(root, "tls_dir", "config", true, &tls, err, errlen) == 0 &&
             json_get_string(root, "ferry_vmm", "config", false, &vmm, err, errlen) == 0 &&
             (c->state_dir = dup_abs(state, "config.state_dir", err, errlen)) &&
             (c->tls_dir = dup_abs(tls, "config.tls_dir", err, errlen)) &&
             (c->ferry_vmm = dup_abs(vmm, "config.ferry_vmm", err, errlen)) &&
             config_lists(root, c, err, errlen) == 0)
        rc = 0;
    if (rc == 0) {
        if (!name)
            gethostname(host, sizeof(host) - 1);
        c->host_name = strdup(name ? name : host);
        c->listen = strdup(listen);
    }
    json_object_put(root);
    return rc;
}

void config_free(struct config *c)
{
    for (int i = 0; c->migs && i < c->nmigs; i++) {
        free(c->migs[i].address);
        free(c->migs[i].nic);
    }
    for (int i = 0; c->nets && i < c->nnets; i++) {
        free(c->nets[i].name);
        free(c->nets[i].bridge);
    }
    for (int i = 0; c->dss && i < c->ndss; i++) {
        free(c->dss[i].name);
        free(c->dss[i].path);
    }
    free(c->migs);
    free(c->nets);
    free(c->dss);
    free(c->host_name);
    free(c->listen);
    free(c->state_dir);
    free(c->tls_dir);
    free(c->ferry_vmm);
    memset(c, 0, sizeof(*c));
}
