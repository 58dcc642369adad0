#!/usr/bin/env bash
# The project's test command (README): formatting, lints, the API docs,
# unit, doc and integration tests against the RabbitMQ on 127.0.0.1:5672,
# example builds, the README's first command, and the crates' packages.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== nothing tracked refers to a path outside the repository"
bash scripts/check-self-contained.sh
echo "== the core's modules depend one way (ARCHITECTURE.md)"
bash scripts/check-layers.sh
echo "== no lapin type in the core's default public API (rustdoc JSON, stable with RUSTC_BOOTSTRAP=1)"
bash scripts/check-public-api.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo doc -D warnings (every crate, every feature)"
started=$SECONDS
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --no-deps --all-features
echo "   ($((SECONDS - started)) s)"
echo "== each feature of the core alone"
cargo check -q -p logcollect --no-default-features
cargo check -q -p logcollect --no-default-features --features log
cargo check -q -p logcollect --no-default-features --features tracing
cargo check -q -p logcollect --no-default-features --features lapin-api
echo "== cargo test (unit, doc, integration against the real broker)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --workspace --all-features 2>&1 | tee "$out"
# Criterion runs each benchmark once when the bench is run as a test: the
# peers' set-up (connect, fill the queue) and their sanity checks are then
# tested too, so a bench that no longer works fails here, not on the day
# someone measures.
echo "== benchmarks run once (criterion test mode)"
cargo test -q -p logcollect-bench --bench caller 2>&1 | tee -a "$out"
echo "== examples build"
cargo build -q --workspace --examples --bins
echo "== Python package (crates/logcollect-py) on Python ${LOGCOLLECT_PYTHONS:-3.12 3.11 3.13}"
bash scripts/python_test.sh 2>&1 | tee -a "$out"
echo "== the README's first command: scripts/try.sh"
bash scripts/try.sh
# Every member packages and its package builds on its own (what crates.io
# would get); publish = false members too, which costs little and keeps the
# plain `cargo package --workspace` working. --allow-dirty: check the work
# in progress as it is.
echo "== cargo package --workspace"
started=$SECONDS
cargo package -q --workspace --allow-dirty
echo "   ($((SECONDS - started)) s)"

# One closing line for the whole run: cargo's own last line is a crate's doc
# tests, often "0 passed", which says nothing about the run. pytest's summary
# lines ("3 failed, 19 passed in 58.1s") count too.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^=* *[0-9]+ (passed|failed).* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^failed,?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
