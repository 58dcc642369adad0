#!/usr/bin/env bash
# Instructions per log call on the caller thread, counted by callgrind, for
# the two calls of benches/caller.rs: the 3-field `tracing::info!` through
# LogcollectLayer and the one-argument `log` record through
# LogcollectLogger. Repeatable on a shared, noisy machine where wall time is
# not. The shipper's broker is dead (DEAD_BROKER_URI) and its queue holds
# every call, so each call encodes and is accepted (the shipper thread, in
# its reconnect loop, pulls nothing). Collection is on only inside the
# binary's `measured_*` functions, and only the main thread's count is read
# (--separate-threads): set-up, the shipper thread and valgrind's start-up
# are left out.
#
#   bench/caller_callgrind.sh [CALLS] [TOP]   (defaults 20000, 25)
#
# Prints instructions per call for each shape, then each shape's TOP
# functions by inclusive count (per call).
set -euo pipefail

calls="${1:-20000}"
top="${2:-25}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bin=$(cargo bench -p logcollect-bench --bench caller_callgrind --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "bench binary not found" >&2; exit 1; }

# CALLGRIND_KEEP=<dir> keeps the callgrind files there (for callgrind_annotate).
if [ -n "${CALLGRIND_KEEP:-}" ]; then
    out="$CALLGRIND_KEEP"
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
summary=""
for shape in tracing log; do
    prefix="$out/cg-$shape"
    valgrind -q --tool=callgrind --callgrind-out-file="$prefix" \
        --separate-threads=yes --collect-atstart=no \
        --toggle-collect='*::measured_*' \
        "$bin" "$shape" "$calls" >/dev/null 2>"$out/stderr-$shape" || {
        cat "$out/stderr-$shape" >&2
        exit 1
    }
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$prefix"-01 | head -1)
    per=$(awk -v ir="$ir" -v n="$calls" 'BEGIN { printf "%.1f", ir / n }')
    summary+="$shape: $per instructions per call ($ir over $calls calls)"$'\n'
    echo "== $shape: top $top functions by inclusive instructions per call"
    # Functions above `measured_*` (main, the runtime's start-up) are left
    # out; a function inlined into several files is shown once.
    callgrind_annotate --inclusive=yes --auto=no "$prefix"-01 2>/dev/null |
        awk -v n="$calls" -v top="$top" '
            /^-+$/ { dashes++; next }
            dashes >= 3 && NF >= 2 && $1 ~ /^[0-9,]+$/ {
                ir = $1; gsub(",", "", ir)
                line = $0
                sub(/^ *[0-9,]+ +(\([^)]*\) +)?/, "", line) # count, percentage
                sub(/ \[[^]]*\]$/, "", line)                # object file
                sub(/^[^:]*:/, "", line)                      # source file
                if (line ~ /^(PROGRAM TOTALS|main|\(below main\)|0x[0-9a-f]+)$/) next
                if (line ~ /^(std::rt::|std::sys::backtrace::|__libc_start|caller_callgrind::main)/) next
                if (seen[line]++) next
                if (shown++ < top) printf "%10.1f  %s\n", ir / n, substr(line, 1, 140)
            }'
    echo
done
printf '%s' "$summary"
