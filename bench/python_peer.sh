#!/usr/bin/env bash
# The Python peer of the throughput benchmark (BENCHMARKS.md): logs N records
# with Python logcollect 0.14.0 at the local RabbitMQ and prints one line
#
#   python_peer: n=N calls_per_s=X median_us=Y p99_us=Z first_call_ms=F shutdown_ms=S ...
#
# The caller-side figures are measured as in tests/fixtures/python-0.14 (medians of
# per-call times, timer overhead included, one warm-up record excluded: it
# carries the connect). Python logcollect publishes without confirms, so
# calls/s is what the application sees, not a delivery guarantee.
#
# Usage: bench/python_peer.sh [--install-only] [--exchange NAME] [--uri URI] [N]
#   N            records (default 50000)
#   --exchange   exchange to log to, left in place (default: a unique name,
#                deleted at the end, so the peer never meets a `logstash`
#                exchange declared otherwise by someone else)
#   --uri        broker URI (default amqp://guest:guest@127.0.0.1:5672/)
#   --install-only  create the venv and install, then exit
#
# The venv lives in target/python-peer (PYTHON_PEER_VENV overrides); PYTHON
# picks the interpreter. Only amqp 1.4.x works with logcollect 0.14, and it
# imports the `imp` module, gone in Python 3.12: a 3.11 (or older 3.x) is
# needed. The URI must carry a password: the library's default
# `amqp://localhost/` has none and every connect then fails with amqp 1.4.9.
# Exit status 3: the install failed (the throughput binary then goes on
# without the Python numbers).
set -euo pipefail

n=50000
exchange="logcollect-bench-py-$$"
delete_exchange=1
uri="amqp://guest:guest@127.0.0.1:5672/"
install_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --install-only) install_only=1 ;;
        --exchange) exchange="$2"; delete_exchange=0; shift ;;
        --uri) uri="$2"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) n="$1" ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PYTHON_PEER_VENV:-$root/target/python-peer}"

pick_python() {
    local c
    for c in "${PYTHON:-}" python3.11 python3.10 python3 python3.9 python3.8; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(0 if (3, 6) <= sys.version_info[:2] < (3, 12) else 1)' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if [ ! -f "$venv/.installed" ]; then
    if ! py="$(pick_python)"; then
        echo "python_peer: error: no Python 3.6-3.11 found (amqp 1.4.9 needs the 'imp' module, removed in 3.12); set PYTHON" >&2
        exit 3
    fi
    echo "python_peer: creating $venv with $py ($("$py" --version 2>&1))" >&2
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" >&2; then
        echo "python_peer: error: '$py -m venv' failed" >&2
        exit 3
    fi
    if ! "$venv/bin/pip" install --disable-pip-version-check -q \
        logcollect==0.14.0 amqp==1.4.9 six >&2; then
        echo "python_peer: error: pip install logcollect==0.14.0 amqp==1.4.9 six failed" >&2
        exit 3
    fi
    touch "$venv/.installed"
fi
if [ "$install_only" = 1 ]; then
    exit 0
fi

exec "$venv/bin/python" - "$n" "$exchange" "$uri" "$delete_exchange" <<'PY'
import logging
import platform
import sys
import time

from logcollect.boot import default_config

n, exchange, uri, delete_exchange = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == '1'
default_config(uri, exchange=exchange, activity_identity={'project': 'demo', 'application': 'backend'})
log = logging.getLogger('bench')
pc = time.perf_counter

t = pc()
log.info('warm-up')  # opens the connection and declares the exchange
first_ms = (pc() - t) * 1e3

times = [0.0] * n
start = pc()
for i in range(n):
    a = pc()
    log.info('msg %d', i)
    times[i] = pc() - a
loop_s = pc() - start

t = pc()
logging.shutdown()
shutdown_ms = (pc() - t) * 1e3

times.sort()
median = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
p99 = times[min(n - 1, int(n * 0.99))]
print('python_peer: n=%d calls_per_s=%.1f median_us=%.2f p99_us=%.2f max_us=%.1f '
      'first_call_ms=%.2f shutdown_ms=%.2f loop_s=%.3f python=%s logcollect=0.14.0 amqp=1.4.9'
      % (n, n / loop_s, median * 1e6, p99 * 1e6, times[-1] * 1e6,
         first_ms, shutdown_ms, loop_s, platform.python_version()))

if delete_exchange:
    # Our own unique exchange: leave nothing behind on the shared broker.
    # Detach the handler first: closed handlers reconnect to publish the amqp
    # library's own 'Closed channel' debug record (reference quirk 6), which
    # would declare the exchange again.
    for h in list(logging.root.handlers):
        logging.root.removeHandler(h)
    from urllib.parse import urlsplit, unquote
    import amqp
    u = urlsplit(uri)
    vhost = unquote(u.path[1:]) if len(u.path) > 1 else '/'
    conn = amqp.Connection(host='%s:%d' % (u.hostname, u.port or 5672),
                           userid=unquote(u.username or 'guest'),
                           password=unquote(u.password or 'guest'),
                           virtual_host=vhost)
    conn.channel().exchange_delete(exchange)
    conn.close()
PY
