# bench/lib.sh - the physical references the migration benchmarks measure in
# their own run (sourced by migrate.sh and migrate-storage.sh).
# shellcheck shell=bash

# ref_iperf PORT P -> "BYTES/S CORES": raw loopback TCP with P parallel
# streams for 3 s, and the cores both ends used for it (iperf3's CPU use of
# sender + receiver). Empty when iperf3 failed.
ref_iperf() {
    iperf3 -s -1 -p "$1" >/dev/null 2>&1 &
    local spid=$!
    sleep 0.5
    iperf3 -c 127.0.0.1 -p "$1" -t 3 -P "$2" -J 2>/dev/null |
        python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; c=e["cpu_utilization_percent"]
print(int(e["sum_received"]["bits_per_second"]/8), (c["host_total"] + c["remote_total"]) / 100)' 2>/dev/null
    kill "$spid" 2>/dev/null   # (gone already after its one test, unless the client failed)
    wait "$spid" 2>/dev/null
}

# ref_aes -> bytes/s of AES-128-GCM on one core (openssl speed, the 16384-byte
# column, which it prints in 1000s of bytes/s). Empty when openssl failed.
ref_aes() {
    taskset -c 0 openssl speed -evp aes-128-gcm -seconds 2 2>/dev/null |
        awk '/^AES-128-GCM/ {v=$NF; sub(/k$/, "", v); printf "%.0f", v*1000}'
}
