#!/usr/bin/env bash
# gen-certs.sh — a private CA and the TLS certificates of the Cordon compose
# deployment, made with openssl. Each consumer gets its own directory under
# OUT, holding only what it needs plus the CA certificate (public):
#
#   OUT/private/ca-key.pem      CA key — never mounted into a container
#   OUT/ca.pem                  CA certificate
#   OUT/nats-server/            server.pem, server-key.pem   (NATS clients and routes; SANs nats-1..3)
#   OUT/clickhouse/             server.pem, server-key.pem   (ClickHouse HTTPS)
#   OUT/<role>/                 client.pem, client-key.pem   (mutual TLS to NATS), for
#                               issuer auditor revoker enforcer admin
#   OUT/issuer/                 https.pem, https-key.pem     (the issuer's HTTPS API)
#   OUT/enforcer/               https.pem, https-key.pem     (the enforcing proxy's HTTPS listener)
#
# Idempotent: an existing CA is reused and existing certificates are kept, so
# re-running after adding a SAN needs --force to re-issue leaf certificates.
#
#   deploy/compose/gen-certs.sh [--force] [OUT]     (OUT defaults to deploy/compose/secrets)
#
# Environment: DAYS (leaf validity, default 365), CA_DAYS (default 3650),
# EXTRA_SANS (comma-separated, added to the NATS, issuer and enforcer certificates,
# e.g. "DNS:cordon.example.com,IP:192.0.2.10").
set -euo pipefail

force=0
if [[ "${1:-}" == "--force" ]]; then
	force=1
	shift
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/secrets}"
days="${DAYS:-365}"
ca_days="${CA_DAYS:-3650}"
extra="${EXTRA_SANS:-}"
roles=(issuer auditor revoker enforcer admin)

umask 077
mkdir -p "$out/private"
chmod 700 "$out/private"

ca_key="$out/private/ca-key.pem"
ca_crt="$out/ca.pem"
if [[ ! -s "$ca_key" || ! -s "$ca_crt" ]]; then
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca_key" 2>/dev/null
	openssl req -x509 -new -key "$ca_key" -sha256 -days "$ca_days" \
		-subj "/O=Cordon/CN=Cordon compose CA" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" \
		-out "$ca_crt"
	echo "created CA $ca_crt"
fi
chmod 644 "$ca_crt"

# issue DIR NAME CN EKU SANS — a P-256 key and a certificate signed by the CA.
issue() {
	local dir="$1" name="$2" cn="$3" eku="$4" sans="$5"
	mkdir -p "$dir"
	chmod 700 "$dir"
	cp "$ca_crt" "$dir/ca.pem"
	chmod 644 "$dir/ca.pem"
	if [[ $force -eq 0 && -s "$dir/$name.pem" && -s "$dir/$name-key.pem" ]]; then
		return
	fi
	local ext
	ext="$(mktemp)"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$eku"
		echo "subjectKeyIdentifier=hash"
		echo "authorityKeyIdentifier=keyid"
		if [[ -n "$sans" ]]; then echo "subjectAltName=$sans"; fi
	} >"$ext"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name-key.pem" 2>/dev/null
	openssl req -new -key "$dir/$name-key.pem" -subj "/O=Cordon/CN=$cn" -out "$dir/$name.csr"
	openssl x509 -req -in "$dir/$name.csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial \
		-CAserial "$out/private/ca.srl" -days "$days" -sha256 -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
	rm -f "$dir/$name.csr" "$ext"
	chmod 600 "$dir/$name-key.pem"
	chmod 644 "$dir/$name.pem"
	echo "issued $dir/$name.pem ($cn)"
}

with_extra() {
	if [[ -n "$extra" ]]; then echo "$1,$extra"; else echo "$1"; fi
}

# NATS: one certificate for the three nodes, used for clients and for the
# TLS routes between the nodes (so it is also a client certificate).
issue "$out/nats-server" server "nats" "serverAuth,clientAuth" \
	"$(with_extra "DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1")"
issue "$out/clickhouse" server "clickhouse" "serverAuth" "DNS:clickhouse,DNS:localhost,IP:127.0.0.1"
for role in "${roles[@]}"; do
	issue "$out/$role" client "cordon-$role" "clientAuth" ""
done
issue "$out/issuer" https "issuer" "serverAuth" "$(with_extra "DNS:issuer,DNS:localhost,IP:127.0.0.1")"
issue "$out/enforcer" https "enforcer" "serverAuth" "$(with_extra "DNS:enforcer,DNS:localhost,IP:127.0.0.1")"
