#!/usr/bin/env bash
# fuzz.sh — runs every fuzz target of the module for FUZZTIME each (make fuzz).
# fuzz.sh --list prints the targets it found and how it would run them.
#
# The targets are discovered, not listed by hand: every package with a
# `func Fuzz…` in a test file is asked for its targets (go test -list). A
# package whose tests link the chDB engine in the default build but not
# with -tags nochdb is fuzzed with -tags nochdb when its targets exist
# there: the fuzzed code then provably needs no engine (internal/replay's
# reader), and the workers start without it.
# A `func Fuzz…` that neither build lists (a build tag leaves it out) fails
# the run rather than go unfuzzed.
#
# A target fails when the fuzzer finds an input that fails it: the input is
# written to the package's testdata/fuzz/<Target>/ (commit it as a
# regression seed). Go 1.26's fuzz coordinator also reports a bare "context
# deadline exceeded" when -fuzztime ends while a worker is mid-call
# (golang/go#75804, fixed in Go 1.27): that is not a finding. Such a run
# counts as passed only when no new input was written and the target's
# corpus replays cleanly (go test -run=^Target$).
set -uo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-10s}"
# Minimizing each new interesting input may take up to a minute by default,
# during which nothing is explored (a 10 KB scenario file as a seed stalls a
# short run entirely): keep it short.
FUZZMINIMIZETIME="${FUZZMINIMIZETIME:-2s}"

list_only=false
case "${1:-}" in
--list) list_only=true ;;
"") ;;
*)
	echo "usage: scripts/fuzz.sh [--list]   (FUZZTIME, FUZZMINIMIZETIME and GO from the environment)" >&2
	exit 2
	;;
esac

# defined prints "<package dir> <Target>" for every fuzz function written in
# a test file of the module (gofmt puts each top-level func at a line start).
defined() {
	local files
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		files=$(git ls-files --cached --others --exclude-standard -- '*_test.go')
	else
		files=$(find . -name '*_test.go' -not -path '*/testdata/*' -not -path './vendor/*' | sed 's|^\./||')
	fi
	for f in $files; do
		case "/$f" in */testdata/* | /vendor/*) continue ;; esac
		sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f" | while read -r name; do
			echo "./$(dirname "$f")/ $name"
		done
	done | sort -u
}

# listed prints the fuzz targets go test lists for package $1 with the build
# tags $2 (empty: the default build); it fails when the tests do not build.
listed() {
	local out
	out=$("$GO" test ${2:+-tags "$2"} -list '^Fuzz' "$1" 2>&1) || {
		echo "fuzz: go test ${2:+-tags $2 }-list '^Fuzz' $1 failed:" >&2
		echo "$out" >&2
		return 1
	}
	grep -E '^Fuzz[A-Za-z0-9_]*$' <<<"$out" || true
}

# linkschdb reports whether package $1's tests link chDB (any package with
# chdb in its path: the embedded backend, its binding) with build tags $2.
# (The list is read whole: with pipefail, grep -q closing the pipe early
# would make go list die of SIGPIPE and the answer depend on timing.)
linkschdb() {
	local deps
	deps=$("$GO" list ${2:+-tags "$2"} -test -deps "$1") || return 2
	grep -q 'chdb' <<<"$deps"
}

defs=$(defined)
if [[ -z "$defs" ]]; then
	echo "fuzz: no fuzz function found in the module's test files" >&2
	exit 1
fi

# targets: "package target [build tags]"
targets=()
for pkg in $(cut -d' ' -f1 <<<"$defs" | sort -u); do
	nochdb=""
	linkschdb "$pkg" ""
	dflt_chdb=$?
	linkschdb "$pkg" nochdb
	tag_chdb=$?
	if [[ $dflt_chdb -gt 1 || $tag_chdb -gt 1 ]]; then
		echo "fuzz: go list -test -deps $pkg failed" >&2
		exit 1
	fi
	if [[ $dflt_chdb -eq 0 && $tag_chdb -ne 0 ]]; then
		nochdb=$(listed "$pkg" nochdb) || exit 1
		for t in $nochdb; do
			targets+=("$pkg $t nochdb")
		done
	fi
	dflt=$(listed "$pkg" "") || exit 1
	for t in $dflt; do
		grep -qx "$t" <<<"$nochdb" || targets+=("$pkg $t")
	done
done

# Every fuzz function written must be run by one build or the other.
missing=()
while read -r pkg name; do
	found=false
	for t in "${targets[@]}"; do
		read -r tp tn _ <<<"$t"
		[[ "$tp" == "$pkg" && "$tn" == "$name" ]] && found=true && break
	done
	$found || missing+=("$name ($pkg)")
done <<<"$defs"
if [[ ${#missing[@]} -gt 0 ]]; then
	echo "fuzz: ${#missing[@]} fuzz function(s) that neither the default nor the nochdb build lists (a build tag leaves them out?): ${missing[*]}" >&2
	exit 1
fi

if $list_only; then
	printf '%s\n' "${targets[@]}"
	exit 0
fi

failed=()
for t in "${targets[@]}"; do
	read -r pkg target tags <<<"$t"
	tagflag=()
	[[ -n "${tags:-}" ]] && tagflag=(-tags "$tags")
	corpus="$pkg/testdata/fuzz/$target"
	before=$(ls "$corpus" 2>/dev/null | sort)
	echo "== $target ($pkg${tags:+, -tags $tags}, $FUZZTIME)"
	out=$("$GO" test "${tagflag[@]}" -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg" 2>&1)
	status=$?
	echo "$out" | tail -n 4
	if [[ $status -eq 0 ]]; then
		continue
	fi
	after=$(ls "$corpus" 2>/dev/null | sort)
	if [[ "$before" == "$after" ]] && grep -q '^    context deadline exceeded$' <<<"$out" &&
		"$GO" test "${tagflag[@]}" -count=1 -run="^${target}\$" "$pkg" >/dev/null 2>&1; then
		echo "   (the fuzz coordinator's shutdown race, golang/go#75804: no input found, the corpus replays cleanly)"
		continue
	fi
	echo "$out"
	failed+=("$target ($pkg)")
done

if [[ ${#failed[@]} -gt 0 ]]; then
	echo "fuzz: ${#failed[@]} of ${#targets[@]} target(s) failed: ${failed[*]}" >&2
	echo "fuzz: failing inputs are in each package's testdata/fuzz/<Target>/" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets passed"
