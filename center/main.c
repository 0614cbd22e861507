/* ferry-center, the Ferry manager (docs/center.md): the inventory of
 * clusters, hosts, datastores, networks and VMs in a database (SQLite or
 * PostgreSQL), a REST/JSON API over HTTPS with bearer tokens, persisted
 * tasks run by worker threads, and the certificate authority of its hosts.
 *
 *   ferry-center --db URL --listen ADDR --tls-dir DIR --state-dir DIR
 *   ferry-center token create --db URL --role admin|readonly */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "center/center.h"
#include "common/https.h"
#include "common/tls.h"

struct center_cfg cfg = { .workers = 4 };

static bool exists(const char *dir, const char *name)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* The manager is its hosts' CA: a new tls-dir gets a CA and the manager's
 * own identity (CN ferry-center), used for its API and towards ferryd. */
static int tls_setup(char *err, size_t errlen)
{
    if (!exists(cfg.tls_dir, "ca.pem") && !exists(cfg.tls_dir, "cert.pem")) {
        if (tls_ca_init(cfg.tls_dir, "ferry-center", TLS_DEFAULT_DAYS, err, errlen) < 0)
            return -1;
        center_log("made the cluster CA and the manager's certificate in %s", cfg.tls_dir);
    }
    if (!exists(cfg.tls_dir, "ca-key.pem")) {
        snprintf(err, errlen, "%s/ca-key.pem is missing: the manager must hold its hosts' CA",
                 cfg.tls_dir);
        return -1;
    }
    return 0;
}

/* The API's TLS context: common/tls.c's (TLS 1.3, its cipher policy, the
 * manager's certificate) without its demand for a client certificate:
 * API users authenticate with bearer tokens, and a browser or curl has no
 * certificate from our CA. */
static SSL_CTX *api_ctx(char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_ctx_new(cfg.tls_dir, true, err, errlen);
    if (ctx)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

static struct sockaddr_storage listen_ss;
static int listen_len;

/* Numeric IP:PORT, checked before anything is created. Port 0 means any
 * free port (logged; for tests), which libevent's parser refuses, so the
 * port is parsed here. */
static int parse_listen(char *err, size_t errlen)
{
    char host[128];
    const char *colon = strrchr(cfg.listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || !colon[1] || *end || port < 0 || port > 65535 ||
        (size_t)(colon - cfg.listen) + 8 > sizeof(host)) {
        snprintf(err, errlen, "--listen: '%s' is not IP:PORT", cfg.listen);
        return -1;
    }
    snprintf(host, sizeof(host), "%.*s:1", (int)(colon - cfg.listen), cfg.listen);
    listen_len = sizeof(listen_ss);
    if (evutil_parse_sockaddr_port(host, (struct sockaddr *)&listen_ss, &listen_len) < 0) {
        snprintf(err, errlen, "--listen: '%s' is not IP:PORT (numeric)", cfg.listen);
        return -1;
    }
    /* sin_port and sin6_port sit at the same offset */
    ((struct sockaddr_in *)&listen_ss)->sin_port = htons((uint16_t)port);
    return 0;
}

static int bind_listen(struct event_base *base, struct evhttp *http, char *err, size_t errlen)
{
    struct sockaddr_storage ss = listen_ss;
    int len = listen_len;
    struct evconnlistener *l = https_listen(base, http, (struct sockaddr *)&ss, len);
    if (!l) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg.listen, strerror(errno));
        return -1;
    }
    socklen_t sl = sizeof(ss);
    char host[64];
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sl);
    evutil_inet_ntop(ss.ss_family, ss.ss_family == AF_INET6
                                       ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                       : (void *)&((struct sockaddr_in *)&ss)->sin_addr,
                     host, sizeof(host));
    int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    center_log("serving HTTPS on %s%s%s:%d", ss.ss_family == AF_INET6 ? "[" : "", host,
               ss.ss_family == AF_INET6 ? "]" : "", port);
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    center_log("signal %d: exiting", (int)sig);
    event_base_loopexit(arg, NULL);
}

