#!/usr/bin/env bash
# The project's test command (README): formatting, lints, unit, doc and
# integration tests against the RabbitMQ on 127.0.0.1:5672, example builds.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== nothing tracked refers to a path outside the repository"
bash scripts/check-self-contained.sh
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

# One closing line for the whole run: cargo's own last line is a crate's doc
# tests, often "0 passed", which says nothing about the run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
