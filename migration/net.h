/* Migration transport addresses: "HOST:PORT" or "tcp:HOST:PORT" (IPv4/IPv6
 * literal or name; "[v6]:port" for IPv6). */
#ifndef FERRY_NET_H
#define FERRY_NET_H

#include <stddef.h>

/* Connected TCP socket (TCP_NODELAY, large buffers) or -1 with err. */
int net_connect(const char *addr, int timeout_ms, char *err, size_t errlen);
/* Listening socket or -1 with err. */
int net_listen(const char *addr, char *err, size_t errlen);
/* Accept one connection (timeout_ms < 0: wait forever) or -1 with err. */
int net_accept(int lfd, int timeout_ms, char *err, size_t errlen);
/* Bound port of a listening socket (for "HOST:0"). */
int net_local_port(int fd);

#endif
