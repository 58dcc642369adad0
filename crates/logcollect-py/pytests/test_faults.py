"""The broker faults Python logcollect 0.14 lost records in (61 % of a stream
on a cut connection): with the Rust engine none is missing. These tests
disturb the broker shared by every test on the machine: each holds the
machine-wide fault lock for its whole run and always restores the broker."""

import collections
import logging
import threading
import time

from logcollect.formatter import AMQPLogstashFormatter
from logcollect.handler import AMQPHandler
from support import (BROKER_URI, Capture, fault_lock, rabbitmqctl, unique)

RECORDS = 3000
#: One record per millisecond: the pace of the 0.14 measurement.
PACE = 0.001


def stream(log, n, pace, started):
    started.set()
    next_at = time.monotonic()
    for i in range(n):
        log.info('record %d', i, extra={'i': i})
        next_at += pace
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def run_with_fault(fault):
    """Streams RECORDS numbered records from a thread while ``fault()`` runs,
    waits for every one to be confirmed, and returns the capture's
    messages and the handler's counters."""
    exchange = unique('lc-py-fault')
    # Durable exchange and queue, persistent messages: they survive the
    # broker's restart.
    capture = Capture(exchange, durable=True)
    handler = AMQPHandler(BROKER_URI, exchange=exchange, durable=True,
                          shutdown_timeout=90)
    handler.setFormatter(AMQPLogstashFormatter(activity_identity={'project': 'demo'}))
    log = logging.getLogger(unique('faults'))
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        log.info('warm-up', extra={'i': -1})
        handler.flush()
        started = threading.Event()
        t = threading.Thread(target=stream, args=(log, RECORDS, PACE, started))
        t.start()
        started.wait()
        fault()
        t.join()
        handler.flush()
        stats = handler.stats()
        msgs = capture.wait(RECORDS + 1, timeout=60, settle=1.0)
    finally:
        log.removeHandler(handler)
        handler.close()
        capture.delete()
    return msgs, stats


def check(msgs, stats):
    seen = collections.defaultdict(set)
    for m in msgs:
        seen[m.body['i']].add(m.body['record_id'])
    missing = sorted(set(range(-1, RECORDS)) - set(seen))
    assert not missing, '%d missing, first %s; stats %s' % (len(missing), missing[:10], stats)
    # At-least-once: a record republished after a cut may arrive twice, always
    # with the same record_id (Logstash's document id drops the copy).
    assert all(len(ids) == 1 for ids in seen.values())
    assert stats['lost'] == 0 and stats['pending'] == 0, stats


def test_connections_cut_three_times_mid_stream():
    with fault_lock():
        def cut():
            for _ in range(3):
                time.sleep(0.6)
                rabbitmqctl('close_all_connections', 'logcollect python fault test')
        msgs, stats = run_with_fault(cut)
    check(msgs, stats)
    assert stats['connection_losses'] >= 1, stats


def test_broker_app_stopped_then_started_mid_stream():
    with fault_lock():
        def stop_and_start():
            time.sleep(0.5)
            rabbitmqctl('stop_app')
            try:
                time.sleep(3)
            finally:
                rabbitmqctl('start_app')
        msgs, stats = run_with_fault(stop_and_start)
    check(msgs, stats)
    assert stats['connection_losses'] >= 1, stats
