/* ferry-disk: copy a powered-off VM's disk image to another host over the
 * provisioning network, always TLS (migration/cold.h).
 *
 *   ferry-disk receive PATH --listen HOST:PORT --tls-dir DIR
 *   ferry-disk send IMAGE --to HOST:PORT [--via ADDR] --tls-dir DIR
 *
 * Exit status: 0 copied and verified, 1 failed (one line on stderr), 2 usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tls.h"
#include "migration/cold.h"

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "ferry-disk: %s\n", why);
    fprintf(why ? stderr : stdout,
            "usage: ferry-disk receive PATH --listen HOST:PORT --tls-dir DIR\n"
            "       ferry-disk send IMAGE --to HOST:PORT [--via ADDR] --tls-dir DIR\n"
            "Copies a raw image (of a powered-off VM) over TLS: its data extents only (holes\n"
            "stay holes), checked end to end by a digest; PATH appears only when complete.\n"
            "--via: the local address to leave from (the provisioning network).\n");
    return why ? 2 : 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' }, { "to", required_argument, NULL, 't' },
        { "via", required_argument, NULL, 'v' }, { "tls-dir", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' }, { 0 },
    };
    const char *listen = NULL, *to = NULL, *via = NULL, *tls_dir = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': listen = optarg; break;
        case 't': to = optarg; break;
        case 'v': via = optarg; break;
        case 'T': tls_dir = optarg; break;
        case 'h': return usage(NULL);
        default: return usage("unknown option or missing argument");
        }
    }
    if (argc - optind != 2)
        return usage("needs a command (send or receive) and a path");
    const char *cmd = argv[optind], *path = argv[optind + 1];
    bool send = !strcmp(cmd, "send");
    if (!send && strcmp(cmd, "receive"))
        return usage("the command is send or receive");
    if (send ? !to || listen : !listen || to || via)
        return usage(send ? "send needs --to HOST:PORT (and no --listen)" : "receive needs --listen HOST:PORT only");
    if (!tls_dir)
        return usage("--tls-dir DIR is required: a disk copy is never plaintext");
    char err[512];
    SSL_CTX *tls = tls_ctx_new(tls_dir, !send, err, sizeof(err));
    if (!tls) {
        fprintf(stderr, "ferry-disk: %s\n", err);
        return 1;
    }
    struct cold_result r;
    int rc = send ? cold_send(path, to, via, tls, &r, err, sizeof(err))
                  : cold_receive(path, listen, tls, &r, err, sizeof(err));
    SSL_CTX_free(tls);
    if (rc < 0) {
        fprintf(stderr, "ferry-disk: %s: %s\n", send ? "send" : "receive", err);
        return 1;
    }
    double secs = r.ms ? r.ms / 1000.0 : 0.001;
    printf("%s %s: %llu MiB image, %llu MiB of data in %.2f s (%.0f MB/s), %s%s%s, digest verified\n",
           send ? "sent" : "received", path, (unsigned long long)(r.size >> 20),
           (unsigned long long)(r.data_bytes >> 20), secs, r.data_bytes / secs / 1e6, r.cipher,
           send ? "" : " from ", send ? "" : r.peer);
    return 0;
}
