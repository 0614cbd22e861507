/* ferry: the operator's client for a ferry-vmm control socket and for the
 * manager. Argument parsing and dispatch; migrate lives in migrate.c, text
 * in progress.c, the manager's commands in center.c. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/center.h"
#include "cli/cli.h"
#include "cli/progress.h"

static const char usage_text[] =
    "usage: ferry [-S SOCKET] vm COMMAND [options]\n"
    "       ferry [--center URL] [--token T] [--ca FILE] [--json] host|cluster|vm|task COMMAND ...\n"
    "\n"
    "Operate a running ferry-vmm through its control socket (ferry-vmm --control PATH),\n"
    "or the cluster through its manager, ferry-center.\n"
    "\n"
    "Options:\n"
    "  -S, --socket PATH   the ferry-vmm control socket (default: $FERRY_SOCKET)\n"
    "  -h, --help          this help\n"
    "\n"
    "Manager options (before the command):\n"
    "  --center URL        the manager, https://HOST:PORT (default: $FERRY_CENTER)\n"
    "  --token T           an API token (default: $FERRY_TOKEN)\n"
    "  --ca FILE           the cluster CA that signed the manager's certificate (default: $FERRY_CA)\n"
    "  --json              print the API's JSON (also after the command)\n"
    "\n"
    "Manager commands (changes run as tasks: a progress bar on a terminal, the outcome at the end):\n"
    "  host add ADDR --cluster C --token T\n"
    "                              add an enrolled host by its ferryd address; T is its enrolment\n"
    "                              token (docs/center.md)\n"
    "  host list | host show NAME  the hosts; one host's state and facts\n"
    "  cluster create NAME | cluster list\n"
    "  cluster set-baseline NAME (--features LIST | --common)\n"
    "                              the CPU features VMs of the cluster see: a comma-separated\n"
    "                              list, or what every host has in common\n"
    "  vm create NAME --host H --spec FILE\n"
    "                              define a VM on host H from a ferryd VM spec (docs/ferryd.md)\n"
    "  vm list | vm show NAME      VMs with their host and power state\n"
    "  vm start NAME | vm stop NAME | vm delete NAME\n"
    "                              power on; stop hard; remove a stopped VM\n"
    "  vm migrate NAME --host H [--priority high|normal]\n"
    "                              live-migrate to host H; a refusal lists each failed check\n"
    "  task list [--state S] | task watch ID | task cancel ID\n"
    "\n"
    "Control-socket commands:\n"
    "  vm status [--json]          state, vCPUs, memory, boot and migration summary\n"
    "  vm pause                    park every vCPU\n"
    "  vm resume                   run the vCPUs again\n"
    "  vm quit                     stop the VM; ferry-vmm exits\n"
    "  vm shutdown [--timeout S]   press the guest's ACPI power button and wait for it to\n"
    "                              power off; after S seconds (default 60) stop it hard\n"
    "                              (exit status 1)\n"
    "  vm migrate --to HOST:PORT [options]\n"
    "                              live-migrate to `ferry-vmm --incoming HOST:PORT`, show\n"
    "                              the progress, then quit the source\n"
    "      --downtime-ms N         pause target for the switchover (default 50)\n"
    "      --bandwidth-mbps N      use at most N Mbit/s of the link (default: no cap)\n"
    "      --max-time S            give up pre-copy after S seconds (default 300)\n"
    "      --max-rounds N          give up after N pre-copy rounds (default 60)\n"
    "      --force                 at a limit, switch over anyway instead of failing\n"
    "      --no-auto-converge      never slow the guest's vCPUs (by default a guest that dirties\n"
    "                              memory faster than the link moves it is slowed until the\n"
    "                              migration converges)\n"
    "      --streams N             TCP (TLS) connections, each with its own thread (default:\n"
    "                              one per core, up to 4)\n"
    "      --via ADDR[,ADDR...]    local addresses to send from, one per migration NIC\n"
    "      --storage-to PATH,...   no shared storage: copy each disk to its PATH there\n"
    "      --compress MODE         auto (default: when the link is the bottleneck), off, lz4, zstd\n"
    "      --verify MODE           memory digest: after (default: after the hand-over, outside\n"
    "                              the pause; a mismatch is an alarm), strict (in the pause: a\n"
    "                              mismatch keeps the VM here), off\n"
    "      --no-verify             the same as --verify off\n"
    "      --keep-source           do not send `quit` to the source after success\n"
    "      --json                  print the final migrate-status as one JSON line\n"
    "                              Ctrl-C cancels the migration (the VM keeps running here)\n"
    "  vm migrate-status [--json]  progress or outcome of the current or last migration\n"
    "  vm migrate-cancel           stop the migration in progress and wait for the outcome\n"
    "  vm move-disk DISK --to PATH [options]\n"
    "                              move a running VM's disk (vda, vdb, ... or its index) to a\n"
    "                              new image at PATH, live; show the progress\n"
    "      --bandwidth-mbps N      copy at most N Mbit/s (default: no cap)\n"
    "      --delete-source         delete the old image after the switch\n"
    "      --force                 replace an existing PATH\n"
    "      --json                  print the final move-disk-status as one JSON line\n"
    "                              Ctrl-C cancels the move (the VM stays on the old image)\n"
    "  vm move-disk-status [DISK] [--json]\n"
    "                              progress or outcome of the current or last disk move\n"
    "  vm move-disk-cancel [DISK]  stop the disk move and wait for the outcome\n"
    "  vm vcpus                    each vCPU's RIP, RSP, CR3, IF, mp_state and pending\n"
    "                              interrupts (the VM is paused for the reading)\n"
    "  vm cmd 'JSON'               send one raw request line, print the reply line\n"
    "\n"
    "Credentials:\n"
    "  tls init DIR [--cn NAME] [--days N]\n"
    "                              a new cluster CA in DIR and this host's identity (NAME,\n"
    "                              default the host name; valid N days, default 825)\n"
    "  tls issue CADIR OUTDIR --cn NAME [--days N]\n"
    "                              an identity for host NAME signed by CADIR's CA, in OUTDIR\n"
    "                              (docs/tls.md)\n"
    "\n"
    "Exit status: 0 ok, 1 the operation failed, 2 usage error, 3 migration in doubt\n"
    "(the VM is paused here and may be running on the destination).\n";

void cli_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ferry: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

uint64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cli_open(struct cli_conn *c, const char *sock)
{
    char err[512];
    if (cli_connect(c, sock, err, sizeof(err)) < 0) {
        cli_err("%s", err);
        return -1;
    }
    return 0;
}

int cli_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ferry: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see ferry --help)\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

static int parse_num(const char *opt, const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return cli_usage("%s needs a non-negative integer, not '%s'", opt, s);
    *out = v;
    return 0;
}

/* `vm vcpus`: one line per vCPU, "key=value" words (-1 from the server: none). */
static void vcpus_print(json_object *res)
{
    json_object *arr, *v;
    if (!json_object_object_get_ex(res, "vcpus", &arr) || !json_object_is_type(arr, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *o = json_object_array_get_idx(arr, i);
        printf("vcpu %d:", json_object_object_get_ex(o, "id", &v) ? json_object_get_int(v) : (int)i);
        json_object_object_foreach(o, key, val) {
            if (strcmp(key, "id"))
                printf(" %s=%s", key, json_object_is_type(val, json_type_int) && json_object_get_int(val) < 0
                                      ? "-" : json_object_get_string(val));
        }
        putchar('\n');
    }
}

/* Simple commands: send cmd, print the result as text or JSON. */
static int simple(struct cli_conn *c, const char *cmd, bool json)
{
    json_object *reply;
    char err[512];
    int rc = cli_call(c, cmd, NULL, &reply, err, sizeof(err));
    if (rc != CLI_OK) {
        cli_err("%s", err);
        return EXIT_FAILED;
    }
    json_object *res = cli_result(reply);
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
    } else if (!strcmp(cmd, "status")) {
        char text[2048];
        status_summary(res, text, sizeof(text));
        fputs(text, stdout);
    } else if (!strcmp(cmd, "vcpus")) {
        vcpus_print(res);
    } else if (!strcmp(cmd, "migrate-status")) {
        struct mig_view v;
        char line[1024];
        mig_view_parse(res, &v);
        if (!strcmp(v.phase, "none"))
            snprintf(line, sizeof(line), "no migration");
        else if (mig_phase_final(v.phase))
            progress_outcome(&v, true, line, sizeof(line));
        else
            progress_line(&v, -1, 0, line, sizeof(line));
        printf("%s\n", line);
    } else {
        json_object *st;
        printf("VM %s\n", json_object_object_get_ex(res, "state", &st) ? json_object_get_string(st) : "ok");
    }
    json_object_put(reply);
    return EXIT_OK;
}

