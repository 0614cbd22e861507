/* ferry tls init|issue: the cluster CA and host identities (docs/tls.md).
 * No control socket: these only write credentials directories. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/tls.h"


static int run_init(char **w, int nw, const char *cn, int days)
{
    if (nw != 2)
        return nw < 2 ? cli_usage("tls init needs DIR") : cli_usage("unexpected argument '%s'", w[2]);
    char err[1024];
    if (tls_ca_init(w[1], cn, days, err, sizeof(err)) < 0) {
        cli_err("%s", err);
        return EXIT_FAILED;
    }
    printf("new CA in %s/ca.pem (keep %s/ca-key.pem private); this host's identity: %s/cert.pem\n",
           w[1], w[1], w[1]);
    return EXIT_OK;
}

static int run_issue(char **w, int nw, const char *cn, int days)
{
    if (nw != 3)
        return nw < 3 ? cli_usage("tls issue needs CADIR and OUTDIR") : cli_usage("unexpected argument '%s'", w[3]);
    if (!cn)
        return cli_usage("tls issue needs --cn NAME (the new host's name)");
    char err[1024];
    if (tls_issue(w[1], w[2], cn, days, err, sizeof(err)) < 0) {
        cli_err("%s", err);
        return EXIT_FAILED;
    }
    printf("identity for %s in %s (ca.pem, cert.pem, key.pem): copy it to that host, for --tls-dir\n", cn, w[2]);
    return EXIT_OK;
}

int cmd_tls(int argc, char **argv)
{
    static const struct option opts[] = {
        { "cn", required_argument, NULL, 'c' }, { "days", required_argument, NULL, 'd' }, { 0 },
    };
    const char *cn = NULL;
    long long days = TLS_DEFAULT_DAYS;
    char *end;
    int c;
    optind = 0;   /* a fresh scan of our own words */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cn = optarg;
            break;
        case 'd':
            errno = 0;
            days = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end || days < 1 || days > 36500)
                return cli_usage("--days needs a number of days from 1 to 36500, not '%s'", optarg);
            break;
        case ':':
            return cli_usage("option '%s' needs an argument", argv[optind - 1]);
        default:
            return cli_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    char **w = argv + optind;
    int nw = argc - optind;
    if (nw >= 1 && !strcmp(w[0], "init"))
        return run_init(w, nw, cn, (int)days);
    if (nw >= 1 && !strcmp(w[0], "issue"))
        return run_issue(w, nw, cn, (int)days);
    return nw ? cli_usage("unknown command 'tls %s'", w[0]) : cli_usage("tls needs a command: init or issue");
}
