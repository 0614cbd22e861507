/* clockprobe: the guest's clocks as its programs see them, across migrations.
 * One static binary for both ends (the guest's initramfs has no C library).
 *
 *   clockprobe sync PHC
 *       In the guest, once at boot: sets CLOCK_REALTIME from the PTP clock PHC
 *       (/dev/ptp0 of the ptp_kvm driver: the host's wall clock), as chrony
 *       with a PHC reference clock would, and prints the correction. Linux
 *       sets its clock at boot from the CMOS RTC, whole seconds plus 0.5 s,
 *       so without this the guest starts up to half a second off.
 *   clockprobe serve PORT
 *       In the guest. A sampler thread reads CLOCK_MONOTONIC through the vDSO
 *       (clock_gettime) and through the system call, and sleeps 1 ms between
 *       samples. It counts every step back of either, and records every
 *       forward step over 50 ms (the guest was paused, or its timers stalled)
 *       with the guest's CLOCK_REALTIME at its end. On each TCP connection
 *       it answers the line "T" with "T <realtime ns>" and "G" with the
 *       sampler's findings:
 *         "G samples=N back_vdso=N back_sys=N max_back_ns=N steps=N"
 *       followed by one "step <gap ns> <realtime ns at its end>" line per
 *       step and "end".
 *   clockprobe watch HOST PORT STOPFILE
 *       In the client. Asks the time every 50 ms until STOPFILE exists and
 *       compares it with its own CLOCK_REALTIME at the midpoint of the round
 *       trip. Prints, on stdout, one line per probe:
 *         "probe <host realtime ns> <round trip ns> <guest - host ns>"
 *       then asks for the findings and prints the guest's "G ..." and
 *       "step ..." lines unchanged.
 * Errors: one line on stderr, exit 1; usage: exit 2. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STEP_NS 50000000ll   /* forward steps worth recording */
#define MAX_STEPS 64

static __attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("clockprobe: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec; }

static int64_t vdso_now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return ns(t);
}

static int64_t sys_now(clockid_t c)
{
    struct timespec t;
    syscall(SYS_clock_gettime, c, &t);
    return ns(t);
}

/* ---- sync ---------------------------------------------------------------- */

/* the dynamic clock id of an open PHC (the kernel's FD_TO_CLOCKID) */
#define FD_TO_CLOCKID(fd) ((clockid_t)((((unsigned)~(fd)) << 3) | 3))

static int sync_from(const char *phc)
{
    int fd = open(phc, O_RDONLY);
    if (fd < 0)
        die("open %s: %s", phc, strerror(errno));
    struct timespec host;
    int64_t before = vdso_now(CLOCK_REALTIME);
    if (clock_gettime(FD_TO_CLOCKID(fd), &host) < 0)
        die("read %s: %s", phc, strerror(errno));
    if (clock_settime(CLOCK_REALTIME, &host) < 0)
        die("set CLOCK_REALTIME: %s", strerror(errno));
    printf("sync: CLOCK_REALTIME corrected by %.1f ms from %s\n", (double)(ns(host) - before) / 1e6, phc);
    close(fd);
    return 0;
}

/* ---- serve --------------------------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    uint64_t samples, back_vdso, back_sys;
    int64_t max_back;
    int nsteps;
    int64_t step_gap[MAX_STEPS], step_end[MAX_STEPS];
} found = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *sampler(void *arg)
{
    (void)arg;
    int64_t last_v = vdso_now(CLOCK_MONOTONIC), last_s = sys_now(CLOCK_MONOTONIC);
    const struct timespec ms = { 0, 1000000 };
    for (;;) {
        nanosleep(&ms, NULL);
        int64_t v = vdso_now(CLOCK_MONOTONIC), s = sys_now(CLOCK_MONOTONIC);
        pthread_mutex_lock(&found.lock);
        found.samples++;
        if (v < last_v) {
            found.back_vdso++;
            found.max_back = last_v - v > found.max_back ? last_v - v : found.max_back;
        }
        if (s < last_s) {
            found.back_sys++;
            found.max_back = last_s - s > found.max_back ? last_s - s : found.max_back;
        }
        if (v - last_v > STEP_NS && found.nsteps < MAX_STEPS) {
            found.step_gap[found.nsteps] = v - last_v;
            found.step_end[found.nsteps++] = vdso_now(CLOCK_REALTIME);
        }
        pthread_mutex_unlock(&found.lock);
        last_v = v;
        last_s = s;
    }
    return NULL;
}

static void answer(int c)
{
    FILE *in = fdopen(dup(c), "r"), *out = fdopen(c, "w");
    if (!in || !out)
        die("fdopen: %s", strerror(errno));
    char line[64];
    while (fgets(line, sizeof(line), in)) {
        if (line[0] == 'T') {
            fprintf(out, "T %lld\n", (long long)vdso_now(CLOCK_REALTIME));
        } else if (line[0] == 'G') {
            pthread_mutex_lock(&found.lock);
            fprintf(out, "G samples=%llu back_vdso=%llu back_sys=%llu max_back_ns=%lld steps=%d\n",
                    (unsigned long long)found.samples, (unsigned long long)found.back_vdso,
                    (unsigned long long)found.back_sys, (long long)found.max_back, found.nsteps);
            for (int i = 0; i < found.nsteps; i++)
                fprintf(out, "step %lld %lld\n", (long long)found.step_gap[i], (long long)found.step_end[i]);
            pthread_mutex_unlock(&found.lock);
            fputs("end\n", out);
        }
        fflush(out);
    }
    fclose(in);
    fclose(out);
}

static int serve(const char *port)
{
    pthread_t t;
    if (pthread_create(&t, NULL, sampler, NULL) != 0)
        die("cannot start the sampler");
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4) < 0)
        die("listen on port %s: %s", port, strerror(errno));
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        answer(c);
    }
}

/* ---- watch --------------------------------------------------------------- */

static int watch(const char *host, const char *port, const char *stopfile)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        die("bad IPv4 address '%s'", host);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
        die("connect to %s:%s: %s", host, port, strerror(errno));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    FILE *in = fdopen(dup(s), "r"), *out = fdopen(s, "w");
    if (!in || !out)
        die("fdopen: %s", strerror(errno));
    char line[256];
    long probes = 0;
    const struct timespec pause = { 0, 50000000 };
    struct stat st;
    while (stat(stopfile, &st) != 0) {
        int64_t t0 = vdso_now(CLOCK_REALTIME);
        fputs("T\n", out);
        fflush(out);
        long long g;
        if (!fgets(line, sizeof(line), in) || sscanf(line, "T %lld", &g) != 1)
            die("the guest stopped answering after %ld probes", probes);
        int64_t t1 = vdso_now(CLOCK_REALTIME);
        probes++;
        printf("probe %lld %lld %lld\n", (long long)t1, (long long)(t1 - t0), g - (t0 + t1) / 2);
        nanosleep(&pause, NULL);
    }
    fputs("G\n", out);
    fflush(out);
    while (fgets(line, sizeof(line), in) && strcmp(line, "end\n") != 0)
        fputs(line, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "sync") == 0)
        return sync_from(argv[2]);
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    if (argc == 5 && strcmp(argv[1], "watch") == 0)
        return watch(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: clockprobe sync PHC | serve PORT | watch HOST PORT STOPFILE\n");
    return 2;
}
