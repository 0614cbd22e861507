/* TCP transport for migration: "HOST:PORT" (or "tcp:HOST:PORT", IPv6 as
 * "[::1]:PORT"). Connections are blocking and have TCP_NODELAY. */
#ifndef FERRY_NET_H
#define FERRY_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Connect within timeout_ms, from the local address via when not NULL (one
 * migration NIC of several). Returns the socket or -1 with a reason. */
int net_connect(const char *addr, const char *via, int timeout_ms, char *err, size_t errlen);
int net_listen(const char *addr, char *err, size_t errlen);
/* Accept one connection (timeout_ms < 0: wait forever). */
int net_accept(int lfd, int timeout_ms, char *err, size_t errlen);
int net_local_port(int fd);
/* The kernel's smoothed round-trip time of a TCP connection, in us (-1 if unknown). */
int net_rtt_us(int fd);
/* Size fd's send (or receive) buffer for rate bytes/s over rtt_us, within
 * the kernel's limits. Returns the window that results, in bytes; when the
 * limits cap it below the bandwidth-delay product, note says so and how to
 * raise them. */
uint64_t net_size_window(int fd, bool sending, uint64_t rate, int rtt_us, char *note, size_t notelen);

#endif
