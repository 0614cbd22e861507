/* ferry vm shutdown: press the guest's power button, wait for ferry-vmm to
 * exit, and stop the VM hard (`quit`) when the guest does not power off in
 * time, as systemd does with a service that ignores SIGTERM. */
#include <time.h>

#include "cli/cli.h"

#define POLL_MS 200

/* Polls until ferry-vmm closes the socket (it exited) or `ms` pass: 1 gone, 0 not. */
static int wait_gone(struct cli_conn *c, uint64_t ms)
{
    uint64_t end = cli_now_ms() + ms;
    char err[512];
    do {
        json_object *reply;
        int rc = cli_call(c, "status", NULL, &reply, err, sizeof(err));
        if (rc == CLI_EIO)
            return 1;
        if (rc == CLI_OK)
            json_object_put(reply);
        nanosleep(&(struct timespec){ .tv_nsec = POLL_MS * 1000000L }, NULL);
    } while (cli_now_ms() < end);
    return 0;
}

int cmd_shutdown(struct cli_conn *c, long long timeout_s)
{
    json_object *reply;
    char err[512];
    if (cli_call(c, "shutdown", NULL, &reply, err, sizeof(err)) != CLI_OK) {
        cli_err("%s", err);
        return EXIT_FAILED;
    }
    json_object_put(reply);
    if (wait_gone(c, (uint64_t)timeout_s * 1000)) {
        printf("guest powered off\n");
        return EXIT_OK;
    }
    cli_err("guest did not power off within %lld s: stopped it hard", timeout_s);
    if (cli_call(c, "quit", NULL, &reply, err, sizeof(err)) == CLI_OK)
        json_object_put(reply);
    else if (!wait_gone(c, 0))
        cli_err("quit failed too: %s", err);
    return EXIT_FAILED;
}
