/* An HTTP reply body gathered in memory: libcurl's CURLOPT_WRITEFUNCTION
 * for the manager's and the CLI's HTTPS clients. */
#ifndef FERRY_REPLY_BUF_H
#define FERRY_REPLY_BUF_H

#include <stddef.h>

#define REPLY_BUF_MAX (16u << 20)   /* a larger reply is refused: no API sends one */

struct reply_buf {
    char *p;   /* NUL-terminated once anything arrived; free() it */
    size_t n;
};

/* Appends to the reply_buf at arg; returns size * nmemb, or 0 (curl then
 * fails the transfer) past REPLY_BUF_MAX or out of memory. */
size_t reply_buf_append(char *data, size_t size, size_t nmemb, void *arg);

#endif
