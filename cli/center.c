/* ferry's manager commands (govc style): host, cluster, task, and the vm
 * commands that name a VM in the inventory. The manager is --center URL
 * ($FERRY_CENTER), authenticated with --token ($FERRY_TOKEN) and trusted
 * through the cluster CA --ca ($FERRY_CA). Options before the command are
 * the connection's; after it, the command's (so `host add --token` is the
 * host's enrolment token). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli/center.h"
#include "cli/cli.h"

enum { O_CENTER = 256, O_TOKEN, O_CA, O_JSON, O_CLUSTER, O_HOST, O_SPEC, O_PRIORITY, O_FEATURES,
       O_COMMON, O_STATE };

static const struct option opts[] = {
    { "center", required_argument, NULL, O_CENTER }, { "token", required_argument, NULL, O_TOKEN },
    { "ca", required_argument, NULL, O_CA }, { "json", no_argument, NULL, O_JSON },
    { "cluster", required_argument, NULL, O_CLUSTER }, { "host", required_argument, NULL, O_HOST },
    { "spec", required_argument, NULL, O_SPEC }, { "priority", required_argument, NULL, O_PRIORITY },
    { "features", required_argument, NULL, O_FEATURES }, { "common", no_argument, NULL, O_COMMON },
    { "state", required_argument, NULL, O_STATE }, { 0 },
};

/* The options of either family that take a value, so that a value is not
 * taken for a command word. */
static bool takes_value(const char *a)
{
    if (strchr(a, '='))
        return false;
    if (cli_socket_opt_takes_value(a))
        return true;
    for (const struct option *o = opts; o->name; o++)
        if (!strncmp(a, "--", 2) && !strcmp(a + 2, o->name))
            return o->has_arg == required_argument;
    return false;
}

bool center_command(int argc, char **argv)
{
    const char *w[3] = { "", "", "" };
    int nw = 0;
    bool host_opt = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return false;   /* main's help covers both families */
        if (a[0] == '-' && a[1]) {
            host_opt |= !strcmp(a, "--host") || !strncmp(a, "--host=", 7);
            i += takes_value(a);
        } else if (nw < 3) {
            w[nw++] = a;
        }
    }
    if (!strcmp(w[0], "host") || !strcmp(w[0], "cluster") || !strcmp(w[0], "task"))
        return true;
    if (strcmp(w[0], "vm"))
        return false;
    static const char *const verbs[] = { "create", "list", "show", "start", "stop", "delete", NULL };
    for (const char *const *v = verbs; *v; v++)
        if (!strcmp(w[1], *v))
            return true;
    /* `vm migrate NAME --host H` is the manager's; `vm migrate --to` the socket's */
    return !strcmp(w[1], "migrate") && (nw == 3 || host_opt);
}


