#!/usr/bin/env bash
# The README's first command: one record's whole way, on this machine.
#
#   1. a RabbitMQ on 127.0.0.1:5672: started, or installed with apt-get, as
#      .ci/run does (scripts/broker.sh); skipped when LOGCOLLECT_BROKER_URI
#      names a broker of your own;
#   2. `logcollect setup`: the `logstash` exchange and Logstash's durable
#      queue, as for a real deployment (the Logstash pipeline it prints is
#      saved to target/try/logstash.conf);
#   3. `logcollect tail` on a temporary queue of its own (so the demo never
#      takes records from Logstash's queue), waiting for one record;
#   4. the native_logging example logs one INFO record from logger `test`;
#   5. tail prints the record as it arrived, and everything exits 0.
#
# Every LOGCOLLECT_* variable set in the environment applies to all three
# programs. Exits 1, saying what to do, when no broker can be had or the
# record does not arrive.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=broker.sh
source scripts/broker.sh

# How long tail waits for the record, in seconds: the example needs a
# second or two (connect, publish, confirm); a busy machine several times that.
readonly WAIT_SECS=60

step() { printf '\n== %s\n' "$*"; }

no_broker() {
    cat >&2 <<'EOF'

try: no RabbitMQ could be had on 127.0.0.1:5672 (why: above). Get one, then run this again:
  - Debian or Ubuntu:  sudo apt-get install rabbitmq-server   (then: sudo rabbitmq-server -detached,
                       unless systemd started it)
  - Docker:            docker run -d --name rabbitmq -p 5672:5672 rabbitmq:3
  - a broker elsewhere: LOGCOLLECT_BROKER_URI='amqp://user:password@host:5672//' bash scripts/try.sh
EOF
    exit 1
}

step "1/4 a broker"
if [ -n "${LOGCOLLECT_BROKER_URI:-}" ]; then
    echo "using LOGCOLLECT_BROKER_URI (not managing a local broker)"
elif broker_listening; then
    echo "a broker is listening on 127.0.0.1:5672"
else
    ensure_rabbitmq || no_broker
fi

step "2/4 building the CLI and the example"
cargo build -p logcollect-cli -p native_logging

step "3/4 logcollect setup: the exchange and Logstash's durable queue"
mkdir -p target/try
if ! cargo run -q -p logcollect-cli -- setup >target/try/logstash.conf; then
    echo "try: logcollect setup failed (why: above); \`cargo run -p logcollect-cli -- doctor\` checks the broker step by step" >&2
    exit 1
fi
echo "(the matching Logstash pipeline is in target/try/logstash.conf)"

step "4/4 logcollect tail, then the native_logging example"
# This run's own mark, so tail shows this record and not one another
# program logs from logger `test` at the same moment.
run_id="try-$$-$RANDOM"
tail_notes=$(mktemp)
tail_pid=
cleanup() {
    if [ -n "$tail_pid" ] && kill -0 "$tail_pid" 2>/dev/null; then
        kill "$tail_pid" 2>/dev/null || true
    fi
    rm -f "$tail_notes"
}
trap cleanup EXIT
# tail's notes go to the terminal and to a file, where the wait below
# looks for "listening on exchange".
cargo run -q -p logcollect-cli -- tail --logger test --where "run=$run_id" \
    --count 1 --timeout "$WAIT_SECS" 2> >(tee "$tail_notes" >&2) &
tail_pid=$!
for _ in $(seq 1 "$WAIT_SECS"); do
    if grep -q 'listening on exchange' "$tail_notes" || ! kill -0 "$tail_pid" 2>/dev/null; then
        break
    fi
    sleep 1
done
if ! grep -q 'listening on exchange' "$tail_notes"; then
    echo "try: logcollect tail did not start listening (why: above)" >&2
    exit 1
fi

LOGCOLLECT_ACTIVITY_IDENTITY="project=logcollect,subsystem=native_test,run=$run_id" \
    cargo run -q -p native_logging

if ! wait "$tail_pid"; then
    tail_pid=
    echo "try: the record did not come back through the broker within $WAIT_SECS s. The lines above" >&2
    echo "  may say why; LOGCOLLECT_* variables of this shell apply too (LOGCOLLECT_LEVEL above info" >&2
    echo "  filters the record out): \`env | grep LOGCOLLECT_\`" >&2
    exit 1
fi
tail_pid=
cat <<EOF

The line above is the record as it reached RabbitMQ: log::info! → logcollect → exchange
\`logstash\` → tail's temporary queue. A copy waits in the durable queue \`logstash\` for Logstash
(\`rabbitmqctl purge_queue logstash\` empties it if no Logstash will read it).
Next: README "Use it" to ship your own program's records; \`bash .ci/run\` runs the tests.
EOF
