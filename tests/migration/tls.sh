#!/bin/bash
# Migration security: every refusal is one clear line on both sides, nothing
# crashes, and the VM keeps running on the source:
#   a plaintext source against a TLS destination, and a TLS source against a
#   plaintext one; a source whose certificate another CA signed; a stream
#   that is not Ferry's (nor TLS); one bit flipped inside a TLS record in
#   flight; credentials that expired or are missing refuse to start.
. "$(dirname "$0")/lib.sh"
: "${MIGTOOL:?MIGTOOL is not set (run through meson test)}"

# sec "FLAGS" CMD...: run CMD (boot, incoming) with other security flags.
sec() {
    local saved=("${SEC_ARGS[@]}")
    read -ra SEC_ARGS <<< "$1"
    shift
    "$@"
    SEC_ARGS=("${saved[@]}")
}

boot a 512M "$DIRTIER"
progress a 15 1

# refused NAME PORT ERROR_RE: the last migration failed with ERROR_RE, the
# destination NAME exited with one error line, the source runs on.
refused() {
    wait_phase a 30 failed || fail "$1: the migration ended '$(ms phase)' ($(ms error)), expected failed"
    [[ $(ms error) =~ $3 ]] || fail "$1: source error '$(ms error)' does not match /$3/"
    [ "$(vm_state a)" = running ] || fail "$1: the source is '$(vm_state a)'"
    progress a 15 1
}

# 1. a plaintext source against a TLS destination
incoming t1 7970
ctl a '{"cmd":"quit"}' >/dev/null; wait_exit a 10
sec --insecure boot a 512M "$DIRTIER"
progress a 15 1
migrate a 7970
refused t1 7970 'connection|closed|reset'
wait_exit t1 10
expect_dest_error t1 'TLS: the peer does not speak TLS'

# 2. a TLS source (this one, restarted with credentials) against a plaintext destination
ctl a '{"cmd":"quit"}' >/dev/null; wait_exit a 10
boot a 512M "$DIRTIER"
progress a 15 1
sec --insecure incoming p2 7971
migrate a 7971
refused p2 7971 'TLS: .*(closed|plaintext)'
wait_exit p2 10
expect_dest_error p2 'bad magic|not a Ferry stream'

# 3. a destination whose credentials come from another CA
"$FERRY" tls init "$TMP/other" --cn stranger >/dev/null || fail "ferry tls init (other CA)"
sec "--tls-dir $TMP/other" incoming o3 7972
migrate a 7972
refused o3 7972 'TLS: .*(CA|certificate|unknown ca)'
wait_exit o3 10
expect_dest_error o3 'TLS: .*(CA|certificate|unknown ca)'

# 4. not a Ferry stream, nor TLS: the destination says so and exits
incoming g4 7973
printf 'GET / HTTP/1.0\r\n\r\n' | socat -t 2 - TCP:127.0.0.1:7973 >/dev/null 2>&1
wait_exit g4 10
expect_dest_error g4 'TLS: the peer does not speak TLS'

# 5. one bit flipped inside a TLS record in flight (raw relay, 1 stream)
incoming f5 7974
"$MIGTOOL" relay 127.0.0.1:7975 127.0.0.1:7974 200000 > "$TMP/relay.log" 2>&1 &
wait_for 10 grep -qs '^relay: listening' "$TMP/relay.log" || fail "the relay does not listen"
migrate a 7975 '"streams":1,"compress":"off"'
refused f5 7975 'TLS|connection|reset|closed'
wait $! 2>/dev/null
grep -q '^relay: flipped byte 200000' "$TMP/relay.log" || { show "$TMP/relay.log" relay; fail "the relay flipped nothing"; }
wait_exit f5 10
expect_dest_error f5 'TLS: .*(decrypt|bad record mac|integrity|MAC)'

# 6. credentials that cannot work refuse to start, with one line
mkdir -p "$TMP/exp" && cp "$TMP/tls/ca.pem" "$TMP/exp/"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/exp/key.pem" \
    -subj /CN=expired -out "$TMP/exp/req.csr" 2>/dev/null || fail "openssl req"
printf '[ca]\ndefault_ca=c\n[c]\ndatabase=%s\nnew_certs_dir=%s\nserial=%s\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n' \
    "$TMP/exp/index" "$TMP/exp" "$TMP/exp/serial" > "$TMP/exp/ca.cnf"
: > "$TMP/exp/index"; echo 01 > "$TMP/exp/serial"
openssl ca -batch -config "$TMP/exp/ca.cnf" -cert "$TMP/tls/ca.pem" -keyfile "$TMP/tls/ca-key.pem" \
    -in "$TMP/exp/req.csr" -out "$TMP/exp/cert.pem" -startdate 20200101000000Z -enddate 20200102000000Z \
    -notext >/dev/null 2>&1 || fail "openssl ca (expired certificate)"
out=$("$FERRY_VMM" --incoming 127.0.0.1:7976 --tls-dir "$TMP/exp" 2>&1 </dev/null); rc=$?
[ $rc = 1 ] && [ "$(echo "$out" | wc -l)" = 1 ] && [[ $out == *expired* ]] ||
    fail "an expired certificate: status $rc, '$out'"
out=$("$FERRY_VMM" --incoming 127.0.0.1:7976 2>&1 </dev/null); rc=$?
[ $rc = 1 ] && [[ $out == *"--incoming needs migration credentials"* ]] || fail "no credentials: status $rc, '$out'"
r=$(ctl a '{"cmd":"status"}')
[ "$(jget "$r" result.state)" = running ] || fail "the source is not running at the end"

finish "plaintext/TLS mismatches, another CA, a foreign stream, a flipped record bit and bad credentials all refused; source ran on"