static void print_json(json_object *o)
{
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int host_add(const struct center *c, const char *addr)
{
    if (!c->cluster || !c->enrol_token)
        return cli_usage("host add needs --cluster C and --token T (the host's enrolment token)");
    json_object *b = json_object_new_object();
    json_object_object_add(b, "address", json_object_new_string(addr));
    json_object_object_add(b, "cluster", json_object_new_string(c->cluster));
    json_object_object_add(b, "enrolment_token", json_object_new_string(c->enrol_token));
    json_object *reply = center_want(c, 202, "POST", "/v1/hosts", b);
    json_object_put(b);
    if (!reply)
        return EXIT_FAILED;
    int rc;
    json_object *t = task_follow(c, task_of_reply(reply), &rc), *res = jget(t, "result");
    if (rc == EXIT_OK && !c->json)
        printf("host %s at %s added to cluster %s: %d datastores, %d port groups, %d VMs\n",
               jstr(res, "host"), addr, c->cluster, json_object_get_int(jget(res, "datastores")),
               json_object_get_int(jget(res, "networks")), json_object_get_int(jget(res, "vms")));
    json_object_put(t);
    json_object_put(reply);
    return rc;
}

static void host_print(json_object *h)
{
    json_object *f = jget(h, "facts"), *cpu = jget(f, "cpu"), *mem = jget(f, "memory");
    printf("name:       %s\naddress:    %s\ncluster:    %s\nstate:      %s%s%s\n", jstr(h, "name"),
           jstr(h, "address"), jstr(h, "cluster"), jstr(h, "state"), jstr(h, "error")[0] ? ": " : "",
           jstr(h, "error"));
    if (cpu)
        printf("cpu:        %s %s, %d CPUs, %zu KVM CPUID features\n", jstr(cpu, "vendor"), jstr(cpu, "model"),
               json_object_get_int(jget(cpu, "count")),
               json_object_array_length(jget(cpu, "kvm_features")));
    if (mem)
        printf("memory:     %lld MiB\n", (long long)(json_object_get_int64(jget(mem, "total_bytes")) >> 20));
    json_object *ds = jget(f, "datastores"), *nets = jget(f, "networks");
    for (size_t i = 0; ds && i < json_object_array_length(ds); i++) {
        json_object *d = json_object_array_get_idx(ds, i);
        printf("datastore:  %s %s (%s)\n", jstr(d, "name"), jstr(d, "path"), jstr(d, "uuid"));
    }
    for (size_t i = 0; nets && i < json_object_array_length(nets); i++) {
        json_object *n = json_object_array_get_idx(nets, i);
        printf("port group: %s on bridge %s\n", jstr(n, "name"), jstr(n, "bridge"));
    }
    printf("added:      %s\nupdated:    %s\n", jstr(h, "added"), jstr(h, "updated"));
}

static int cmd_host(const struct center *c, int nw, char **w)
{
    char path[256];
    const char *sub = nw ? w[0] : "";
    if (!strcmp(sub, "add"))
        return nw == 2 ? host_add(c, w[1]) : cli_usage("usage: ferry host add ADDR --cluster C --token T");
    if (c->cluster)
        return cli_usage("--cluster is an option of host add only");
    bool list = !strcmp(sub, "list") && nw == 1;
    if (!list && (strcmp(sub, "show") || nw != 2))
        return cli_usage("usage: ferry host add ADDR --cluster C --token T | list | show NAME");
    snprintf(path, sizeof(path), "/v1/hosts%s%.200s", list ? "" : "/", list ? "" : w[1]);
    json_object *r = center_want(c, 200, "GET", path, NULL);
    if (!r)
        return EXIT_FAILED;
    if (c->json) {
        print_json(r);
    } else if (!list) {
        host_print(r);
    } else {
        printf("%-16s %-24s %-12s %s\n", "NAME", "ADDRESS", "CLUSTER", "STATE");
        for (size_t i = 0; i < json_object_array_length(r); i++) {
            json_object *h = json_object_array_get_idx(r, i);
            printf("%-16s %-24s %-12s %s\n", jstr(h, "name"), jstr(h, "address"), jstr(h, "cluster"),
                   jstr(h, "state"));
        }
    }
    json_object_put(r);
    return EXIT_OK;
}

/* --features LIST (comma-separated) or --common: the cluster's CPU baseline */
static json_object *baseline_body(const struct center *c)
{
    json_object *b = json_object_new_object();
    if (c->common) {
        json_object_object_add(b, "mode", json_object_new_string("common"));
        return b;
    }
    json_object *a = json_object_new_array();
    char *copy = strdup(c->features), *save = NULL;
    for (char *f = strtok_r(copy, ",", &save); f; f = strtok_r(NULL, ",", &save))
        json_object_array_add(a, json_object_new_string(f));
    free(copy);
    json_object_object_add(b, "features", a);
    return b;
}

static int cmd_cluster(const struct center *c, int nw, char **w)
{
    char path[256];
    const char *sub = nw ? w[0] : "";
    json_object *r = NULL, *b = NULL;
    bool baseline = !strcmp(sub, "set-baseline") && nw == 2;
    if ((c->features || c->common) && !baseline)
        return cli_usage("--features and --common are options of cluster set-baseline only");
    if (!strcmp(sub, "list") && nw == 1) {
        r = center_want(c, 200, "GET", "/v1/clusters", NULL);
    } else if (!strcmp(sub, "create") && nw == 2) {
        b = json_object_new_object();
        json_object_object_add(b, "name", json_object_new_string(w[1]));
        r = center_want(c, 201, "POST", "/v1/clusters", b);
    } else if (baseline) {
        if (!c->features == !c->common)
            return cli_usage("cluster set-baseline needs either --features LIST or --common");
        b = baseline_body(c);
        snprintf(path, sizeof(path), "/v1/clusters/%.200s/baseline", w[1]);
        r = center_want(c, 200, "PUT", path, b);
    } else {
        return cli_usage("usage: ferry cluster create NAME | list | set-baseline NAME (--features LIST | --common)");
    }
    json_object_put(b);
    if (!r)
        return EXIT_FAILED;
    if (c->json) {
        print_json(r);
    } else if (baseline) {
        json_object *f = jget(r, "features");
        printf("cluster %s: CPU baseline set%s%zu features\n", w[1], f ? ", " : "",
               f ? json_object_array_length(f) : 0);
    } else if (nw == 2) {
        printf("cluster %s created\n", w[1]);
    } else {
        printf("%-16s %5s  %s\n", "NAME", "HOSTS", "DESCRIPTION");
        for (size_t i = 0; i < json_object_array_length(r); i++) {
            json_object *o = json_object_array_get_idx(r, i);
            printf("%-16s %5d  %s\n", jstr(o, "name"), json_object_get_int(jget(o, "hosts")),
                   jstr(o, "description"));
        }
    }
    json_object_put(r);
    return EXIT_OK;
}

/* Options into c; before the command (global) only the connection's and --json. */
static int parse(int argc, char **argv, struct center *c, bool global)
{
    int o;
    while ((o = getopt_long(argc, argv, global ? "+:" : ":", opts, NULL)) != -1) {
        const char *name = argv[optind - 1];
        switch (o) {
        case O_CENTER: c->url = optarg; break;
        case O_TOKEN: *(global ? &c->token : &c->enrol_token) = optarg; break;
        case O_CA: c->ca = optarg; break;
        case O_JSON: c->json = true; break;
        case ':': return cli_usage("option '%s' needs a value", name);
        case '?': return cli_usage("unknown option '%s'", name);
        default:
            if (global)
                return cli_usage("%s is an option of a command: give it after the command", name);
            if (o == O_CLUSTER) c->cluster = optarg;
            if (o == O_HOST) c->host = optarg;
            if (o == O_SPEC) c->spec = optarg;
            if (o == O_PRIORITY) c->priority = optarg;
            if (o == O_FEATURES) c->features = optarg;
            if (o == O_COMMON) c->common = true;
            if (o == O_STATE) c->state = optarg;
        }
    }
    return 0;
}

int cmd_center(int argc, char **argv)
{
    char url[1024];
    struct center c = { .url = getenv("FERRY_CENTER"), .token = getenv("FERRY_TOKEN"), .ca = getenv("FERRY_CA") };
    opterr = 0;
    if (parse(argc, argv, &c, true))
        return EXIT_USAGE;
    /* the command and its arguments, then its options anywhere among them */
    int first = optind;
    optind = 0;   /* glibc: a full restart, in permuting mode this time */
    if (parse(argc - first + 1, argv + first - 1, &c, false))
        return EXIT_USAGE;
    char **w = argv + first - 1 + optind;
    int nw = argc - first + 1 - optind;
    /* host add's --token after the command is the enrolment token; for the
     * other commands it is the API token, wherever it is given */
    if (c.enrol_token && (nw < 2 || strcmp(w[0], "host") || strcmp(w[1], "add"))) {
        c.token = c.enrol_token;
        c.enrol_token = NULL;
    }
    if (!c.url || !c.url[0])
        return cli_usage("no manager: use --center URL or set FERRY_CENTER");
    if (!c.ca || !c.ca[0])
        return cli_usage("no cluster CA to check the manager against: use --ca FILE or set FERRY_CA");
    /* "HOST:PORT" means https://HOST:PORT; no trailing slash before /v1 */
    snprintf(url, sizeof(url), "%s%s", strstr(c.url, "://") ? "" : "https://", c.url);
    for (size_t n = strlen(url); n && url[n - 1] == '/'; n--)
        url[n - 1] = '\0';
    c.url = url;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = !strcmp(w[0], "host") ? cmd_host(&c, nw - 1, w + 1)
           : !strcmp(w[0], "cluster") ? cmd_cluster(&c, nw - 1, w + 1)
           : !strcmp(w[0], "task") ? cmd_task(&c, nw - 1, w + 1)
           : cmd_center_vm(&c, nw - 1, w + 1);
    curl_global_cleanup();
    return rc;
}