static int raw_cmd(struct cli_conn *c, const char *line)
{
    if (strpbrk(line, "\r\n"))
        return cli_usage("vm cmd: the request must be one line");
    char err[512];
    char *reply = cli_roundtrip(c, line, err, sizeof(err));
    if (!reply) {
        cli_err("%s", err);
        return EXIT_FAILED;
    }
    printf("%s\n", reply);
    json_object *r = json_tokener_parse(reply), *ok;
    bool good = r && json_object_object_get_ex(r, "ok", &ok) && json_object_get_boolean(ok);
    json_object_put(r);
    free(reply);
    return good ? EXIT_OK : EXIT_FAILED;
}

enum { O_TIMEOUT = 255, O_TO, O_DOWNTIME, O_BW, O_MAXTIME, O_MAXROUNDS, O_FORCE, O_NOVERIFY, O_JSON, O_KEEP,
       O_STREAMS, O_VIA, O_COMPRESS, O_VERIFY, O_DELSRC, O_NOCONVERGE, O_STORAGE };

/* The control-socket commands' options (the manager's are in center.c). */
static const struct option opts[] = {
    { "socket", required_argument, NULL, 'S' }, { "help", no_argument, NULL, 'h' },
    { "to", required_argument, NULL, O_TO }, { "downtime-ms", required_argument, NULL, O_DOWNTIME },
    { "bandwidth-mbps", required_argument, NULL, O_BW },
    { "max-time", required_argument, NULL, O_MAXTIME },
    { "max-rounds", required_argument, NULL, O_MAXROUNDS }, { "force", no_argument, NULL, O_FORCE },
    { "no-verify", no_argument, NULL, O_NOVERIFY }, { "json", no_argument, NULL, O_JSON },
    { "keep-source", no_argument, NULL, O_KEEP }, { "streams", required_argument, NULL, O_STREAMS },
    { "via", required_argument, NULL, O_VIA }, { "compress", required_argument, NULL, O_COMPRESS },
    { "verify", required_argument, NULL, O_VERIFY },
    { "delete-source", no_argument, NULL, O_DELSRC },
    { "no-auto-converge", no_argument, NULL, O_NOCONVERGE }, { "storage-to", required_argument, NULL, O_STORAGE },
    { "timeout", required_argument, NULL, O_TIMEOUT }, { 0 },
};

