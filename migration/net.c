#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/net.h"

#define MIG_BACKLOG 16      /* several streams connect at once, strays too */

#include <stdlib.h>

static int split(const char *addr, char *host, size_t hlen, char *port, size_t plen,
                 char *err, size_t errlen)
{
    if (!strncmp(addr, "tcp:", 4))
        addr += 4;
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t n = colon ? (size_t)(colon - addr) : 0;
    if (*h == '[' && n >= 2 && addr[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (!colon || !colon[1] || n >= hlen || strlen(colon + 1) >= plen) {
        snprintf(err, errlen, "bad address '%s' (expected HOST:PORT)", addr);
        return -1;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static struct addrinfo *resolve(const char *addr, int passive, char *err, size_t errlen)
{
    char host[256], port[32];
    if (split(addr, host, sizeof(host), port, sizeof(port), err, errlen) < 0)
        return NULL;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
    struct addrinfo *res;
    int r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (r) {
        snprintf(err, errlen, "address '%s': %s", addr, gai_strerror(r));
        return NULL;
    }
    return res;
}

/* No fixed SO_SNDBUF/SO_RCVBUF: setting them turns off the kernel's buffer
 * autotuning, and a fixed 1 MiB caps a 150 ms link at 7 MB/s. net_size_window
 * raises them only where the bandwidth-delay product needs more. */
static void tune(int fd)
{
    int one = 1, idle = 30, intvl = 5, cnt = 6;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* a peer that vanished (power loss, a cut link) is noticed within about
     * a minute, while a live one may stay silent as long as it likes */
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/* Bind fd to the local address via (a migration NIC's address; port 0). */
static int bind_via(int fd, int family, const char *via, int *e)
{
    struct addrinfo hints = { .ai_family = family, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
    struct addrinfo *res;
    if (getaddrinfo(via, NULL, &hints, &res)) {
        *e = EADDRNOTAVAIL;
        return -1;
    }
    int r = bind(fd, res->ai_addr, res->ai_addrlen);
    *e = errno;
    freeaddrinfo(res);
    return r;
}

int net_connect(const char *addr, const char *via, int timeout_ms, char *err, size_t errlen)
{
    struct addrinfo *res = resolve(addr, 0, err, errlen);
    if (!res)
        return -1;
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        tune(fd);
        if (via && bind_via(fd, a->ai_family, via, &e) < 0) {
            close(fd);
            fd = -1;
            continue;
        }
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            socklen_t sl = sizeof(e);
            r = poll(&p, 1, timeout_ms);
            if (r == 0)
                e = ETIMEDOUT, r = -1;
            else if (r > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) == 0 && e == 0)
                r = 0;
            else
                r = -1;
        } else if (r < 0) {
            e = errno;
        }
        if (r < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s%s%s: %s", addr, via ? " from " : "", via ? via : "",
                 strerror(e));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

int net_listen(const char *addr, char *err, size_t errlen)
{
    struct addrinfo *res = resolve(addr, 1, err, errlen);
    if (!res)
        return -1;
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, MIG_BACKLOG) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int net_accept(int lfd, int timeout_ms, char *err, size_t errlen)
{
    struct pollfd p = { .fd = lfd, .events = POLLIN };
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (r == 0) {
        snprintf(err, errlen, "no incoming migration within %d s", timeout_ms / 1000);
        return -1;
    }
    int fd = r > 0 ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : -1;
    if (fd < 0) {
        snprintf(err, errlen, "accept: %s", strerror(errno));
        return -1;
    }
    tune(fd);
    return fd;
}

int net_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

int net_rtt_us(int fd)
{
    struct tcp_info ti;
    socklen_t sl = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0)
        return -1;
    return (int)ti.tcpi_rtt;
}

static long sysctl_max(const char *path)
{
    FILE *f = fopen(path, "r");
    long a = -1, b = -1, c = -1;
    int n = f ? fscanf(f, "%ld %ld %ld", &a, &b, &c) : 0;
    if (f)
        fclose(f);
    return n == 3 ? c : n == 1 ? a : -1;
}

uint64_t net_size_window(int fd, bool sending, uint64_t rate, int rtt_us, char *note, size_t notelen)
{
    note[0] = '\0';
    /* TCP keeps about half of a socket buffer for its bookkeeping
     * (tcp_adv_win_scale), so a window of W needs a buffer of 2W. */
    uint64_t need = rate * (uint64_t)(rtt_us > 0 ? rtt_us : 0) / 1000000 * 2;
    const char *auto_path = sending ? "/proc/sys/net/ipv4/tcp_wmem" : "/proc/sys/net/ipv4/tcp_rmem";
    const char *max_path = sending ? "/proc/sys/net/core/wmem_max" : "/proc/sys/net/core/rmem_max";
    long autotune = sysctl_max(auto_path), hard = sysctl_max(max_path);
    if (autotune < 0 || need <= (uint64_t)autotune)
        return need / 2;               /* autotuning grows the buffer that far by itself */
    uint64_t buf = hard > autotune ? (uint64_t)hard : 0;
    if (buf > need)
        buf = need;
    if (buf) {
        int v = buf > INT32_MAX ? INT32_MAX : (int)buf;
        setsockopt(fd, SOL_SOCKET, sending ? SO_SNDBUF : SO_RCVBUF, &v, sizeof(v));
    }
    uint64_t have = buf ? buf : (uint64_t)autotune;
    if (have < need)
        snprintf(note, notelen,
                 "the %s TCP window is capped at %.1f MiB by the kernel, %.1f MiB short of this link's "
                 "bandwidth-delay product (%.0f ms RTT); raise it with: sysctl -w net.ipv4.tcp_%s='4096 131072 %llu' "
                 "net.core.%s=%llu", sending ? "send" : "receive", have / 2 / 1048576.0,
                 (need - have) / 2 / 1048576.0, rtt_us / 1000.0, sending ? "wmem" : "rmem",
                 (unsigned long long)need, sending ? "wmem_max" : "rmem_max", (unsigned long long)need);
    return have / 2;
}
