/* ferry-vmm: runs one virtual machine on KVM. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/random.h>

#include "common/tls.h"
#include "devices/announce.h"
#include "vmm/commands.h"
#include "vmm/console.h"
#include "vmm/control.h"
#include "vmm/log.h"
#include "vmm/vm.h"

#define DEFAULT_TLS_DIR "/etc/ferry/tls"

static void usage(FILE *f)
{
    fputs("usage: ferry-vmm --kernel FILE [options]\n"
          "  -k, --kernel FILE     Linux bzImage or Ferry micro-guest (ELF64)\n"
          "  -i, --initrd FILE     initramfs for a Linux kernel\n"
          "  -a, --append STRING   kernel command line (micro-guests: their arguments)\n"
          "  -m, --mem SIZE        guest RAM, e.g. 512M or 2G (default 256M)\n"
          "      --mem-path FILE   back guest RAM with FILE (shared mapping) instead of anonymous memory\n"
          "      --prealloc        fault all guest RAM in at start (with --incoming and --mem: before\n"
          "                        listening, so a migration does not wait for it; with --incoming\n"
          "                        alone: when the VM's size is known, before its pages arrive)\n"
          "  -c, --cpus N          number of vCPUs (default 1)\n"
          "      --cpu-features LIST  the guest sees only these CPUID features (comma-separated,\n"
          "                        names as ferryd reports them): a cluster's CPU baseline\n"
          "      --disk PATH[,readonly]  raw disk image (or block device) as a virtio-blk disk\n"
          "                        (/dev/vda, /dev/vdb, ...; up to 4)\n"
          "      --net tap=NAME[,mac=MAC]  virtio-net NIC on tap device NAME (attached, or created\n"
          "                        when missing); MAC default 52:54:00 and 3 random bytes. With\n"
          "                        --incoming: tap=NAME only, the tap for the VM's Nth NIC\n"
          "                        (default: the source's tap name)\n"
          "      --console DEST    stdio (default), file:PATH or none\n"
          "  -S, --control PATH    Unix control socket (line-delimited JSON, docs/control-socket.md)\n"
          "      --incoming ADDR   receive a migrating VM on HOST:PORT instead of booting one\n"
          "                        (--mem/--cpus, if given, must match the VM)\n"
          "      --tls-dir DIR     migration credentials: DIR/ca.pem, cert.pem, key.pem (`ferry tls init`);\n"
          "                        default " DEFAULT_TLS_DIR " when it exists. Migrations are TLS 1.3 with\n"
          "                        mutual authentication: each end accepts only peers signed by ca.pem\n"
          "      --insecure        migrate in plaintext, without authentication (both ends must say so)\n"
          "  -v, --verbose         debug messages\n"
          "  -h, --help            this help\n",
          f);
}

/* "512M", "2G", "1048576" -> bytes; 0 on error. */
static uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return 0;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case '\0': break;
    default: return 0;
    }
    if (*end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end || v > (ULLONG_MAX >> shift))
        return 0;
    return (uint64_t)v << shift;
}

static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT_MIN || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

/* --disk PATH[,readonly] */
static void parse_disk(struct vm_config *cfg, char *arg)
{
    if (cfg->ndisks == VM_MAX_DISKS)
        die("too many --disk options (at most %d)", VM_MAX_DISKS);
    struct vm_disk *d = &cfg->disks[cfg->ndisks++];
    char *comma = strrchr(arg, ',');
    if (comma) {
        if (strcmp(comma + 1, "readonly") && strcmp(comma + 1, "ro"))
            die("bad --disk '%s' (expected PATH or PATH,readonly)", arg);
        *comma = '\0';
        d->readonly = true;
    }
    if (!*arg)
        die("--disk needs a path");
    d->path = arg;
}

