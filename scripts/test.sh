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
cargo test --workspace --all-features
echo "== examples build"
cargo build -q --workspace --examples --bins
