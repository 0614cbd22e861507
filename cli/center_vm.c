/* ferry vm create|list|show|start|stop|delete|migrate NAME: VMs by name
 * through the manager, which runs each change as a task on the VM's host
 * (the control-socket commands, `ferry -S SOCK vm ...`, are main.c's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/center.h"
#include "cli/cli.h"
#include "cli/progress.h"

/* The spec file as JSON; its name must be NAME (added when it has none). */
static json_object *spec_load(const char *path, const char *name, int *rc)
{
    json_object *spec = json_object_from_file(path), *n;
    *rc = EXIT_FAILED;
    if (!spec || !json_object_is_type(spec, json_type_object)) {
        cli_err("%s: %s", path, spec ? "not a JSON object" : json_util_get_last_err());
        json_object_put(spec);
        return NULL;
    }
    if (!json_object_object_get_ex(spec, "name", &n)) {
        json_object_object_add(spec, "name", json_object_new_string(name));
    } else if (!json_object_is_type(n, json_type_string) || strcmp(json_object_get_string(n), name)) {
        cli_err("%s names the VM '%s', not '%s'", path, json_object_get_string(n), name);
        *rc = EXIT_USAGE;
        json_object_put(spec);
        return NULL;
    }
    return spec;
}

/* A change that is a task: send it, follow the task, say how it ended
 * ("VM vm1 " what " " host; NULL: the host in the task's result). */
static int run_task(const struct center *c, const char *method, const char *path, json_object *body,
                    const char *what, const char *host)
{
    char err[1024];
    json_object *reply;
    long status = center_call(c, method, path, body, &reply, err, sizeof(err));
    if (status != 202) {
        cli_err("%s", err);
        /* the pre-migration checks: each failed one on its own line */
        char checks[8192];
        report_text(status == 409 ? jget(reply, "report") : NULL, "ferry: check ", checks, sizeof(checks));
        fputs(checks, stderr);
        if (c->json && reply)
            printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
        json_object_put(reply);
        return EXIT_FAILED;
    }
    int rc;
    json_object *t = task_follow(c, task_of_reply(reply), &rc), *res = jget(t, "result");
    if (rc == EXIT_OK && !c->json) {
        const char *power = jstr(res, "power_state");
        host = host ? host : jstr(res, "host");
        printf("VM %s %s %s%s%s\n", jstr(t, "target"), what, host, power[0] ? ": " : "", power);
    }
    json_object_put(t);
    json_object_put(reply);
    return rc;
}

static void vm_row(json_object *v)
{
    printf("%-20s %-16s %-10s %s\n", jstr(v, "name"), jstr(v, "host")[0] ? jstr(v, "host") : "-",
           jstr(v, "power_state"), jstr(v, "uuid"));
}

static int vm_get(const struct center *c, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/vms%s%.200s", name ? "/" : "", name ? name : "");
    json_object *r = center_want(c, 200, "GET", path, NULL);
    if (!r)
        return EXIT_FAILED;
    if (c->json) {
        printf("%s\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
    } else if (name) {
        printf("name:        %s\nuuid:        %s\nhost:        %s\npower state: %s\nupdated:     %s\n",
               jstr(r, "name"), jstr(r, "uuid"), jstr(r, "host"), jstr(r, "power_state"), jstr(r, "updated"));
    } else {
        printf("%-20s %-16s %-10s %s\n", "NAME", "HOST", "POWER", "UUID");
        for (size_t i = 0; i < json_object_array_length(r); i++)
            vm_row(json_object_array_get_idx(r, i));
    }
    json_object_put(r);
    return EXIT_OK;
}

int cmd_center_vm(const struct center *c, int nw, char **w)
{
    char path[256];
    const char *sub = w[0];
    bool create = !strcmp(sub, "create"), migrate = !strcmp(sub, "migrate");
    if ((c->spec && !create) || (c->host && !create && !migrate) || (c->priority && !migrate))
        return cli_usage("--host, --spec and --priority are options of vm create and vm migrate");
    if (c->cluster || c->features || c->common || c->state)
        return cli_usage("--cluster, --features, --common and --state are not options of vm commands");
    if (!strcmp(sub, "list"))
        return nw == 1 ? vm_get(c, NULL) : cli_usage("vm list takes no arguments");
    if (nw != 2)
        return cli_usage("this vm command needs exactly one argument: the VM's name");
    const char *name = w[1];
    if (!strcmp(sub, "show"))
        return vm_get(c, name);
    json_object *body = NULL;
    int rc;
    if (create) {
        if (!c->host || !c->spec)
            return cli_usage("vm create needs --host H and --spec FILE");
        json_object *spec = spec_load(c->spec, name, &rc);
        if (!spec)
            return rc;
        body = json_object_new_object();
        json_object_object_add(body, "host", json_object_new_string(c->host));
        json_object_object_add(body, "spec", spec);
        rc = run_task(c, "POST", "/v1/vms", body, "created on", c->host);
    } else if (migrate) {
        if (!c->host)
            return cli_usage("vm migrate NAME needs --host H (or --to HOST:PORT with -S SOCKET)");
        if (c->priority && strcmp(c->priority, "high") && strcmp(c->priority, "normal"))
            return cli_usage("--priority is high or normal");
        body = json_object_new_object();
        json_object_object_add(body, "host", json_object_new_string(c->host));
        if (c->priority)
            json_object_object_add(body, "priority", json_object_new_string(c->priority));
        snprintf(path, sizeof(path), "/v1/vms/%.200s/migrate", name);
        rc = run_task(c, "POST", path, body, "migrated to", c->host);
    } else if (!strcmp(sub, "delete")) {
        snprintf(path, sizeof(path), "/v1/vms/%.200s", name);
        rc = run_task(c, "DELETE", path, NULL, "deleted from", NULL);
    } else {   /* start, stop */
        bool start = !strcmp(sub, "start");
        snprintf(path, sizeof(path), "/v1/vms/%.200s/%s", name, start ? "start" : "stop");
        rc = run_task(c, "POST", path, NULL, start ? "started on" : "stopped on", NULL);
    }
    json_object_put(body);
    return rc;
}
