/* A migration connection: a TCP (or Unix) socket, with TLS on top unless the
 * operator chose --insecure. Every byte of the migration protocol goes
 * through these calls, so framing and page transfer need not know which. */
#ifndef FERRY_CHAN_H
#define FERRY_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <openssl/ssl.h>

struct chan {
    int fd;
    SSL *ssl;            /* NULL: plaintext */
    char err[256];       /* the last failure, one line */
};

#define CHAN_PLAIN(f) ((struct chan){ .fd = (f) })

/* Write all of iov (TLS: encrypt it straight from the caller's buffers into
 * records). 0, or -1 with c->err. No SIGPIPE. */
int chan_writev(struct chan *c, const struct iovec *iov, int n);
/* Send what TLS still buffers (one syscall for many records). */
int chan_flush(struct chan *c);
/* Fill iov completely. Returns the bytes read (fewer only when the peer
 * closed), or -1 with c->err. */
ssize_t chan_readv(struct chan *c, const struct iovec *iov, int n);
ssize_t chan_read(struct chan *c, void *p, size_t n);
/* TLS close_notify (best effort), then close the socket. */
void chan_close(struct chan *c);

#endif
