/* ferry CLI: HTTPS to the manager with libcurl (OpenSSL build). Trust is
 * the cluster CA alone (--ca), as everywhere in Ferry; the manager's
 * certificate is for the name "ferry-center" whatever address reaches it,
 * so that name is what OpenSSL checks, not the URL's host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "cli/center.h"
#include "cli/cli.h"
#include "common/reply_buf.h"

#define CENTER_CN "ferry-center"

static CURLcode on_ssl_ctx(CURL *curl, void *ctx, void *arg)
{
    X509_VERIFY_PARAM *p = SSL_CTX_get0_param(ctx);
    return X509_VERIFY_PARAM_set1_host(p, CENTER_CN, 0) == 1 ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

long center_call(const struct center *c, const char *method, const char *path, json_object *body,
                 json_object **reply, char *err, size_t errlen)
{
    char url[2048], auth[1024], ebuf[CURL_ERROR_SIZE] = "";
    snprintf(url, sizeof(url), "%s%s", c->url, path);
    *reply = NULL;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "cannot start an HTTPS client");
        return 0;
    }
    struct reply_buf b = { NULL, 0 };
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->token && c->token[0]) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
    curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);   /* on_ssl_ctx names the peer instead */
    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, reply_buf_append);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
    else if (strcmp(method, "GET"))
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", c->url, ebuf[0] ? ebuf : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        *reply = b.p ? json_tokener_parse(b.p) : NULL;
        json_object *m = jget(*reply, "error");
        if (status < 200 || status > 299)
            snprintf(err, errlen, "%s %s: %ld %s%s", method, path, status,
                     m ? json_object_get_string(m) : "(no reason given)",
                     status == 401 && !(c->token && c->token[0]) ? " (give --token or set FERRY_TOKEN)" : "");
    }
    free(b.p);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return status;
}

json_object *center_want(const struct center *c, long want, const char *method, const char *path,
                         json_object *body)
{
    char err[1024];
    json_object *reply;
    long status = center_call(c, method, path, body, &reply, err, sizeof(err));
    if (status == want && reply)
        return reply;
    if (status == want)
        snprintf(err, sizeof(err), "%s %s: the reply is not JSON", method, path);
    else if (status >= 200 && status <= 299)
        snprintf(err, sizeof(err), "%s %s: unexpected status %ld", method, path, status);
    cli_err("%s", err);
    json_object_put(reply);
    return NULL;
}
