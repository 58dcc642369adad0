#!/usr/bin/env bash
# Instructions per iteration of each case of benches/spans.rs for each peer,
# counted by callgrind: repeatable on a shared, noisy machine where wall
# time is not. Collection is on only inside the bench's `measured` function,
# and only the main thread's count is read (--separate-threads), so set-up,
# the shipper thread and valgrind's start-up are left out.
#
#   bench/spans_callgrind.sh [ITERATIONS] [RUNS]   (defaults 100000, 3)
#
# Prints one line per peer, case and run, then the median of the runs for
# each pair and its ratio to fmt_envfilter.
set -euo pipefail

iters="${1:-100000}"
runs="${2:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bin=$(cargo bench -p logcollect-bench --bench spans --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "bench binary not found" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
results="$out/results"
for case in disabled_trace_span enabled_info_span event_in_span; do
    for peer in logcollect_boot logcollect_layer fmt_envfilter; do
        for run in $(seq "$runs"); do
            prefix="$out/cg-$peer-$case-$run"
            SPANS_CALLGRIND="$peer:$case:$iters" valgrind -q --tool=callgrind \
                --callgrind-out-file="$prefix" --separate-threads=yes \
                --collect-atstart=no --toggle-collect='*::measured' \
                "$bin" >/dev/null 2>&1
            ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$prefix"-01 | head -1)
            per=$(awk -v ir="$ir" -v n="$iters" 'BEGIN { printf "%.1f", ir / n }')
            echo "$case $peer run $run: $ir instructions, $per per iteration"
            echo "$case $peer $per" >>"$results"
        done
    done
done

echo
echo "median instructions per iteration (ratio to fmt_envfilter)"
sort -k1,1 -k2,2 -k3,3n "$results" | awk '
    { key = $1 " " $2; v[key, ++n[key]] = $3; keys[key] = 1 }
    END {
        for (k in keys) { m[k] = v[k, int((n[k] + 1) / 2)] }
        for (k in keys) {
            split(k, p, " ")
            base = m[p[1] " fmt_envfilter"]
            printf "%-20s %-17s %10.1f  %.2fx\n", p[1], p[2], m[k], m[k] / base
        }
    }' | sort
