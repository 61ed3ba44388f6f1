#!/usr/bin/env bash
# Makes local development TLS material for Fenfa in certs/dev/ (git-ignored):
#
#   ca.crt / ca.key          a development CA, name-constrained to localhost, 127.0.0.0/8, ::1
#                            and fenfa.local (so even a leaked key cannot impersonate other sites)
#   server.crt / server.key  a server certificate signed by it for localhost, 127.0.0.1, ::1,
#                            fenfa.local and *.fenfa.local
#
# NEVER use any of this in production: the CA key is unencrypted on your disk.
# Needs the openssl command line tool (1.1.1 or newer). See certs/README.md.
#
#   certs/make-dev-certs.sh           create what is missing; an existing CA is kept (and so is
#                                     the trust you gave it), the server certificate is renewed
#   certs/make-dev-certs.sh --force   replace the CA too (trust the new ca.crt again)
set -euo pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

if ! command -v openssl >/dev/null 2>&1; then
    echo "make-dev-certs: the openssl command is required (Debian/Ubuntu: sudo apt-get install openssl)" >&2
    exit 1
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/dev"
ca_days=3650
# 825 days is the longest validity macOS and iOS accept for a server certificate.
server_days=825

umask 077
mkdir -p "$out"
# Work next to the results, so that installing them is a rename on the same file system.
work="$(mktemp -d "$out/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# A self-contained openssl config, so the result does not depend on the system's openssl.cnf.
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no

[dn]
O = Fenfa development

[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
nameConstraints = critical, permitted;DNS:localhost, permitted;DNS:fenfa.local, permitted;IP:127.0.0.0/255.0.0.0, permitted;IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:0:0:0:0:0:0:0:1, DNS:fenfa.local, DNS:*.fenfa.local
EOF

if [[ $force == 1 ]]; then
    rm -f "$out/ca.crt" "$out/ca.key"
fi

if [[ -s "$out/ca.crt" && -s "$out/ca.key" ]]; then
    echo "keeping the existing development CA $out/ca.crt (use --force to replace it)"
else
    openssl req -x509 -new -config "$work/openssl.cnf" -extensions ca \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/O=Fenfa development/CN=Fenfa development CA (NOT FOR PRODUCTION)" \
        -sha256 -days "$ca_days" \
        -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
    echo "created the development CA $out/ca.crt"
fi

openssl req -new -config "$work/openssl.cnf" \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/O=Fenfa development/CN=localhost" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" \
    -CA "$out/ca.crt" -CAkey "$out/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -sha256 -days "$server_days" -extfile "$work/openssl.cnf" -extensions server \
    -out "$work/server.crt" 2>/dev/null

# Check before installing, then replace both files by rename (the gateway reloads on change).
openssl verify -CAfile "$out/ca.crt" "$work/server.crt" >/dev/null
mv -f "$work/server.key" "$out/server.key"
mv -f "$work/server.crt" "$out/server.crt"
chmod 644 "$out/ca.crt" "$out/server.crt"

echo "created the server certificate $out/server.crt (key $out/server.key), valid $server_days days for:"
echo "  localhost, 127.0.0.1, ::1, fenfa.local, *.fenfa.local"
echo "Trust $out/ca.crt on this machine only (see certs/README.md). Never use these in production."
