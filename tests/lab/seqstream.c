/* seqstream: TCP workloads for the lab's network migration test, one static
 * binary for both ends (the guest's initramfs has no C library).
 *
 *   seqstream serve PORT
 *       Accept connections one after another. On each: send "S n\n" (n = 1, 2,
 *       ...) every 20 ms, and echo every line "E m\n" the peer sends as "R m\n".
 *   seqstream client HOST PORT STOPFILE
 *       Connect; send "E m\n" every 20 ms; read the server's lines until
 *       STOPFILE exists. Both sequences (S from the server, R echoes of ours)
 *       must be contiguous, on the one connection, and run to the end (each
 *       heard from in the last 2 s). Prints
 *       "client: S 1..N, R 1..M, longest pause P ms at T s, connection kept"
 *       and exits 0; on a gap, a stop, a reset or a close: one line saying which, exit 1.
 *   seqstream recv PORT
 *       Accept one connection, read until EOF, print
 *       "recv: B bytes in T s: R Mbit/s".
 *   seqstream send HOST PORT SECONDS
 *       Connect and send as fast as the connection takes for SECONDS.
 * Errors: one line on stderr, exit 1; usage: exit 2. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 20
#define STALL_S 2.0   /* a stream silent this long before the end stopped */

static __attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("seqstream: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int listener(const char *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4) < 0)
        die("listen on port %s: %s", port, strerror(errno));
    return s;
}

static int connect_to(const char *host, const char *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        die("bad IPv4 address '%s'", host);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
        die("connect to %s:%s: %s", host, port, strerror(errno));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return s;
}

