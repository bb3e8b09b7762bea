#!/usr/bin/env bash
# nochdb-pkgs.sh — prints the packages whose tests make test-nochdb runs
# with -tags nochdb: the packages of the server build (go build -tags nochdb
# ./cmd/cordon, what bin/cordon-server and the images ship) whose code or
# tests change with the tag, directly or through a dependency. Every other
# package compiles to the same code either way, so make test has tested it
# already; the harnesses (internal/faults, internal/bench, cmd/cordon-bench)
# need the engine by design and are not part of the server build.
#
# The set is discovered, not kept by hand: a package that gains a
# `//go:build nochdb` file joins it by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"

files='{{.ImportPath}} {{.GoFiles}} {{.TestGoFiles}} {{.XTestGoFiles}}'
# varying: the packages whose own files differ under -tags nochdb.
varying=$(comm -13 <("$GO" list -f "$files" ./... | sort) <("$GO" list -tags nochdb -f "$files" ./... | sort) | cut -d' ' -f1)
if [[ -z "$varying" ]]; then
	echo "nochdb-pkgs: no package has a nochdb variant; nothing to test apart" >&2
	exit 0
fi

mod=$("$GO" list -m)
for pkg in $("$GO" list -tags nochdb -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./cmd/cordon | grep "^$mod\(/\|$\)"); do
	deps=$("$GO" list -tags nochdb -test -deps "$pkg")
	if grep -qxF "$varying" <<<"$deps"; then
		echo "$pkg"
	fi
done
