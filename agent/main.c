/* ferryd: the Ferry host agent. Serves the host's facts and its VMs over
 * HTTPS with mutual TLS 1.3 (docs/ferryd-openapi.yaml), and runs each VM
 * as a detached ferry-vmm that outlives ferryd.
 *
 * HTTP is libevent's evhttp: it is packaged in Debian (libevent-dev), it
 * speaks TLS through OpenSSL itself (bufferevent_openssl), so the SSL_CTX
 * comes from common/tls.c like every other Ferry connection, and its
 * single-threaded event loop fits an agent whose work is short requests
 * against local state: no locks around the VM table. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "agent/ferryd.h"
#include "common/tls.h"

static struct config cfg;

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
        if (!(o = config_item(migs, (size_t)i, "migration_interfaces", mig_keys, what, sizeof(what), err, errlen)) ||
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

static int config_load(const char *path, struct config *c, char *err, size_t errlen)
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

/* evhttp makes each connection's bufferevent here: a TLS server side on
 * the shared context, adjusted per connection (the context stays as
 * common/tls.c made it for the blocking migration streams):
 * - no read-ahead: bytes OpenSSL pulled off the socket beyond the current
 *   record are invisible to libevent, which waits for the socket to become
 *   readable again, so a request could stall until the client sends more;
 * - idle keep-alive connections give their buffers back. */
static struct bufferevent *tls_bevcb(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    if (!ssl)
        return NULL;
    SSL_set_read_ahead(ssl, 0);
    SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* "IP:PORT" or "[IPV6]:PORT". Numeric on purpose: no resolver at start
 * (getaddrinfo's AI_ADDRCONFIG refuses 127.0.0.1 on a host whose only
 * interface is loopback, e.g. in a fresh network namespace). */
static int bind_listen(struct event_base *base, struct evhttp *http, const char *listen,
                       char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (evutil_parse_sockaddr_port(listen, (struct sockaddr *)&ss, &len) < 0 ||
        ((struct sockaddr_in *)&ss)->sin_port == 0) {
        snprintf(err, errlen, "config.listen: '%s' is not IP:PORT", listen);
        return -1;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE, -1,
        (struct sockaddr *)&ss, len);
    if (!l || !evhttp_bind_listener(http, l)) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, strerror(errno));
        if (l)
            evconnlistener_free(l);
        return -1;
    }
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    agent_log("signal %d: exiting (VMs keep running)", (int)sig);
    event_base_loopexit(arg, NULL);
}

static void usage(FILE *f)
{
    fputs("usage: ferryd --config FILE\n"
          "  -c, --config FILE  JSON configuration (docs/ferryd.md)\n"
          "  -h, --help         this help\n", f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                           { "help", no_argument, NULL, 'h' }, { 0 } };
    const char *config = NULL;
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': config = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            agent_log("%s '%s' (see --help)", o == ':' ? "missing argument to" : "unknown option",
                      argv[optind - 1]);
            return 2;
        }
    }
    if (!config || optind < argc) {
        usage(stderr);
        return 2;
    }
    char err[ERRLEN * 2];
    signal(SIGPIPE, SIG_IGN);
    if (config_load(config, &cfg, err, sizeof(err)) < 0) {
        agent_log("%s: %s", config, err);
        return 1;
    }
    if (host_init(err, sizeof(err)) < 0)
        goto fail;
    for (int i = 0; i < cfg.ndss; i++)
        if (datastore_open(&cfg.dss[i], err, sizeof(err)) < 0)
            agent_log("%s (reported as inaccessible)", err);   /* e.g. not mounted yet */
    SSL_CTX *ctx = tls_ctx_new(cfg.tls_dir, true, err, sizeof(err));
    if (!ctx || vms_init(&cfg, err, sizeof(err)) < 0)
        goto fail;

    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (!http) {
        snprintf(err, sizeof(err), "cannot set up the event loop");
        goto fail;
    }
    evhttp_set_bevcb(http, tls_bevcb, ctx);
    api_register(http, &cfg);
    if (bind_listen(base, http, cfg.listen, err, sizeof(err)) < 0)
        goto fail;
    struct event *sigs[2] = { evsignal_new(base, SIGTERM, on_signal, base),
                              evsignal_new(base, SIGINT, on_signal, base) };
    event_add(sigs[0], NULL);
    event_add(sigs[1], NULL);
    agent_log("host %s: serving HTTPS on %s", cfg.host_name, cfg.listen);
    event_base_dispatch(base);
    event_free(sigs[0]);
    event_free(sigs[1]);
    evhttp_free(http);
    event_base_free(base);
    SSL_CTX_free(ctx);
    return 0;
fail:
    agent_log("%s", err);
    return 1;
}