/* --net tap=NAME[,mac=MAC] */
static void parse_net(struct vm_config *cfg, char *arg)
{
    if (cfg->nnics == VM_MAX_NICS)
        die("too many --net options (at most %d)", VM_MAX_NICS);
    struct vm_nic *n = &cfg->nics[cfg->nnics++];
    bool mac = false;
    for (char *save = NULL, *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        if (!strncmp(kv, "tap=", 4) && kv[4] && strlen(kv + 4) < IFNAMSIZ) {
            n->tap = kv + 4;
        } else if (!strncmp(kv, "mac=", 4)) {
            if (net_mac_parse(kv + 4, n->mac) < 0 || (n->mac[0] & 1))
                die("bad --net mac '%s' (expected a unicast MAC like 52:54:00:12:34:56)", kv + 4);
            mac = true;
        } else {
            die("bad --net option '%s' (expected tap=NAME (at most %d characters) or mac=MAC)", kv,
                IFNAMSIZ - 1);
        }
    }
    if (!n->tap)
        die("--net needs tap=NAME");
    if (!mac) {
        uint8_t r[3];
        if (getrandom(r, sizeof(r), 0) != sizeof(r))
            die("cannot pick a MAC address: %s", strerror(errno));
        memcpy(n->mac, (uint8_t[]){ 0x52, 0x54, 0x00, r[0], r[1], r[2] }, 6);
    }
    n->mac_given = mac;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "kernel", required_argument, NULL, 'k' }, { "initrd", required_argument, NULL, 'i' },
        { "append", required_argument, NULL, 'a' }, { "mem", required_argument, NULL, 'm' },
        { "mem-path", required_argument, NULL, 'P' }, { "cpus", required_argument, NULL, 'c' },
        { "console", required_argument, NULL, 'C' }, { "incoming", required_argument, NULL, 'I' }, { "control", required_argument, NULL, 'S' },
        { "disk", required_argument, NULL, 'D' }, { "net", required_argument, NULL, 'N' },
        { "prealloc", no_argument, NULL, 'A' }, { "tls-dir", required_argument, NULL, 'T' }, { "insecure", no_argument, NULL, 'X' },
        { "cpu-features", required_argument, NULL, 'F' },
        { "verbose", no_argument, NULL, 'v' }, { "help", no_argument, NULL, 'h' }, { 0 },
    };
    struct vm_config cfg = { .mem_size = 256ull << 20, .ncpus = 1, .console = "stdio" };
    const char *control_path = NULL, *incoming = NULL, *tls_dir = NULL;
    char err[512];
    bool mem_given = false, cpus_given = false, insecure = false;
    int c;
    opterr = 0;  /* our own one-line messages below */
    while ((c = getopt_long(argc, argv, ":k:i:a:m:c:S:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'k': cfg.kernel = optarg; break;
        case 'i': cfg.initrd = optarg; break;
        case 'a': cfg.cmdline = optarg; break;
        case 'P': cfg.mem_path = optarg; break;
        case 'C': cfg.console = optarg; break;
        case 'S': control_path = optarg; break;
        case 'I': incoming = optarg; break;
        case 'T': tls_dir = optarg; break;
        case 'X': insecure = true; break;
        case 'A': cfg.mem_prealloc = true; break;
        case 'D': parse_disk(&cfg, optarg); break;
        case 'N': parse_net(&cfg, optarg); break;
        case 'F':
            if (cpuid_mask_set(optarg, err, sizeof(err)) < 0)
                die("bad --cpu-features: %s", err);
            break;
        case 'v': log_threshold = LOG_DEBUG; break;
        case 'h': usage(stdout); return 0;
        case 'm':
            if (!(cfg.mem_size = parse_size(optarg)))
                die("bad --mem '%s' (expected a size like 512M or 2G)", optarg);
            mem_given = true;
            break;
        case 'c':
            if (parse_int(optarg, &cfg.ncpus) < 0)
                die("bad --cpus '%s' (expected a number)", optarg);
            cpus_given = true;
            break;
        case ':':
            die("option '%s' requires an argument (see --help)", argv[optind - 1]);
        default:
            die("unknown option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);

    static struct vm vm;
    if (tls_dir && insecure)
        die("--tls-dir and --insecure exclude each other");
    if (!tls_dir && !insecure && access(DEFAULT_TLS_DIR, F_OK) == 0)
        tls_dir = DEFAULT_TLS_DIR;
    /* Loaded now, so bad credentials fail at start, not at the first migration. */
    SSL_CTX *tls_client = tls_dir ? tls_ctx_new(tls_dir, false, err, sizeof(err)) : NULL;
    SSL_CTX *tls_server = tls_client ? tls_ctx_new(tls_dir, true, err, sizeof(err)) : NULL;
    if (tls_dir && !tls_server)
        die("%s", err);
    if (incoming && !tls_dir && !insecure)
        die("--incoming needs migration credentials: --tls-dir DIR (`ferry tls init DIR`), "
            "or --insecure for a plaintext migration");
    if (incoming) {
        if (cfg.kernel || cfg.initrd || cfg.cmdline)
            die("--incoming takes the VM from the stream: no --kernel, --initrd or --append");
        if (cfg.ndisks)
            die("--incoming takes the disks from the stream (the source's paths): no --disk");
        for (int i = 0; i < cfg.nnics; i++)
            if (cfg.nics[i].mac_given)
                die("--incoming takes the NICs' MACs from the stream: --net tap=NAME only");
        if (!mem_given)
            cfg.mem_size = 0;
        if (!cpus_given)
            cfg.ncpus = 0;
        /* The destination is prepared before the source is told to move: the
         * kernel zeroing the RAM (0.5 GB/s on some hosts) is no part of the
         * migration then. A VM of another size is refused at HELLO. */
        static struct guest_mem ready;
        if (mem_given && cfg.mem_prealloc && !cfg.mem_path) {
            if (gmem_init(&ready, cfg.mem_size, NULL, err, sizeof(err)) < 0 ||
                gmem_prealloc(&ready, err, sizeof(err)) < 0)
                die("%s", err);
            cfg.mem_ready = &ready;
        }
        if (migration_incoming(&vm, &cfg, incoming, tls_server, vm_start, err, sizeof(err)) < 0)
            die("incoming migration failed: %s", err);
    } else if (vm_create(&vm, &cfg, err, sizeof(err)) < 0) {
        die("%s", err);
    }
    vm.mig.tls = tls_client;      /* for migrating this VM on, later */
    vm.mig.insecure = insecure;

    struct control_server ctl = { 0 };
    if (control_path && control_start(&ctl, control_path, vm_commands, &vm, err, sizeof(err)) < 0)
        die("%s", err);
    log_debug("starting %d vCPU(s), %llu MiB", vm.ncpus, (unsigned long long)(cfg.mem_size >> 20));
    if ((!incoming && vm_start(&vm) < 0) || console_start(&vm) < 0)
        die("cannot start the VM");
    if (incoming)
        vm_incoming_started(&vm);
    int status = vm_wait(&vm);
    migration_reap(&vm);
    if (vm.stop_reason == STOP_MIGRATED) {
        /* The VM lives on the destination now. Free its RAM, but keep
         * answering migrate-status until `quit` (or a minute) so a client
         * can read the final numbers. */
        gmem_destroy(&vm.mem);
        pthread_mutex_lock(&vm.lock);
        vm.state = VM_MIGRATED;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 60;
        while (ctl.running && !vm.quit_req &&
               pthread_cond_timedwait(&vm.cond, &vm.lock, &until) == 0)
            ;
        pthread_mutex_unlock(&vm.lock);
    }
    console_stop();
    control_stop(&ctl);
    switch (vm.stop_reason) {
    case STOP_POWEROFF: log_info("guest powered off"); break;
    case STOP_RESET: log_info("guest reset: exiting"); break;
    case STOP_MIGRATED: log_info("VM migrated away: exiting"); break;
    case STOP_GUEST_EXIT:
        if (status)
            log_info("guest exited with status %d", status);
        break;
    default: break;
    }
    vm_destroy(&vm);
    SSL_CTX_free(tls_client);
    SSL_CTX_free(tls_server);
    return status;
}
