#!/usr/bin/env bash
# build-nats-server.sh — build the NATS server binary that Cordon's cluster
# tests and the distributed deployment use, from the nats-server/v2 module
# version pinned in go.mod (the same server Cordon embeds), into bin/nats-server.
#
#   scripts/build-nats-server.sh            # build bin/nats-server if missing or stale
#   scripts/build-nats-server.sh --force    # rebuild
#   OUT=/usr/local/bin/nats-server scripts/build-nats-server.sh
#
# internal/natscluster looks for the binary in $CORDON_NATS_SERVER, then
# bin/nats-server (when its version matches go.mod), then builds its own copy
# into the user cache; running this script once saves that step.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/bin/nats-server}"
go="${GO:-go}"

want="$("$go" list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)"
if [[ -z "$want" ]]; then
	echo "build-nats-server: github.com/nats-io/nats-server/v2 is not in go.mod" >&2
	exit 1
fi

if [[ "${1:-}" != "--force" && -x "$out" ]]; then
	have="$("$out" --version 2>/dev/null | awk '{print $2}')"
	if [[ "$have" == "$want" ]]; then
		echo "$out is nats-server $have (up to date)"
		exit 0
	fi
fi

mkdir -p "$(dirname "$out")"
tmp="$(mktemp "$(dirname "$out")/.nats-server.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
CGO_ENABLED=0 "$go" build -trimpath -o "$tmp" github.com/nats-io/nats-server/v2
have="$("$tmp" --version | awk '{print $2}')"
if [[ "$have" != "$want" ]]; then
	echo "build-nats-server: built $have, go.mod pins $want" >&2
	exit 1
fi
mv -f "$tmp" "$out"
trap - EXIT
echo "built $out (nats-server $have)"
