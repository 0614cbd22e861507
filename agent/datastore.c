/* Datastores: named directories. Each carries a UUID in a marker file at
 * its root, so hosts that mount the same storage report the same datastore
 * (the manager matches datastores across hosts by UUID, never by name). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "agent/ferryd.h"

#define MARKER ".ferry-datastore"

static int read_marker(struct datastore *d, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = read_file(path, 4096, &len);
    if (!text) {
        snprintf(err, errlen, "datastore %s: cannot read %s: %s", d->name, path, strerror(errno));
        return -1;
    }
    char jerr[ERRLEN];
    const char *uuid = NULL;
    json_object *o = json_parse_strict(text, len, jerr, sizeof(jerr));
    free(text);
    if (!o || !json_object_is_type(o, json_type_object) ||
        json_get_string(o, "uuid", "marker", true, &uuid, jerr, sizeof(jerr)) < 0 ||
        !uuid_valid(uuid)) {
        snprintf(err, errlen, "datastore %s: %s holds no valid uuid", d->name, path);
        json_object_put(o);
        return -1;
    }
    snprintf(d->uuid, sizeof(d->uuid), "%s", uuid);
    json_object_put(o);
    return 0;
}

/* Create the marker so that of two hosts racing on shared storage exactly
 * one wins: the complete file is written under a private name and link()ed
 * into place, which fails with EEXIST for the loser, who then reads the
 * winner's UUID. */
static int create_marker(struct datastore *d, const char *path, char *err, size_t errlen)
{
    char uuid[37], tmp[4096], text[64];
    uuid_generate(uuid);
    snprintf(tmp, sizeof(tmp), "%s/" MARKER ".%s", d->path, uuid);
    int n = snprintf(text, sizeof(text), "{\"uuid\":\"%s\"}\n", uuid);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, (size_t)n) != n || fsync(fd) < 0) {
        snprintf(err, errlen, "datastore %s: cannot create %s: %s", d->name, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    int r = link(tmp, path), e = errno;
    unlink(tmp);
    if (r < 0 && e != EEXIST) {
        snprintf(err, errlen, "datastore %s: cannot create %s: %s", d->name, path, strerror(e));
        return -1;
    }
    return read_marker(d, path, err, errlen);
}

int datastore_open(struct datastore *d, char *err, size_t errlen)
{
    struct stat st;
    if (stat(d->path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "datastore %s: %s is not a directory", d->name, d->path);
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/" MARKER, d->path);
    if (access(path, F_OK) == 0)
        return read_marker(d, path, err, errlen);
    return create_marker(d, path, err, errlen);
}

json_object *datastore_json(struct datastore *d)
{
    char err[ERRLEN];
    if (!d->uuid[0] && datastore_open(d, err, sizeof(err)) == 0)
        agent_log("datastore %s: accessible now, uuid %s", d->name, d->uuid);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(d->name));
    json_object_object_add(o, "path", json_object_new_string(d->path));
    json_object_object_add(o, "uuid", json_object_new_string(d->uuid));
    struct statvfs sv;
    bool ok = d->uuid[0] && statvfs(d->path, &sv) == 0;
    json_object_object_add(o, "accessible", json_object_new_boolean(ok));
    json_object_object_add(o, "capacity_bytes",
                           ok ? json_object_new_int64((int64_t)(sv.f_blocks * sv.f_frsize)) : NULL);
    json_object_object_add(o, "free_bytes",
                           ok ? json_object_new_int64((int64_t)(sv.f_bavail * sv.f_frsize)) : NULL);
    return o;
}
