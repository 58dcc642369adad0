#!/usr/bin/env bash
# Cost of one Python logging call, side by side in one run: logcollect on
# the Rust engine (crates/logcollect-py, release wheel), Python logcollect
# 0.14.0 (bench/python_peer.sh) and logging.NullHandler, all on Python 3.11
# (0.14 runs on nothing newer) against the local RabbitMQ.
#
#   bench/python_handler.sh [N]      N records per handler (default 50000)
#
# Each handler logs N × logger.info('msg %d', i) after one warm-up record
# (it carries 0.14's connect); per-call times include the timer overhead,
# as in the measurements under tests/fixtures/python-0.14. For the Rust engine the line also
# says how many records the broker confirmed (routed to a capped queue) by
# the end of logging.shutdown(); 0.14 publishes without confirms to an
# exchange with no queue. Venvs live in
# target/python-bench (PYTHON picks the 3.11 interpreter). Run it on a
# quiet machine: the figures are only worth that.
set -euo pipefail

n="${1:-50000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/python-bench"
py="${PYTHON:-python3.11}"
mkdir -p "$work"

if [ ! -x "$work/venv/bin/python" ]; then
    "$py" -m venv "$work/venv"
fi
"$work/venv/bin/pip" install --disable-pip-version-check -q 'maturin>=1.9.4,<2' 'amqp>=5,<6'
rm -rf "$work/wheels"
"$work/venv/bin/maturin" build --quiet --release -m "$root/crates/logcollect-py/Cargo.toml" -o "$work/wheels"
"$work/venv/bin/pip" install --disable-pip-version-check -q --force-reinstall --no-deps "$work"/wheels/logcollect-*.whl

measure() {
    "$work/venv/bin/python" - "$1" "$n" "logcollect-bench-py-$$" <<'PY'
import logging
import platform
import sys
import time

which, n, exchange = sys.argv[1], int(sys.argv[2]), sys.argv[3]
uri = 'amqp://guest:guest@127.0.0.1:5672/'
if which == 'rust':
    import amqp

    def channel():
        conn = amqp.Connection('127.0.0.1:5672', userid='guest', password='guest')
        conn.connect()
        return conn, conn.channel()
    # A queue bound to the exchange, so that records are routed as in
    # production (unroutable ones are confirmed too, but reported); capped
    # with drop-head so that a long run never fills the broker's memory.
    conn, ch = channel()
    ch.exchange_declare(exchange, 'topic', durable=False, auto_delete=False)
    queue = exchange + '-q'
    ch.queue_declare(queue, auto_delete=False, arguments={'x-max-length': 100000})
    ch.queue_bind(queue, exchange, '#')
    conn.close()
    from logcollect.boot import default_config
    handler = default_config(uri, exchange=exchange, shutdown_timeout=60,
                             activity_identity={'project': 'demo', 'application': 'backend'})
else:
    handler = logging.NullHandler()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
log = logging.getLogger('bench')
pc = time.perf_counter

t = pc()
log.info('warm-up')
first_ms = (pc() - t) * 1e3
times = [0.0] * n
start = pc()
for i in range(n):
    a = pc()
    log.info('msg %d', i)
    times[i] = pc() - a
loop_s = pc() - start
stats = handler.stats() if which == 'rust' else {}
t = pc()
if which == 'rust':
    handler.flush()
    stats = handler.stats()
logging.shutdown()
shutdown_ms = (pc() - t) * 1e3

times.sort()
median = (times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2)
p99 = times[min(n - 1, int(n * 0.99))]
name = 'logcollect (Rust engine)' if which == 'rust' else 'logging.NullHandler'
extra = ''
if which == 'rust':
    extra = ' confirmed=%d lost=%d' % (stats['confirmed'], stats['lost'])
print('%s: n=%d calls_per_s=%.1f median_us=%.2f p99_us=%.2f max_us=%.1f first_call_ms=%.2f '
      'shutdown_ms=%.2f python=%s%s' % (name, n, n / loop_s, median * 1e6, p99 * 1e6,
                                         times[-1] * 1e6, first_ms, shutdown_ms,
                                         platform.python_version(), extra))
if which == 'rust':
    # Our own unique names: leave nothing behind on the shared broker. The
    # handler goes first: the AMQP client's own debug records would start it
    # again.
    logging.getLogger().removeHandler(handler)
    conn, ch = channel()
    ch.queue_delete(queue)
    ch.exchange_delete(exchange)
    conn.close()
PY
}

measure null
measure rust
PYTHON="$py" bash "$root/bench/python_peer.sh" "$n" | sed 's/^python_peer:/Python logcollect 0.14.0:/'
