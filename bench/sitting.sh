#!/usr/bin/env bash
# One benchmark sitting: every figure of BENCHMARKS.md's first section, peers
# side by side, each benchmark three times, from one build. Run it on a quiet
# machine (no build or test beside it) with RabbitMQ on 127.0.0.1:5672:
#
#   bench/sitting.sh [OUT_DIR]        (default target/sitting-<date>)
#
# Builds first (release, and criterion's bench profile), then runs, in this
# order, three times each: the caller bench (criterion), caller_threads,
# latency, throughput (one per message, batched 100 per message, bare lapin)
# and the spans bench. Every run's whole output is kept in OUT_DIR, one file
# per benchmark and run; the summary lines are printed at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:-target/sitting-$(date -u +%Y%m%dT%H%M)}"
mkdir -p "$out"
runs="${SITTING_RUNS:-3}"

exe() { # the criterion executable of bench $1
    cargo bench -p logcollect-bench --bench "$1" --no-run 2>&1 |
        sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1
}
cargo build --release -p logcollect-bench --bins
caller=$(exe caller)
spans=$(exe spans)
bin="${CARGO_TARGET_DIR:-target}/release"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

{
    echo "commit $(git rev-parse --short HEAD) $(git status --porcelain | grep -q . && echo '(dirty)')"
    echo "started $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/sitting.txt"

for r in $(seq "$runs"); do
    echo "== run $r: caller"
    "$caller" --bench --warm-up-time 1 --measurement-time 3 --sample-size 10 >"$out/caller-$r.txt" 2>"$out/caller-$r.err"
    echo "== run $r: caller_threads"
    "$bin/caller_threads" --rounds 1 >"$out/caller_threads-$r.txt" 2>&1
    echo "== run $r: latency"
    "$bin/latency" --rounds 1 >"$out/latency-$r.txt" 2>&1
    echo "== run $r: throughput"
    "$bin/throughput" 100000 --rounds 1 --batch 100 >"$out/throughput-$r.txt" 2>&1
    echo "== run $r: spans"
    "$spans" --bench --warm-up-time 1 --measurement-time 2 --sample-size 10 >"$out/spans-$r.txt" 2>&1
done
echo "ended $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/sitting.txt"

for f in "$out"/caller-[0-9].txt; do
    echo "--- $f"
    sed -n '/caller cost per call in this run/,$p' "$f"
done
for f in "$out"/caller_threads-*.txt; do echo "--- $f"; sed -n '/medians over/,$p' "$f"; done
grep -h '^latency:' "$out"/latency-*.txt || true
grep -h 'throughput:\|batched\|bare lapin  ' "$out"/throughput-*.txt || true
