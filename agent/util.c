/* ferryd helpers: strict JSON access, atomic files, UUIDs, logging. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/ferryd.h"

void agent_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ferryd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int json_only_keys(json_object *o, const char *what, const char *const *keys, char *err,
                   size_t errlen)
{
    json_object_object_foreach(o, k, v) {
        (void)v;
        const char *const *p = keys;
        while (*p && strcmp(*p, k))
            p++;
        if (!*p) {
            snprintf(err, errlen, "%s: unknown field '%s'", what, k);
            return -1;
        }
    }
    return 0;
}

int json_get_typed(json_object *o, const char *key, const char *what, json_type type,
                   json_object **out, char *err, size_t errlen)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (!json_object_is_type(v, type)) {
        snprintf(err, errlen, "%s.%s: expected %s, got %s", what, key, json_type_to_name(type),
                 json_type_to_name(json_object_get_type(v)));
        return -1;
    }
    *out = v;
    return 0;
}

static int get_required(json_object *o, const char *key, const char *what, bool required,
                        json_type type, json_object **v, char *err, size_t errlen)
{
    if (json_get_typed(o, key, what, type, v, err, errlen) < 0)
        return -1;
    if (!*v && required) {
        snprintf(err, errlen, "%s.%s: required", what, key);
        return -1;
    }
    return 0;
}

int json_get_string(json_object *o, const char *key, const char *what, bool required,
                    const char **out, char *err, size_t errlen)
{
    json_object *v;
    if (get_required(o, key, what, required, json_type_string, &v, err, errlen) < 0)
        return -1;
    if (v)
        *out = json_object_get_string(v);
    return 0;
}

int json_get_int(json_object *o, const char *key, const char *what, bool required, int64_t min,
                 int64_t max, int64_t *out, char *err, size_t errlen)
{
    json_object *v;
    if (get_required(o, key, what, required, json_type_int, &v, err, errlen) < 0)
        return -1;
    if (!v)
        return 0;
    errno = 0;
    int64_t n = json_object_get_int64(v);
    /* json-c saturates numbers beyond int64 and sets errno */
    if (errno || n < min || n > max) {
        snprintf(err, errlen, "%s.%s: must be between %lld and %lld", what, key, (long long)min,
                 (long long)max);
        return -1;
    }
    *out = n;
    return 0;
}

int json_get_bool(json_object *o, const char *key, const char *what, bool *out, char *err,
                  size_t errlen)
{
    json_object *v;
    if (get_required(o, key, what, false, json_type_boolean, &v, err, errlen) < 0)
        return -1;
    if (v)
        *out = json_object_get_boolean(v);
    return 0;
}

json_object *json_parse_strict(const char *buf, size_t len, char *err, size_t errlen)
{
    if (len > INT32_MAX || memchr(buf, '\0', len)) {
        snprintf(err, errlen, "malformed JSON: NUL byte or too long");
        return NULL;
    }
    /* strict mode also refuses anything but whitespace after the value */
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!o && e == json_tokener_continue)
        snprintf(err, errlen, "malformed JSON: unexpected end of input");
    else if (!o)
        snprintf(err, errlen, "malformed JSON: %s", json_tokener_error_desc(e));
    return o;
}

int write_file_atomic(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    char tmp[4096], dir[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    snprintf(dir, sizeof(dir), "%s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            goto fail_close;
        off += (size_t)w;
    }
    if (fsync(fd) < 0)
        goto fail_close;
    close(fd);
    if (rename(tmp, path) < 0)
        goto fail;
    /* the rename itself must survive a crash too */
    fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
fail_close:
    close(fd);
fail:
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
}

char *read_file(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            if (cap >= max) {
                errno = EFBIG;
                break;
            }
            cap *= 2;
            char *b = realloc(buf, cap + 1);
            if (!b)
                break;
            buf = b;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r == 0) {
            close(fd);
            buf[n] = '\0';
            if (len)
                *len = n;
            return buf;
        }
        n += (size_t)r;
    }
    int e = errno;
    free(buf);
    close(fd);
    errno = e;
    return NULL;
}

void uuid_generate(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
        /* cannot happen after boot; still never hand out a fixed UUID */
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (unsigned char)random();
    }
    b[6] = (b[6] & 0x0f) | 0x40;   /* version 4 */
    b[8] = (b[8] & 0x3f) | 0x80;   /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

bool uuid_valid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    }
    return true;
}
