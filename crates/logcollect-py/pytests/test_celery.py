"""The Celery example: a worker with the prefork pool (its processes are
forked from the main one) runs tasks sent by ``send_task.py``; every
record of every task reaches the broker once."""

import collections
import os
import signal
import subprocess
import time

import pytest

from support import (BROKER_URI, CELERY_BROKER_URL, EXAMPLES, Capture,
                     assert_014_fields, python_env, run_python, unique,
                     venv_bin)

APP = os.path.join(EXAMPLES, 'celery_worker')


class Worker:
    """``celery -A tasks worker`` with the prefork pool, on its own queue."""

    def __init__(self, exchange, queue, collect_root_logs, max_tasks_per_child=None):
        self.env = python_env(LOGCOLLECT_BROKER_URI=BROKER_URI,
                              LOGCOLLECT_EXCHANGE=exchange,
                              LOGCOLLECT_EXAMPLE_QUEUE=queue,
                              CELERY_BROKER_URL=CELERY_BROKER_URL,
                              LOGCOLLECT_COLLECT_ROOT_LOGS='1' if collect_root_logs else '0')
        args = [venv_bin('celery'), '-A', 'tasks', 'worker', '--pool=prefork',
                '--concurrency=2', '--loglevel=INFO', '--without-gossip',
                '--without-mingle', '--without-heartbeat', '-n', unique('w') + '@%h']
        if max_tasks_per_child:
            args.append('--max-tasks-per-child=%d' % max_tasks_per_child)
        self.log = open(os.path.join(os.environ.get('TMPDIR', '/tmp'), unique('celery') + '.log'), 'w+')
        self.proc = subprocess.Popen(args, cwd=APP, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ' ready.' in self.output():
                return
            assert self.proc.poll() is None, self.output()
            time.sleep(0.2)
        raise AssertionError('worker not ready:\n' + self.output())

    def send(self, n):
        out = run_python(['send_task.py', str(n)], self.env, cwd=APP)
        assert out.returncode == 0, out.stderr

    def stop(self):
        """Warm shutdown: the pool processes finish and exit (os._exit, after
        the worker_process_shutdown signal), then the main process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()


def is_task_record(m):
    return m.body['logger'] in ('sample_task', 'celery_sample_logger')


def run_worker(n, collect_root_logs, expected, max_tasks_per_child=None):
    """Runs a worker until ``expected`` task records arrived (or a minute
    passed), stops it, and returns its pid, every message and its output."""
    exchange = unique('lc-py-celery')
    queue = unique('lc-py-tasks')
    # celery_config declares the exchange durable, as 0.14 did.
    with Capture(exchange, durable=True) as capture:
        worker = Worker(exchange, queue, collect_root_logs, max_tasks_per_child)
        try:
            worker.wait_ready()
            worker.send(n)
            capture.wait(expected, timeout=60, settle=0.5, counts=is_task_record)
        finally:
            output = worker.stop()
        msgs = capture.wait(expected, timeout=10, settle=1.0, counts=is_task_record)
    _delete_queue(queue)
    return worker.proc.pid, msgs, output


def _delete_queue(queue):
    from support import connect
    conn = connect()
    try:
        conn.channel().queue_delete(queue)
    finally:
        conn.close()


def numbers(msgs, logger):
    return sorted(m.body['number'] for m in msgs if m.body['logger'] == logger)


def test_task_records_from_forked_pool_processes():
    n = 30
    main_pid, msgs, output = run_worker(n, collect_root_logs=False, expected=n)
    tasks = [m for m in msgs if m.body['logger'] == 'sample_task']
    assert sorted(m.body['number'] for m in tasks) == list(range(n)), \
        'task records missing or twice:\n' + output
    # Only the task logger is shipped without collect_root_logs.
    assert len(msgs) == n, {m.body['logger'] for m in msgs}
    pids = {m.body['process'] for m in tasks}
    assert main_pid not in pids, 'tasks run in the pool processes'
    for m in tasks[:3]:
        assert_014_fields(m.body, 'lc_a', identity=('project',))
        assert m.body['subsystem'] == 'celery_test'
        assert m.body['task_name'] == 'tasks.sample_task'
        assert m.body['task_id']
        assert m.routing_key == 'logstash.sample_task'
    assert '[logcollect]' not in output, output


@pytest.mark.parametrize('max_tasks_per_child', [3])
def test_collect_root_logs_and_recycled_pool_processes(max_tasks_per_child):
    """With collect_root_logs the plain logger is shipped too, and the main
    process ships its own records; with --max-tasks-per-child the pool
    processes end after a few tasks (os._exit) and new ones are forked from
    a main process whose shipper is running."""
    n = 20
    main_pid, msgs, output = run_worker(n, collect_root_logs=True, expected=2 * n,
                                        max_tasks_per_child=max_tasks_per_child)
    assert numbers(msgs, 'sample_task') == list(range(n)), output
    assert numbers(msgs, 'celery_sample_logger') == list(range(n)), output
    task_pids = {m.body['process'] for m in msgs if m.body['logger'] == 'sample_task'}
    # 20 tasks, 3 per process: at least 7 processes were forked.
    assert len(task_pids) >= n // max_tasks_per_child, task_pids
    assert main_pid not in task_pids
    # The main process's own records (Celery's start-up lines) arrive too.
    assert any(m.body['process'] == main_pid for m in msgs), output
    assert '[logcollect]' not in output, output
