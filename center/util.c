/* Small helpers of the manager: log lines, times, strict JSON input,
 * names, hashes and random tokens. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "center/center.h"

void center_log(const char *fmt, ...)
{
    char t[40], line[2048];
    now_iso(t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s ferry-center: %s\n", t, line);
}

static void iso_at(char out[40], struct timeval tv)
{
    struct tm tm;
    time_t s = tv.tv_sec;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

void now_iso(char out[40])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    iso_at(out, tv);
}

void iso_after(char out[40], long seconds)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    tv.tv_sec += seconds;
    iso_at(out, tv);
}

void fmt_ll(char out[24], long long v) { snprintf(out, 24, "%lld", v); }

json_object *json_parse_object(const char *text, size_t len, char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || je != json_tokener_success) {
        snprintf(err, errlen, "malformed JSON at byte %zu: %s", used,
                 je == json_tokener_continue ? "unexpected end of input" : json_tokener_error_desc(je));
        json_object_put(o);
        return NULL;
    }
    if (used + strspn(text + used, " \t\r\n") != len) {
        snprintf(err, errlen, "malformed JSON: trailing data at byte %zu", used);
        json_object_put(o);
        return NULL;
    }
    if (!json_object_is_type(o, json_type_object)) {
        snprintf(err, errlen, "the request body must be a JSON object");
        json_object_put(o);
        return NULL;
    }
    return o;
}

int json_only(json_object *o, const char *const *allowed, char *err, size_t errlen)
{
    json_object_object_foreach(o, key, val) {
        (void)val;
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(*a, key);
        if (!ok) {
            snprintf(err, errlen, "unknown field '%.64s'", key);
            return -1;
        }
    }
    return 0;
}

int json_str(json_object *o, const char *key, bool required, const char **out, char *err, size_t errlen)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v) || !v) {
        if (!required)
            return 0;
        snprintf(err, errlen, "field '%s' is required", key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(err, errlen, "field '%s' must be a string", key);
        return -1;
    }
    *out = json_object_get_string(v);
    return 0;
}

bool name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
                             (s[0] >= '0' && s[0] <= '9')))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

void sha256_hex(const char *text, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int random_token(const char *prefix, char *out, size_t outlen)
{
    unsigned char b[24];
    if (RAND_bytes(b, sizeof(b)) != 1 || outlen < strlen(prefix) + 2 * sizeof(b) + 1)
        return -1;
    size_t n = (size_t)snprintf(out, outlen, "%s", prefix);
    for (size_t i = 0; i < sizeof(b); i++)
        snprintf(out + n + 2 * i, 3, "%02x", b[i]);
    return 0;
}

json_object *json_text_or_null(const char *s) { return s ? json_object_new_string(s) : NULL; }

json_object *json_parsed_or_null(const char *text)
{
    return text ? json_tokener_parse(text) : NULL;
}

char *read_text(const char *path, size_t max)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

bool address_valid(const char *a)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || strlen(a) > 255)
        return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || port < 1 || port > 65535)
        return false;
    size_t hl = (size_t)(colon - a);
    if (a[0] == '[')
        return a[hl - 1] == ']' && hl > 2 &&
               strspn(a + 1, "0123456789abcdefABCDEF:.") == hl - 2;
    return strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == hl;
}

long long jint(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

const char *jstr(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v) : "";
}

json_object *jarr(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_array) ? v : NULL;
}