static void usage(FILE *f)
{
    fputs("usage: ferry-center --db URL --listen IP:PORT --tls-dir DIR --state-dir DIR [--workers N]\n"
          "       ferry-center token create --db URL --role admin|readonly [--description TEXT]\n"
          "  --db URL         sqlite:PATH, or postgresql://USER@HOST/DB (libpq URI)\n"
          "  --listen IP:PORT the HTTPS API (port 0: any free port, logged)\n"
          "  --tls-dir DIR    the cluster CA and the manager's certificate (made when empty)\n"
          "  --state-dir DIR  the manager's files (issued host certificates)\n"
          "  --workers N      task worker threads (default 4)\n", f);
}

static int token_cmd(char *err, size_t errlen, const char *role, const char *desc)
{
    char tok[80];
    int v;
    struct db *db = db_open(cfg.db_url, err, errlen);
    if (!db || db_migrate(db, &v, err, errlen) < 0 ||
        token_create(db, role, desc ? desc : "", tok, sizeof(tok), err, errlen) < 0) {
        db_close(db);
        return 1;
    }
    db_close(db);
    printf("%s\n", tok);
    return 0;
}

static int serve(char *err, size_t errlen)
{
    int version;
    if (parse_listen(err, errlen) < 0)
        return 1;
    char hosts[4200];
    snprintf(hosts, sizeof(hosts), "%s/hosts", cfg.state_dir);
    if ((mkdir(cfg.state_dir, 0700) < 0 && errno != EEXIST) || (mkdir(hosts, 0700) < 0 && errno != EEXIST)) {
        snprintf(err, errlen, "cannot create %.900s: %s", hosts, strerror(errno));
        return 1;
    }
    if (tls_setup(err, errlen) < 0)
        return 1;
    struct db *db = db_open(cfg.db_url, err, errlen);
    if (!db || db_migrate(db, &version, err, errlen) < 0 || auth_bootstrap(db, err, errlen) < 0 ||
        tasks_reconcile(db, err, errlen) < 0)
        return 1;
    center_log("database %s, schema version %d", db_backend(db), version);
    SSL_CTX *ctx = api_ctx(err, errlen);
    if (!ctx)
        return 1;
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (!http) {
        snprintf(err, errlen, "cannot set up the event loop");
        return 1;
    }
    evhttp_set_bevcb(http, https_bevcb, ctx);
    api_register(http, db);
    if (bind_listen(base, http, err, errlen) < 0 || tasks_start(cfg.workers, err, errlen) < 0)
        return 1;
    struct event *sigs[2] = { evsignal_new(base, SIGTERM, on_signal, base),
                              evsignal_new(base, SIGINT, on_signal, base) };
    event_add(sigs[0], NULL);
    event_add(sigs[1], NULL);
    event_base_dispatch(base);
    tasks_stop();
    event_free(sigs[0]);
    event_free(sigs[1]);
    evhttp_free(http);
    event_base_free(base);
    SSL_CTX_free(ctx);
    db_close(db);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "db", required_argument, NULL, 'd' },        { "listen", required_argument, NULL, 'l' },
        { "tls-dir", required_argument, NULL, 't' },   { "state-dir", required_argument, NULL, 's' },
        { "workers", required_argument, NULL, 'w' },   { "role", required_argument, NULL, 'r' },
        { "description", required_argument, NULL, 'D' }, { "help", no_argument, NULL, 'h' },
        { 0 } };
    const char *role = NULL, *desc = NULL;
    bool token = argc > 2 && !strcmp(argv[1], "token") && !strcmp(argv[2], "create");
    if (token)
        optind = 3;
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'd': cfg.db_url = optarg; break;
        case 'l': cfg.listen = optarg; break;
        case 't': cfg.tls_dir = optarg; break;
        case 's': cfg.state_dir = optarg; break;
        case 'r': role = optarg; break;
        case 'D': desc = optarg; break;
        case 'w':
            cfg.workers = atoi(optarg);
            if (cfg.workers < 1 || cfg.workers > 16) {
                fprintf(stderr, "ferry-center: --workers: '%s' is not 1..16\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "ferry-center: %s '%s' (see --help)\n",
                    o == ':' ? "missing argument to" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !cfg.db_url || (token ? !role : !cfg.listen || !cfg.tls_dir || !cfg.state_dir)) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);   /* before any thread */
    int rc = token ? token_cmd(err, sizeof(err), role, desc) : serve(err, sizeof(err));
    if (rc)
        fprintf(stderr, "ferry-center: %s\n", err);
    curl_global_cleanup();
    return rc;
}
