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

#define SOCK_BUF (1 << 20)

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

static void tune(int fd)
{
    int one = 1, buf = SOCK_BUF;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

int net_connect(const char *addr, int timeout_ms, char *err, size_t errlen)
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
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(e));
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
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1) < 0) {
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
