/* The manager as a client of ferryd: HTTPS with libcurl (OpenSSL build)
 * and the manager's own certificate. Like every Ferry connection, trust
 * is the cluster CA alone (no system CAs, no host name in the URL checked);
 * instead the peer certificate's CN must be the host's enrolled name, so an
 * address that reaches another host of the cluster is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "center/center.h"
#include "common/reply_buf.h"

/* A user's cancel ends the transfer (also a connect that hangs), and so
 * does the manager's shutdown: SIGTERM need not wait for a slow host. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    long long id = *(long long *)arg;
    return tasks_stopping() || (id && task_cancel_flag(id));
}

/* The CN in curl's "Subject:CN = esx1" (OpenSSL's one-line form). */
static bool subject_cn(CURL *c, char *cn, size_t cnlen)
{
    struct curl_certinfo *ci = NULL;
    cn[0] = '\0';
    if (curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci) != CURLE_OK || !ci || ci->num_of_certs < 1)
        return false;
    for (struct curl_slist *s = ci->certinfo[0]; s; s = s->next) {
        if (strncmp(s->data, "Subject:", 8))
            continue;
        const char *p = strstr(s->data, "CN = ");
        size_t skip = 5;
        if (!p) {
            p = strstr(s->data, "CN=");
            skip = 3;
        }
        if (!p)
            return false;
        p += skip;
        snprintf(cn, cnlen, "%.*s", (int)strcspn(p, ",/"), p);
        return true;
    }
    return false;
}

json_object *ferryd_get(const char *address, const char *cn, const char *path, long long task_id,
                        char *err, size_t errlen)
{
    long status;
    return ferryd_call(address, cn, "GET", path, NULL, task_id, &status, err, errlen);
}

json_object *ferryd_call(const char *address, const char *cn, const char *method, const char *path,
                         json_object *body, long long task_id, long *status, char *err, size_t errlen)
{
    char url[512], cert[4096], key[4096], ca[4096], ebuf[CURL_ERROR_SIZE] = "", peer[256];
    snprintf(url, sizeof(url), "https://%s%s", address, path);
    snprintf(cert, sizeof(cert), "%s/cert.pem", cfg.tls_dir);
    snprintf(key, sizeof(key), "%s/key.pem", cfg.tls_dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", cfg.tls_dir);
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "cannot start an HTTPS client");
        return NULL;
    }
    struct reply_buf b = { NULL, 0 };
    struct curl_slist *hdrs = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS,
                         json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
    }
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
    curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
    curl_easy_setopt(c, CURLOPT_SSLKEY, key);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);   /* the CN is checked below */
    curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reply_buf_append);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &task_id);
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    json_object *o = NULL;
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(err, errlen, "cancelled");
    } else if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(rc));
    } else if (!subject_cn(c, peer, sizeof(peer)) || strcmp(peer, cn)) {
        snprintf(err, errlen, "%s: the host's certificate is for '%s', not the enrolled '%s'",
                 address, peer, cn);
        *status = 0;
    } else if (*status < 200 || *status > 299) {
        json_object *e = b.p ? json_tokener_parse(b.p) : NULL, *m = NULL;
        json_object_object_get_ex(e, "error", &m);
        snprintf(err, errlen, "%s %s: HTTP %ld%s%s", method, url, *status, m ? ": " : "",
                 m ? json_object_get_string(m) : "");
        json_object_put(e);
    } else if (!b.p || !(o = json_tokener_parse(b.p))) {
        snprintf(err, errlen, "%s: the reply is not JSON", url);
    }
    if (rc != CURLE_OK)
        *status = 0;
    free(b.p);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return o;
}
