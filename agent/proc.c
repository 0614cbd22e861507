/* ferry-vmm processes: spawning them detached from ferryd, recognising
 * them again later, talking to their control sockets, and their taps. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/ferryd.h"
#include "cli/client.h"

#define CONTROL_TIMEOUT_MS 3000   /* a ferry-vmm answers in microseconds; ferryd's loop waits */

/* Messages from the spawned children: the grandchild's pid (step -1), or
 * the setup step that failed before exec and its errno. */
struct spawn_msg {
    int step, err;
    pid_t pid;
};
static const char *const spawn_steps[] = { "setsid", "fork", "sched_setaffinity", "open log",
                                           "exec" };

static void child_fail(int fd, int step)
{
    struct spawn_msg m = { step, errno, 0 };
    if (write(fd, &m, sizeof(m)) < 0)
        _exit(126);
    _exit(127);
}

static ssize_t read_msg(int fd, struct spawn_msg *m)
{
    ssize_t n;
    while ((n = read(fd, m, sizeof(*m))) < 0 && errno == EINTR)
        ;
    return n;   /* messages are smaller than PIPE_BUF: each arrives whole */
}

/* Double fork with setsid: the VMM is re-parented to init (or a subreaper),
 * in a session of its own, so neither ferryd's exit nor a signal to its
 * process group (a terminal's ^C, systemd with KillMode=process) reaches
 * it. Its pid, and why it did not exec, come back on a close-on-exec pipe.
 * It execs only once its pid file is on disk (a byte on the `go` pipe): if
 * ferryd dies before, the pipe's EOF ends it, so no VMM runs that a
 * restarted ferryd could not find. */
int proc_spawn(char *const argv[], const struct spawn_files *files, const cpu_set_t *affinity,
               pid_t *pid, unsigned long long *starttime, char *err, size_t errlen)
{
    int p[2], go[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(go, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    pid_t mid = fork();
    if (mid == 0) {
        close(p[0]);
        close(go[1]);
        if (setsid() < 0)
            child_fail(p[1], 0);
        pid_t g = fork();
        if (g < 0)
            child_fail(p[1], 1);
        if (g > 0) {
            struct spawn_msg m = { -1, 0, g };
            _exit(write(p[1], &m, sizeof(m)) == sizeof(m) ? 0 : 1);
        }
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(0);
        /* Affinity before exec: the VMM's vCPU threads inherit it. */
        if (affinity && sched_setaffinity(0, sizeof(*affinity), affinity) < 0)
            child_fail(p[1], 2);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int out = open(files->out, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        int log = open(files->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (null < 0 || out < 0 || log < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 ||
            dup2(log, 2) < 0)
            child_fail(p[1], 3);
        /* ferryd's own sockets (the HTTPS listener) must not live on in the
         * VMM, or a restarted ferryd could not bind its port again. */
        close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
        signal(SIGPIPE, SIG_DFL);   /* ferryd ignores it; exec keeps ignored signals */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        child_fail(p[1], 4);
    }
    int fork_errno = errno;
    close(p[1]);
    close(go[0]);
    struct spawn_msg m = { 1, fork_errno, 0 };
    if (mid > 0) {
        while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (read_msg(p[0], &m) != sizeof(m))
            m = (struct spawn_msg){ 1, ECHILD, 0 };
    }
    char pidtext[64];
    if (m.step < 0) {
        *pid = m.pid;
        *starttime = proc_starttime(m.pid);
        int n = snprintf(pidtext, sizeof(pidtext), "%d %llu\n", (int)m.pid, *starttime);
        if (write_file_atomic(files->pid, pidtext, (size_t)n, err, errlen) < 0) {
            close(go[1]);   /* EOF: the child exits without exec */
            close(p[0]);
            return -1;
        }
        if (write(go[1], "x", 1) != 1 || read_msg(p[0], &m) != 0) {
            if (m.step < 0)
                m = (struct spawn_msg){ 4, EPIPE, 0 };
            unlink(files->pid);
        }
    }
    close(go[1]);
    close(p[0]);
    if (m.step >= 0) {
        snprintf(err, errlen, "cannot start %s: %s: %s", argv[0],
                 spawn_steps[m.step < 5 ? m.step : 1], strerror(m.err));
        return -1;
    }
    return 0;
}

/* Field 22 of /proc/PID/stat: the start time in clock ticks since boot. A
 * recycled pid has another one. 0 when there is no such process or it is a
 * zombie (a VMM that exited but that init has not reaped yet). */
unsigned long long proc_starttime(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *text = read_file(path, 4096, NULL);
    if (!text)
        return 0;
    unsigned long long start = 0;
    char state = 'X';
    const char *p = strrchr(text, ')');   /* comm may contain spaces and ')' */
    if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                            "%*d %*d %llu", &state, &start) != 2 || state == 'Z' || state == 'X')
        start = 0;
    free(text);
    return start;
}

/* Is pid still the ferry-vmm ferryd started for this control socket? The
 * start time rules out a recycled pid, the command line a process that is
 * not that VMM. */
bool proc_is_vmm(pid_t pid, unsigned long long starttime, const char *control)
{
    if (pid <= 0 || proc_starttime(pid) != starttime)
        return false;
    char path[64];
    size_t len;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    char *args = read_file(path, 1 << 20, &len);
    bool found = false;
    for (size_t i = 0; args && i < len; i += strlen(args + i) + 1)
        if (!strcmp(args + i, "--control") && i + 10 < len && !strcmp(args + i + 10, control))
            found = true;
    free(args);
    return found;
}

int vmm_call(const char *control, const char *cmd, json_object *args, json_object **result,
             char *err, size_t errlen)
{
    struct cli_conn c;
    json_object *reply;
    if (cli_connect(&c, control, err, errlen) < 0)
        return -1;
    c.timeout_ms = CONTROL_TIMEOUT_MS;
    int rc = cli_call(&c, cmd, args, &reply, err, errlen);
    cli_close(&c);
    if (rc != CLI_OK)
        return -1;
    if (result)
        *result = json_object_get(cli_result(reply));
    json_object_put(reply);
    return 0;
}

/* Run `ip ARGS...`; its stderr (first line) becomes the reason. */
static int run_ip(char *err, size_t errlen, char *const argv[])
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execvp("ip", argv);
        _exit(127);
    }
    close(p[1]);
    char buf[256] = "";
    ssize_t n = pid > 0 ? read(p[0], buf, sizeof(buf) - 1) : -1;
    close(p[0]);
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    int status = -1;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    snprintf(err, errlen, "ip %s %s: %s", argv[1], argv[2],
             buf[0] ? buf : pid < 0 ? strerror(errno) : "failed");
    return -1;
}

int tap_setup(const char *tap, const char *bridge, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/net/%s", tap);
    if (access(path, F_OK) < 0 &&
        run_ip(err, errlen, (char *[]){ "ip", "tuntap", "add", "dev", (char *)tap, "mode", "tap", NULL }) < 0)
        return -1;
    return run_ip(err, errlen, (char *[]){ "ip", "link", "set", "dev", (char *)tap, "master",
                                           (char *)bridge, "up", NULL });
}

void tap_remove(const char *tap)
{
    char path[128], err[ERRLEN];
    snprintf(path, sizeof(path), "/sys/class/net/%s", tap);
    if (access(path, F_OK) == 0 &&
        run_ip(err, sizeof(err), (char *[]){ "ip", "link", "del", "dev", (char *)tap, NULL }) < 0)
        agent_log("%s", err);
}
