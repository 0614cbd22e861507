/* ferry CLI: the manager's commands (ferry host|cluster|vm|task ..., docs/cli.md)
 * and their HTTPS client. */
#ifndef FERRY_CLI_CENTER_H
#define FERRY_CLI_CENTER_H

#include <stdbool.h>
#include <stddef.h>
#include <json-c/json.h>

/* How to reach the manager, and what the command line asked. */
struct center {
    const char *url;     /* https://HOST:PORT ($FERRY_CENTER) */
    const char *token;   /* the API's bearer token ($FERRY_TOKEN) */
    const char *ca;      /* the cluster CA that signed the manager's certificate ($FERRY_CA) */
    bool json;           /* print the API's JSON */
    const char *cluster, *host, *spec, *priority, *features, *state, *enrol_token;
    bool common;
};

/* http.c: one request. The HTTP status, *reply the parsed body (NULL when
 * there is none). A status other than 2xx, or none (0: no connection), is
 * in err as one line, with the server's reason. */
long center_call(const struct center *c, const char *method, const char *path, json_object *body,
                 json_object **reply, char *err, size_t errlen);
/* center_call for commands: NULL with the error printed when it fails
 * (or status is not want). */
json_object *center_want(const struct center *c, long want, const char *method, const char *path,
                         json_object *body);

/* center.c: is argv a manager command (not a control-socket one)? */
bool center_command(int argc, char **argv);
int cmd_center(int argc, char **argv);

/* center_vm.c: ferry vm create|list|show|start|stop|delete|migrate (w[0] is the verb) */
int cmd_center_vm(const struct center *c, int nw, char **w);

/* task.c: ferry task list|watch|cancel; and following a task a command made */
int cmd_task(const struct center *c, int nw, char **w);
/* Watch task (its JSON, as the API returned it) to its end; the final
 * task, or NULL (said why). Exit status of the outcome in *rc. */
json_object *task_follow(const struct center *c, json_object *task, int *rc);
/* A 202 reply's task: {"task": {...}} or the task itself. */
json_object *task_of_reply(json_object *reply);

/* small JSON readers */
const char *jstr(json_object *o, const char *key);   /* "" when missing */
json_object *jget(json_object *o, const char *key);

#endif
