#!/usr/bin/env bash
# install-chdb.sh — install the chDB library (libchdb.so) that Cordon's embedded
# ClickHouse store (pkg/store/chdbstore) loads on its first use.
#
# The library ships inside the npm package @chdb/lib-linux-x64-gnu. This script
# fetches the pinned version with `npm pack` (npm verifies the registry's
# integrity), verifies the tarball again against the integrity pinned below,
# and extracts libchdb.so into a cache outside the repository:
#
#   ${CORDON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cordon}/chdb/<version>/libchdb.so
#
# pkg/store/chdbstore looks for the library at the same path, so nothing else
# needs to be configured. The script is idempotent: when the library is already
# installed and verified it exits 0 at once.
#
# Environment:
#   CORDON_CACHE    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/cordon)
#   CHDB_TARBALL    use this already-downloaded tarball instead of `npm pack`
#                   (it is verified against the pinned integrity all the same)
#
# Options:
#   --print-path    print the library path and exit (0 if installed, 1 if not)
set -euo pipefail

CHDB_VERSION="26.5.3"
CHDB_PACKAGE="@chdb/lib-linux-x64-gnu"
CHDB_INTEGRITY="sha512-fPrLmRt5Moor9yGz4mazbrNje4t7X9KB2mTGkXFWRxRBs2iKy8yh6jx11xsa0Qr3iDFMU/yHqd+bVdYJXu3QaQ=="
CHDB_SHA1="3e52ecb7d894d9ebb1a6a50ac03f64208cc65501"

cache_root="${CORDON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cordon}"
dest_dir="${cache_root}/chdb/${CHDB_VERSION}"
lib="${dest_dir}/libchdb.so"
stamp="${dest_dir}/.integrity"

say() { printf 'install-chdb: %s\n' "$*"; }
die() { printf 'install-chdb: error: %s\n' "$*" >&2; exit 1; }

# hex_to_bytes turns a hex digest on stdin into raw bytes (bash only: no xxd).
hex_to_bytes() {
	local hex i
	read -r hex
	for ((i = 0; i < ${#hex}; i += 2)); do
		# shellcheck disable=SC2059
		printf "\\$(printf '%03o' "0x${hex:i:2}")"
	done
}

installed() {
	[[ -s "$lib" && -f "$stamp" && "$(cat "$stamp")" == "$CHDB_INTEGRITY" ]]
}

if [[ "${1:-}" == "--print-path" ]]; then
	printf '%s\n' "$lib"
	installed
	exit $?
fi

if installed; then
	say "chDB ${CHDB_VERSION} already installed at ${lib}"
	exit 0
fi

case "$(uname -s)/$(uname -m)" in
Linux/x86_64) ;;
*) die "no pinned chDB build for $(uname -s)/$(uname -m); only Linux/x86_64 (${CHDB_PACKAGE}) is supported" ;;
esac

for tool in tar sha1sum sha512sum base64; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done

mkdir -p "$dest_dir"
work="$(mktemp -d "${dest_dir}/.install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [[ -n "${CHDB_TARBALL:-}" ]]; then
	[[ -f "$CHDB_TARBALL" ]] || die "CHDB_TARBALL=${CHDB_TARBALL} does not exist"
	say "using tarball ${CHDB_TARBALL} (CHDB_TARBALL)"
	tarball="$CHDB_TARBALL"
else
	command -v npm >/dev/null 2>&1 || die "npm is required to fetch ${CHDB_PACKAGE}@${CHDB_VERSION} (apt-get install npm)"
	say "fetching ${CHDB_PACKAGE}@${CHDB_VERSION} with npm pack (about 170 MB)"
	# Run from the scratch directory so npm never looks at a package.json of ours.
	name="$(cd "$work" && npm pack --silent "${CHDB_PACKAGE}@${CHDB_VERSION}")" ||
		die "npm pack ${CHDB_PACKAGE}@${CHDB_VERSION} failed"
	tarball="${work}/${name##*$'\n'}"
	[[ -f "$tarball" ]] || die "npm pack did not produce ${tarball}"
fi

say "verifying ${tarball##*/} against the pinned integrity"
got_sha1="$(sha1sum "$tarball" | cut -d' ' -f1)"
[[ "$got_sha1" == "$CHDB_SHA1" ]] || die "sha1 mismatch: got ${got_sha1}, want ${CHDB_SHA1}"
got_integrity="sha512-$(sha512sum "$tarball" | cut -d' ' -f1 | hex_to_bytes | base64 -w0)"
[[ "$got_integrity" == "$CHDB_INTEGRITY" ]] || die "sha512 mismatch: got ${got_integrity}, want ${CHDB_INTEGRITY}"

say "extracting libchdb.so"
tar -xzf "$tarball" -C "$work" package/libchdb.so || die "extract package/libchdb.so from ${tarball}"
[[ -s "${work}/package/libchdb.so" ]] || die "package/libchdb.so is missing or empty in ${tarball}"
chmod 0755 "${work}/package/libchdb.so"
mv -f "${work}/package/libchdb.so" "$lib"
printf '%s' "$CHDB_INTEGRITY" >"$stamp"

say "installed chDB ${CHDB_VERSION} at ${lib}"