static int send_all(int s, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(s, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Line reader over a socket: calls fn for each complete line. -1 on EOF/error. */
struct lines {
    char buf[4096];
    size_t len;
};
static int read_lines(int s, struct lines *l, void (*fn)(const char *line, void *ctx), void *ctx)
{
    ssize_t n = recv(s, l->buf + l->len, sizeof(l->buf) - 1 - l->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    l->len += (size_t)n;
    char *start = l->buf, *nl;
    while ((nl = memchr(start, '\n', l->len - (size_t)(start - l->buf)))) {
        *nl = '\0';
        fn(start, ctx);
        start = nl + 1;
    }
    l->len -= (size_t)(start - l->buf);
    memmove(l->buf, start, l->len);
    if (l->len == sizeof(l->buf) - 1)
        die("line too long");
    return 0;
}

/* ---- serve --------------------------------------------------------------- */

static void echo_line(const char *line, void *ctx)
{
    char out[64];
    if (line[0] == 'E' && line[1] == ' ') {
        int n = snprintf(out, sizeof(out), "R %s\n", line + 2);
        send_all(*(int *)ctx, out, (size_t)n);
    }
}

static void serve(const char *port)
{
    int ls = listener(port);
    for (;;) {
        int s = accept(ls, NULL, NULL);
        if (s < 0)
            continue;
        int one = 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct lines l = { .len = 0 };
        unsigned long seq = 0;
        double next = now();
        for (;;) {
            int wait = (int)((next - now()) * 1000);
            struct pollfd p = { .fd = s, .events = POLLIN };
            if (poll(&p, 1, wait > 0 ? wait : 0) > 0 && read_lines(s, &l, echo_line, &s) < 0)
                break;
            if (now() >= next) {
                char out[32];
                int n = snprintf(out, sizeof(out), "S %lu\n", ++seq);
                if (send_all(s, out, (size_t)n) < 0)
                    break;
                next += TICK_MS / 1000.0;
            }
        }
        close(s);
    }
}

/* ---- client -------------------------------------------------------------- */

struct client {
    unsigned long s_last, r_last, sent;
    double t0, last_rx, max_pause, max_at;
    double s_at, r_at;   /* when the last S and R arrived */
    int bad;
};

static void check_line(const char *line, void *ctx)
{
    struct client *c = ctx;
    char *end;
    unsigned long n = strtoul(line + 2, &end, 10);
    unsigned long *last = line[0] == 'S' ? &c->s_last : line[0] == 'R' ? &c->r_last : NULL;
    double t = now();
    if (!last || line[1] != ' ' || *end) {
        fprintf(stderr, "client: garbled line '%.40s'\n", line);
        c->bad = 1;
        return;
    }
    if (n != *last + 1) {
        fprintf(stderr, "client: %c %lu followed by %lu (a gap)\n", line[0], *last, n);
        c->bad = 1;
    }
    *last = n;
    *(line[0] == 'S' ? &c->s_at : &c->r_at) = t;
    if (t - c->last_rx > c->max_pause) {
        c->max_pause = t - c->last_rx;
        c->max_at = t - c->t0;
    }
    c->last_rx = t;
}

static int client(const char *host, const char *port, const char *stopfile)
{
    int s = connect_to(host, port);
    struct client c = { .t0 = now() };
    c.last_rx = c.t0;
    struct lines l = { .len = 0 };
    double next = c.t0;
    struct stat st;
    const char *why = NULL;
    while (stat(stopfile, &st) < 0) {
        int wait = (int)((next - now()) * 1000);
        struct pollfd p = { .fd = s, .events = POLLIN };
        if (poll(&p, 1, wait > 0 ? wait : 0) > 0 && read_lines(s, &l, check_line, &c) < 0) {
            why = errno == ECONNRESET ? "connection reset" : "connection closed";
            break;
        }
        if (now() >= next) {
            char out[32];
            int n = snprintf(out, sizeof(out), "E %lu\n", ++c.sent);
            if (send_all(s, out, (size_t)n) < 0) {
                why = errno == ECONNRESET || errno == EPIPE ? "connection reset" : "send failed";
                break;
            }
            next += TICK_MS / 1000.0;
        }
    }
    printf("client: S 1..%lu, R 1..%lu (of %lu sent), longest pause %.0f ms at %.1f s, %s\n", c.s_last,
           c.r_last, c.sent, c.max_pause * 1000, c.max_at, why ? why : "connection kept");
    /* both streams must run to the end: one that stopped (a guest timer that
     * never fired stops S while R, driven by our packets, goes on) is a failure */
    double end = now();
    int stalled = 0;
    if (end - c.s_at > STALL_S || end - c.r_at > STALL_S) {
        fprintf(stderr, "client: a stream stopped: last S %lu %.1f s and last R %lu %.1f s before the end\n",
                c.s_last, end - c.s_at, c.r_last, end - c.r_at);
        stalled = 1;
    }
    fflush(stdout);
    return why || c.bad || stalled || !c.s_last || !c.r_last ? 1 : 0;
}

/* ---- bulk ---------------------------------------------------------------- */

static void recv_bulk(const char *port)
{
    int ls = listener(port), s = accept(ls, NULL, NULL);
    if (s < 0)
        die("accept: %s", strerror(errno));
    static char buf[1 << 16];
    unsigned long long total = 0;
    double t0 = 0;
    for (;;) {
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (!total)
            t0 = now();
        total += (unsigned long long)n;
    }
    double t = now() - t0;
    printf("recv: %llu bytes in %.2f s: %.0f Mbit/s\n", total, t, t > 0 ? total * 8 / t / 1e6 : 0.0);
    fflush(stdout);
}

static void send_bulk(const char *host, const char *port, const char *secs)
{
    int s = connect_to(host, port);
    static char buf[1 << 16];
    memset(buf, 'x', sizeof(buf));
    double end = now() + atof(secs);
    while (now() < end)
        if (send_all(s, buf, sizeof(buf)) < 0)
            die("send: %s", strerror(errno));
    close(s);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && !strcmp(argv[1], "serve"))
        serve(argv[2]);
    else if (argc == 5 && !strcmp(argv[1], "client"))
        return client(argv[2], argv[3], argv[4]);
    else if (argc == 3 && !strcmp(argv[1], "recv"))
        recv_bulk(argv[2]);
    else if (argc == 5 && !strcmp(argv[1], "send"))
        send_bulk(argv[2], argv[3], argv[4]);
    else {
        fputs("usage: seqstream serve PORT | client HOST PORT STOPFILE | recv PORT | send HOST PORT SECONDS\n",
              stderr);
        return 2;
    }
    return 0;
}