bool cli_socket_opt_takes_value(const char *arg)
{
    if (!strcmp(arg, "-S"))
        return true;
    for (const struct option *o = opts; o->name; o++)
        if (!strncmp(arg, "--", 2) && !strcmp(arg + 2, o->name))
            return o->has_arg == required_argument;
    return false;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "tls"))   /* no socket, options of its own */
        return cmd_tls(argc - 1, argv + 1);
    if (center_command(argc, argv))
        return cmd_center(argc, argv);
    const char *sock = getenv("FERRY_SOCKET");
    struct migrate_opts mo = { .downtime_ms = -1, .bandwidth_mbps = -1, .max_time_s = -1, .max_rounds = -1,
                               .streams = -1 };
    long long timeout_s = -1;
    bool help = false, migrate_opt = false, delete_source = false;
    char first_migrate_opt[32] = "", first_nonmove_opt[32] = "";
    int c, li = -1;
    char optname[32];
    opterr = 0;
    /* options may come anywhere; the remaining words are the command */
    while ((c = getopt_long(argc, argv, ":S:h", opts, &li)) != -1) {
        const char *name = argv[optind - 1];
        if (c >= O_TIMEOUT && li >= 0) {
            snprintf(optname, sizeof(optname), "--%s", opts[li].name);
            name = optname;
        }
        li = -1;
        switch (c) {
        case 'S': sock = optarg; break;
        case 'h': help = true; break;
        case O_JSON: mo.json = true; break;
        case O_DELSRC: delete_source = true; break;
        case O_TIMEOUT:
            if (parse_num(name, optarg, &timeout_s))
                return EXIT_USAGE;
            break;
        case '?':
            if (optopt >= O_TIMEOUT)  /* --force=1 and the like */
                return cli_usage("option '%s' takes no argument", name);
            if (optopt)
                return cli_usage("unknown option '-%c'", optopt);
            return cli_usage("unknown option '%s'", name);
        case ':':
            return cli_usage("option '%s' needs an argument", name);
        default:
            if (!migrate_opt)
                snprintf(first_migrate_opt, sizeof(first_migrate_opt), "%s", name);
            migrate_opt = true;
            /* --to, --bandwidth-mbps and --force are move-disk's too */
            if (c != O_TO && c != O_BW && c != O_FORCE && !first_nonmove_opt[0])
                snprintf(first_nonmove_opt, sizeof(first_nonmove_opt), "%s", name);
            long long *num = c == O_DOWNTIME ? &mo.downtime_ms : c == O_BW ? &mo.bandwidth_mbps
                           : c == O_MAXTIME ? &mo.max_time_s : c == O_MAXROUNDS ? &mo.max_rounds
                           : c == O_STREAMS ? &mo.streams : NULL;
            if (num && parse_num(name, optarg, num))
                return EXIT_USAGE;
            if (c == O_TO) mo.to = optarg;
            if (c == O_FORCE) mo.force = true;
            if (c == O_NOVERIFY) mo.no_verify = true;
            if (c == O_KEEP) mo.keep_source = true;
            if (c == O_NOCONVERGE) mo.no_auto_converge = true;
            if (c == O_VIA) mo.via = optarg;
            if (c == O_COMPRESS) mo.compress = optarg;
            if (c == O_VERIFY) mo.verify = optarg;
            if (c == O_STORAGE) mo.storage_to = optarg;
        }
    }
    char **w = argv + optind;
    int nw = argc - optind;
    if (help || (nw >= 1 && !strcmp(w[0], "help"))) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (nw == 0 || (nw == 1 && !strcmp(w[0], "vm"))) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(w[0], "vm"))
        return cli_usage("unknown command '%s'", w[0]);
    const char *sub = w[1];
    static const char *known[] = { "status", "pause", "resume", "quit", "shutdown", "migrate",
                                   "migrate-status", "migrate-cancel", "cmd", "move-disk",
                                   "move-disk-status", "move-disk-cancel", "vcpus", NULL };
    int k = 0;
    while (known[k] && strcmp(known[k], sub))
        k++;
    if (!known[k])
        return cli_usage("unknown command 'vm %s'", sub);
    bool is_cmd = !strcmp(sub, "cmd");
    bool is_move = !strcmp(sub, "move-disk"), move_other = !strncmp(sub, "move-disk-", 10);
    if (is_move && nw != 3)
        return nw < 3 ? cli_usage("vm move-disk needs the disk to move (vda, vdb, ... or its index)")
                      : cli_usage("unexpected argument '%s'", w[3]);
    if (move_other && nw > 3)
        return cli_usage("unexpected argument '%s'", w[3]);
    if (!is_move && !move_other && nw != (is_cmd ? 3 : 2))
        return is_cmd ? cli_usage("vm cmd needs exactly one argument: the request line")
                      : cli_usage("unexpected argument '%s'", w[2]);
    bool is_migrate = !strcmp(sub, "migrate");
    if (is_move && first_nonmove_opt[0])
        return cli_usage("%s is an option of vm migrate only", first_nonmove_opt);
    if (migrate_opt && !is_migrate && !is_move)
        return cli_usage("%s is an option of vm migrate%s only", first_migrate_opt,
                           first_nonmove_opt[0] ? "" : " and vm move-disk");
    if (delete_source && !is_move)
        return cli_usage("--delete-source is an option of vm move-disk only");
    if (mo.json && strcmp(sub, "status") && strcmp(sub, "migrate-status") && !is_migrate && !is_move &&
        strcmp(sub, "move-disk-status"))
        return cli_usage("--json is not an option of vm %s", sub);
    if (is_move && !mo.to)
        return cli_usage("vm move-disk needs --to PATH");
    if (timeout_s >= 0 && strcmp(sub, "shutdown"))
        return cli_usage("--timeout is an option of vm shutdown only");
    if (is_migrate && !mo.to)
        return cli_usage("vm migrate needs --to HOST:PORT");
    if (!sock || !sock[0])
        return cli_usage("no control socket: use -S PATH or set FERRY_SOCKET");

    struct cli_conn conn;
    if (cli_open(&conn, sock) < 0)
        return EXIT_FAILED;
    int rc;
    if (is_migrate) {
        rc = cmd_migrate(&conn, &mo);
    } else if (is_move) {
        struct move_opts mv = { .to = mo.to, .bandwidth_mbps = mo.bandwidth_mbps, .force = mo.force,
                                .delete_source = delete_source, .json = mo.json };
        rc = cmd_move_disk(&conn, w[2], &mv);
    } else if (!strcmp(sub, "move-disk-status")) {
        rc = cmd_move_disk_status(&conn, nw == 3 ? w[2] : NULL, mo.json);
    } else if (!strcmp(sub, "move-disk-cancel")) {
        rc = cmd_move_disk_cancel(&conn, nw == 3 ? w[2] : NULL);
    } else if (!strcmp(sub, "shutdown")) {
        rc = cmd_shutdown(&conn, timeout_s >= 0 ? timeout_s : 60);
    } else if (!strcmp(sub, "migrate-cancel")) {
        rc = cmd_migrate_cancel(&conn);
    } else if (is_cmd) {
        rc = raw_cmd(&conn, w[2]);
    } else {
        rc = simple(&conn, sub, mo.json);
    }
    cli_close(&conn);
    return rc;
}
