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
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "agent/ferryd.h"
#include "common/https.h"
#include "common/tls.h"

static struct config cfg;

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
    if (!https_listen(base, http, (struct sockaddr *)&ss, len)) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, strerror(errno));
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
    evhttp_set_bevcb(http, https_bevcb, ctx);
    api_register(http, &cfg);
    if (migrate_init(base, &cfg) < 0) {
        snprintf(err, sizeof(err), "cannot set up the migration timer");
        goto fail;
    }
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
    migrate_fini();
    evhttp_free(http);
    event_base_free(base);
    SSL_CTX_free(ctx);
    config_free(&cfg);
    return 0;
fail:
    migrate_fini();
    agent_log("%s", err);
    return 1;
}
