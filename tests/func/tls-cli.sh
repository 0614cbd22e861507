#!/bin/bash
# `ferry tls init` and `ferry tls issue` (docs/tls.md): the credentials they
# write verify with openssl(1), carry the extensions Ferry relies on, keep
# keys private; an existing CA is never overwritten; usage errors exit 2.
# shellcheck source=tests/func/lib.sh
. "$(dirname "$0")/lib.sh"
: "${FERRY_CLI:?FERRY_CLI is not set (run through meson test)}"
ca=$TMP/cluster host=$TMP/host-b

# run_cli NAME ARGS...: ferry ARGS, output in $TMP/NAME.{out,err}; sets RC
run_cli() {
    local name=$1; shift
    RC=0
    "$FERRY_CLI" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || RC=$?
}
cli_ok() {
    run_cli "$@"
    [ "$RC" -eq 0 ] || { show "$TMP/$1.err" stderr; fail "ferry ${*:2} exited $RC"; }
}

cli_ok init tls init "$ca" --cn host-a
cli_ok issue tls issue "$ca" "$host" --cn host-b --days 30

for f in ca.pem ca-key.pem cert.pem key.pem; do
    [ -s "$ca/$f" ] || fail "tls init wrote no $f"
done
for k in "$ca/ca-key.pem" "$ca/key.pem" "$host/key.pem"; do
    [ "$(stat -c %a "$k")" = 600 ] || fail "$k has mode $(stat -c %a "$k"), want 600"
done
[ "$(stat -c %a "$ca")" = 700 ] || fail "$ca has mode $(stat -c %a "$ca"), want 700"
[ -e "$host/ca-key.pem" ] && fail "tls issue copied the CA key"
cmp -s "$ca/ca.pem" "$host/ca.pem" || fail "$host/ca.pem is not a copy of $ca/ca.pem"
for f in "$ca"/*.tmp.* "$host"/*.tmp.*; do
    [ -e "$f" ] && fail "temporary file left behind: $f"
done

openssl verify -CAfile "$ca/ca.pem" "$ca/cert.pem" "$host/cert.pem" >"$TMP/verify.out" 2>&1 ||
    { show "$TMP/verify.out" "openssl verify"; fail "openssl verify refused the certificates"; }

text() { openssl x509 -in "$1" -noout -text; }
text "$ca/ca.pem" >"$TMP/ca.txt"
grep -q "CA:TRUE" "$TMP/ca.txt" || { show "$TMP/ca.txt"; fail "ca.pem is not CA:TRUE"; }
grep -q "Certificate Sign" "$TMP/ca.txt" || { show "$TMP/ca.txt"; fail "ca.pem cannot sign certificates"; }
for h in "$ca/cert.pem:host-a" "$host/cert.pem:host-b"; do
    text "${h%%:*}" >"$TMP/host.txt"
    for want in "CA:FALSE" "DNS:${h##*:}" "Subject: CN = ${h##*:}" "prime256v1" \
                "TLS Web Server Authentication, TLS Web Client Authentication" \
                "X509v3 Subject Key Identifier" "X509v3 Authority Key Identifier"; do
        grep -qF "$want" "$TMP/host.txt" || { show "$TMP/host.txt"; fail "${h%%:*} lacks $want"; }
    done
done
# each key belongs to its certificate
for d in "$ca" "$host"; do
    [ "$(openssl pkey -in "$d/key.pem" -pubout)" = "$(openssl x509 -in "$d/cert.pem" -noout -pubkey)" ] ||
        fail "$d/key.pem does not match $d/cert.pem"
done
# --days 30: valid for 29 days more, not 31; the default is 825
openssl x509 -in "$host/cert.pem" -noout -checkend $((29 * 86400)) >/dev/null || fail "--days 30: expires within 29 days"
openssl x509 -in "$host/cert.pem" -noout -checkend $((31 * 86400)) >/dev/null && fail "--days 30: valid beyond 31 days"
openssl x509 -in "$ca/cert.pem" -noout -checkend $((824 * 86400)) >/dev/null || fail "default: expires within 824 days"

# an existing CA is refused, and left as it was
sum=$(cat "$ca"/*.pem | md5sum)
run_cli reinit tls init "$ca"
[ "$RC" -eq 1 ] || fail "tls init over a CA exited $RC, want 1"
[ "$(cat "$TMP/reinit.err")" = "ferry: TLS: $ca already holds a CA (ca-key.pem); use \`ferry tls issue\`" ] ||
    fail "tls init over a CA said: $(cat "$TMP/reinit.err")"
[ "$(cat "$ca"/*.pem | md5sum)" = "$sum" ] || fail "tls init over a CA changed it"
run_cli reinit2 tls init "$host"
[ "$RC" -eq 1 ] || fail "tls init over a host identity exited $RC, want 1"
# a failed init takes back what it wrote (here key.pem is in the way: a dangling link)
mkdir "$TMP/half" && ln -s /nonexistent "$TMP/half/key.pem"
run_cli half tls init "$TMP/half"
[ "$RC" -eq 1 ] || fail "tls init over a dangling key.pem exited $RC, want 1"
[ "$(ls "$TMP/half")" = key.pem ] || fail "a failed tls init left: $(ls "$TMP/half")"
# issuing needs the CA key
run_cli nokey tls issue "$host" "$TMP/c" --cn host-c
[ "$RC" -eq 1 ] || fail "tls issue without a CA key exited $RC, want 1"
grep -q "holds no CA key (ca-key.pem)" "$TMP/nokey.err" || fail "tls issue without a CA key said: $(cat "$TMP/nokey.err")"
run_cli badname tls issue "$ca" "$TMP/c" --cn "a,b"
[ "$RC" -eq 1 ] || fail "tls issue --cn 'a,b' exited $RC, want 1"

# usage errors: exit 2, one line ending in the --help hint
usage_cases=(
    "tls"
    "tls init"
    "tls init $TMP/u1 $TMP/u2"
    "tls init $TMP/u1 --days 0"
    "tls init $TMP/u1 --days x"
    "tls init $TMP/u1 --bogus"
    "tls init $TMP/u1 --cn"
    "tls issue $ca $TMP/u1"
    "tls issue $ca --cn x"
    "tls frobnicate"
)
for args in "${usage_cases[@]}"; do
    # shellcheck disable=SC2086  # word splitting wanted
    run_cli usage $args
    [ "$RC" -eq 2 ] || fail "ferry $args exited $RC, want 2 ($(cat "$TMP/usage.err"))"
    if [ "$(wc -l <"$TMP/usage.err")" -ne 1 ] || ! grep -q "^ferry: .* (see ferry --help)\$" "$TMP/usage.err"; then
        fail "ferry $args: unexpected error: $(cat "$TMP/usage.err")"
    fi
done
[ -e "$TMP/u1" ] && fail "a usage error created $TMP/u1"
# (not piped into grep -q: past 4 KiB of help, ferry's second write would meet a closed pipe)
"$FERRY_CLI" --help >"$TMP/help.out" || fail "ferry --help failed"
grep -q "tls issue CADIR OUTDIR --cn NAME" "$TMP/help.out" || fail "ferry --help does not list tls issue"
exit 0
