#!/usr/bin/env bash
# setup.sh — prepares the secrets of the Cordon compose deployment in OUT
# (default /secrets, which compose.yaml binds to deploy/compose/secrets):
#
#   1. TLS: a private CA and every certificate (gen-certs.sh);
#   2. NATS: one NKey identity per Cordon role, one per enforcer (edge-1, the
#      id compose.yaml gives `cordon enforce --id`: it may publish usage only
#      as edge-1) and the server's auth.conf (`cordon creds generate`), each
#      seed copied into its service's directory;
#   3. the trust anchor (`cordon anchor generate`): its private key goes to
#      the issuer only (it endorses every signing key the issuer publishes),
#      its public half to the auditor, the revoker and the enforcer
#      (--trust-anchor: they accept only endorsed keys);
#   4. ClickHouse: a random password for the auditor's ClickHouse user, and
#      one for the read-only user analysts' queries run as (the server gets
#      only its SHA-256, in clickhouse/substitutions.xml);
#   5. ownership: each directory is handed to the user of the container that
#      mounts it (65532: Cordon and nats-server images; 101: ClickHouse).
#
# Every container mounts exactly one directory, its own. OUT/private (CA key,
# master copy of the seeds) is never mounted. Idempotent: existing keys,
# seeds and the password are kept. $CORDON names the cordon binary (default:
# cordon on PATH).
set -euo pipefail

out="${1:-/secrets}"
roles=(issuer auditor revoker admin)
# The enforcer's id: compose.yaml runs `cordon enforce --id=edge-1`.
enforcer_id=edge-1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gen="$here/gen-certs.sh"
[[ -x "$gen" ]] || gen="gen-certs.sh"

"$gen" "$out"

umask 077
"${CORDON:-cordon}" creds generate --out "$out/private/nats" --enforcer "$enforcer_id"
for role in "${roles[@]}"; do
	install -m 0600 "$out/private/nats/$role.nk" "$out/$role/nats.nk"
done
install -m 0600 "$out/private/nats/enforcer-$enforcer_id.nk" "$out/enforcer/nats.nk"
install -m 0644 "$out/private/nats/auth.conf" "$out/nats-server/auth.conf"

if [[ ! -s "$out/private/anchor/anchor.key" ]]; then
	"${CORDON:-cordon}" anchor generate --out "$out/private/anchor" >/dev/null
fi
install -m 0600 "$out/private/anchor/anchor.key" "$out/issuer/anchor.key"
for d in auditor revoker enforcer; do
	install -m 0644 "$out/private/anchor/trust-anchor.pub" "$out/$d/trust-anchor.pub"
done

if [[ ! -s "$out/private/clickhouse-password" ]]; then
	openssl rand -hex 24 >"$out/private/clickhouse-password"
fi
install -m 0600 "$out/private/clickhouse-password" "$out/clickhouse/password"
install -m 0600 "$out/private/clickhouse-password" "$out/auditor/clickhouse-password"
if [[ ! -s "$out/private/clickhouse-analyst-password" ]]; then
	openssl rand -hex 24 >"$out/private/clickhouse-analyst-password"
fi
install -m 0600 "$out/private/clickhouse-analyst-password" "$out/auditor/clickhouse-analyst-password"
analyst_sha256="$(tr -d '\n' <"$out/private/clickhouse-analyst-password" | openssl dgst -sha256 -r | cut -d' ' -f1)"
printf '<clickhouse>\n    <cordon_analyst_password_sha256>%s</cordon_analyst_password_sha256>\n</clickhouse>\n' "$analyst_sha256" \
	>"$out/clickhouse/substitutions.xml"
chmod 0600 "$out/clickhouse/substitutions.xml"

if [[ "$(id -u)" -eq 0 ]]; then
	for d in "${roles[@]}" enforcer nats-server; do
		chown -R 65532:65532 "$out/$d"
	done
	chown -R 101:101 "$out/clickhouse"
else
	echo "setup: not root, leaving file owners as they are (containers running as other users cannot read them)" >&2
fi
echo "setup: secrets ready in $out"
