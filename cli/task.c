/* ferry task list|watch|cancel, and following the task a manager command
 * started (host add, vm create/start/stop/delete/migrate) to its end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/center.h"
#include "cli/cli.h"
#include "cli/progress.h"

#define POLL_MS 200

json_object *jget(json_object *o, const char *key)
{
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

const char *jstr(json_object *o, const char *key)
{
    json_object *v = jget(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

json_object *task_of_reply(json_object *reply)
{
    json_object *t = jget(reply, "task");
    return t && json_object_is_type(t, json_type_object) ? t : reply;
}

static bool task_final(const char *state)
{
    return !strcmp(state, "success") || !strcmp(state, "error") || !strcmp(state, "cancelled");
}

static size_t draw_task(void *arg, int width, char *buf, size_t len)
{
    return task_line(arg, width, buf, len);
}

json_object *task_follow(const struct center *c, json_object *task, int *rc)
{
    char path[64], key[512];
    struct live live;
    long long id = json_object_get_int64(jget(task, "id"));
    json_object *t = json_object_get(task);
    live_init(&live, c->json);
    snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
    *rc = EXIT_FAILED;
    while (!task_final(jstr(t, "state"))) {
        snprintf(key, sizeof(key), "%s %s", jstr(t, "state"), jstr(t, "phase"));
        live_show(&live, key, cli_now_ms(), draw_task, t);
        nanosleep(&(struct timespec){ .tv_nsec = POLL_MS * 1000000L }, NULL);
        json_object_put(t);
        if (!(t = center_want(c, 200, "GET", path, NULL))) {
            live_end(&live);
            return NULL;
        }
    }
    live_end(&live);
    if (c->json)
        printf("%s\n", json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN));
    fflush(stdout);
    if (!strcmp(jstr(t, "state"), "success"))
        *rc = EXIT_OK;
    else
        cli_err("task %lld (%s %s) %s: %s", id, jstr(t, "kind"), jstr(t, "target"), jstr(t, "state"),
                jstr(t, "error")[0] ? jstr(t, "error") : "no reason given");
    return t;
}

static int task_list(const struct center *c, const char *state)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/tasks%s%s", state ? "?state=" : "", state ? state : "");
    json_object *a = center_want(c, 200, "GET", path, NULL);
    if (!a)
        return EXIT_FAILED;
    if (c->json) {
        printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    } else {
        printf("%-6s %-12s %-16s %-10s %4s  %s\n", "ID", "KIND", "TARGET", "STATE", "PCT", "PHASE / ERROR");
        for (size_t i = 0; i < json_object_array_length(a); i++) {
            json_object *t = json_object_array_get_idx(a, i);
            const char *e = jstr(t, "error");
            printf("%-6lld %-12s %-16s %-10s %3d%%  %s\n", (long long)json_object_get_int64(jget(t, "id")),
                   jstr(t, "kind"), jstr(t, "target"), jstr(t, "state"),
                   json_object_get_int(jget(t, "percent")), e[0] ? e : jstr(t, "phase"));
        }
    }
    json_object_put(a);
    return EXIT_OK;
}

/* "ID" as a task id, else a usage error (EXIT_USAGE) */
static int task_id(const char *s, long long *id)
{
    char *end;
    *id = strtoll(s, &end, 10);
    return *end || *id <= 0 ? cli_usage("'%s' is not a task id", s) : 0;
}

int cmd_task(const struct center *c, int nw, char **w)
{
    char path[64];
    long long id;
    const char *sub = nw ? w[0] : "";
    if (!strcmp(sub, "list") && nw == 1)
        return task_list(c, c->state);
    if (c->state)
        return cli_usage("--state is an option of task list only");
    if ((strcmp(sub, "watch") && strcmp(sub, "cancel")) || nw != 2)
        return cli_usage("usage: ferry task list [--state S] | watch ID | cancel ID");
    if (task_id(w[1], &id))
        return EXIT_USAGE;
    snprintf(path, sizeof(path), "/v1/tasks/%lld%s", id, !strcmp(sub, "cancel") ? "/cancel" : "");
    json_object *t = center_want(c, 200, !strcmp(sub, "cancel") ? "POST" : "GET", path, NULL);
    if (!t)
        return EXIT_FAILED;
    int rc = EXIT_OK;
    if (!strcmp(sub, "cancel")) {
        if (c->json)
            printf("%s\n", json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN));
        else
            printf("task %lld (%s %s): %s\n", id, jstr(t, "kind"), jstr(t, "target"),
                   !strcmp(jstr(t, "state"), "cancelled") ? "cancelled" : "cancel requested");
    } else {
        json_object *end = task_follow(c, t, &rc);
        if (end && rc == EXIT_OK && !c->json)
            printf("task %lld (%s %s): success\n", id, jstr(end, "kind"), jstr(end, "target"));
        json_object_put(end);
    }
    json_object_put(t);
    return rc;
}
