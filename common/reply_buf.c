/* reply_buf.h */
#include <stdlib.h>
#include <string.h>

#include "common/reply_buf.h"

size_t reply_buf_append(char *data, size_t size, size_t nmemb, void *arg)
{
    struct reply_buf *b = arg;
    size_t len = size * nmemb;
    if (b->n + len > REPLY_BUF_MAX)
        return 0;
    char *np = realloc(b->p, b->n + len + 1);
    if (!np)
        return 0;
    memcpy(np + b->n, data, len);
    b->p = np;
    b->n += len;
    b->p[b->n] = '\0';
    return len;
}
