#!/usr/bin/env bash
# The project's test command (README): formatting, lints, unit, doc and
# integration tests against the RabbitMQ on 127.0.0.1:5672, example builds.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== each feature of the core alone"
cargo check -q -p logcollect --no-default-features
cargo check -q -p logcollect --no-default-features --features log
cargo check -q -p logcollect --no-default-features --features tracing
echo "== cargo test (unit, doc, integration against the real broker)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --workspace --all-features 2>&1 | tee "$out"
echo "== examples build"
cargo build -q --workspace --examples --bins
echo "== Python package (crates/logcollect-py) on Python 3.12 and 3.11"
bash scripts/python_test.sh 2>&1 | tee -a "$out"

# One closing line for the whole run: cargo's own last line is a crate's doc
# tests, often "0 passed", which says nothing about the run. pytest's summary
# lines ("3 failed, 19 passed in 58.1s") count too.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^=* *[0-9]+ (passed|failed).* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^failed,?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
