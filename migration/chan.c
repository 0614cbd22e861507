/* Migration connection I/O, plaintext or TLS (see chan.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/tls.h"
#include "migration/chan.h"

#define IOV_BATCH 64

/* Step past done bytes of the left pieces at v (a short readv/writev). */
static struct iovec *iov_skip(struct iovec *v, int *left, size_t done)
{
    while (*left > 0 && done >= v->iov_len) {
        done -= v->iov_len;
        v++;
        (*left)--;
    }
    if (*left > 0) {
        v->iov_base = (char *)v->iov_base + done;
        v->iov_len -= done;
    }
    return v;
}

static int plain_writev(struct chan *c, const struct iovec *in, int n)
{
    struct iovec iov[IOV_BATCH];
    while (n > 0) {
        int k = n < IOV_BATCH ? n : IOV_BATCH;
        memcpy(iov, in, (size_t)k * sizeof(*iov));
        struct iovec *v = iov;
        int left = k;
        while (left > 0) {
            struct msghdr mh = { .msg_iov = v, .msg_iovlen = (size_t)left };
            ssize_t r = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
            if (r < 0 && errno == ENOTSOCK)
                r = writev(c->fd, v, left);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                snprintf(c->err, sizeof(c->err), "%s", r < 0 ? strerror(errno) : "short write");
                return -1;
            }
            v = iov_skip(v, &left, (size_t)r);
        }
        in += k;
        n -= k;
    }
    return 0;
}

int chan_writev(struct chan *c, const struct iovec *iov, int n)
{
    if (!c->ssl)
        return plain_writev(c, iov, n);
    for (int i = 0; i < n; i++) {
        if (!iov[i].iov_len)
            continue;
        size_t done;
        int r = SSL_write_ex(c->ssl, iov[i].iov_base, iov[i].iov_len, &done);
        if (r <= 0) {
            tls_error(c->ssl, r, "write", c->err, sizeof(c->err));
            return -1;
        }
    }
    return 0;
}

int chan_flush(struct chan *c)
{
    if (c->ssl && tls_flush(c->ssl) < 0) {
        snprintf(c->err, sizeof(c->err), "TLS: cannot send buffered records: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static ssize_t tls_read_some(struct chan *c, void *p, size_t n)
{
    size_t got;
    int r = SSL_read_ex(c->ssl, p, n, &got);
    if (r > 0)
        return (ssize_t)got;
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN)
        return 0;
    tls_error(c->ssl, r, "read", c->err, sizeof(c->err));
    return -1;
}

/* Plaintext: one readv per batch of iovecs, straight into the buffers. */
static ssize_t plain_readv(struct chan *c, const struct iovec *in, int n)
{
    struct iovec iov[IOV_BATCH];
    size_t total = 0;
    while (n > 0) {
        int k = n < IOV_BATCH ? n : IOV_BATCH;
        memcpy(iov, in, (size_t)k * sizeof(*iov));
        struct iovec *v = iov;
        int left = k;
        while (left > 0) {
            ssize_t r = readv(c->fd, v, left);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                snprintf(c->err, sizeof(c->err), "%s", strerror(errno));
                return -1;
            }
            if (r == 0)
                return (ssize_t)total;
            total += (size_t)r;
            v = iov_skip(v, &left, (size_t)r);
        }
        in += k;
        n -= k;
    }
    return (ssize_t)total;
}

ssize_t chan_readv(struct chan *c, const struct iovec *iov, int n)
{
    if (!c->ssl)
        return plain_readv(c, iov, n);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t got = 0;
        while (got < iov[i].iov_len) {
            ssize_t r = tls_read_some(c, (char *)iov[i].iov_base + got, iov[i].iov_len - got);
            if (r < 0)
                return -1;
            if (r == 0)
                return (ssize_t)(total + got);
            got += (size_t)r;
        }
        total += got;
    }
    return (ssize_t)total;
}

ssize_t chan_read(struct chan *c, void *p, size_t n)
{
    struct iovec v = { p, n };
    return chan_readv(c, &v, 1);
}

void chan_close(struct chan *c)
{
    if (c->ssl) {
        tls_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}
