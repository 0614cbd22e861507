/* Cold copy of a powered-off VM's disk image to another host (ferry-disk),
 * over the provisioning network: one TLS 1.3 connection (never plaintext),
 * the live migration's framing and disk messages (docs/migration-protocol.md,
 * *Cold disk copy*):
 *
 *   sender                                    receiver
 *   HELLO {"cold_disk": {"size", "name"}} ▶   create PATH.ferry-partial
 *         ◀─────────────────────────────────  ACK(ready) | ACK(rejected)
 *   DISK_BLOCKS × k (the data extents)   ▶   write, hash each block
 *   DISK_DIGEST, COMPLETE               ▶   compare, sync, rename to PATH
 *         ◀─────────────────────────────────  ACK(verified) | ACK(mismatch) | ACK(rejected)
 *
 * PATH exists only once the whole image arrived and its digest matched;
 * anything else removes the partial file. */
#ifndef FERRY_COLD_H
#define FERRY_COLD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct cold_result {
    uint64_t size, data_bytes, wire_bytes, ms;
    char peer[64];               /* receiver: where the image came from */
    char cipher[64];
};

/* Send image (not in use) to the receiver at uri (HOST:PORT), leaving from
 * the local address via (NULL: any). 0, or -1 with a one-line reason. */
int cold_send(const char *image, const char *uri, const char *via, SSL_CTX *tls, struct cold_result *res,
              char *err, size_t errlen);
/* Receive one image on addr (HOST:PORT) into path, which must not exist.
 * 0, or -1 with a reason (nothing left at path or path.ferry-partial). */
int cold_receive(const char *path, const char *addr, SSL_CTX *tls, struct cold_result *res, char *err,
                 size_t errlen);

#endif
