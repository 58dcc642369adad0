"""The Django example: ``manage.py test_log`` (a record and requests through
Django's request handling), and the project served by gunicorn's forked
workers."""

import collections
import os
import signal
import subprocess
import urllib.request

from support import (BROKER_URI, EXAMPLES, Capture, assert_014_fields,
                     free_port, python_env, run_python, unique, venv_bin,
                     wait_port)

PROJECT = os.path.join(EXAMPLES, 'django_project')


def env(exchange, **extra):
    return python_env(LOGCOLLECT_BROKER_URI=BROKER_URI, LOGCOLLECT_EXCHANGE=exchange,
                      DJANGO_SETTINGS_MODULE='mysite.settings', **extra)


def test_manage_py_test_log_ships_the_command_and_request_records():
    exchange = unique('lc-py-django')
    with Capture(exchange) as capture:
        out = run_python(['manage.py', 'test_log', '--requests', '3'], env(exchange),
                         cwd=PROJECT)
        assert out.returncode == 0, out.stderr
        msgs = capture.wait(4)
    ours = [m for m in msgs if m.body['logger'] in ('test', 'demo.views')]
    assert len(ours) == 4, (msgs, out.stderr)
    command = [m for m in ours if m.body['logger'] == 'test']
    views = sorted((m for m in ours if m.body['logger'] == 'demo.views'),
                   key=lambda m: m.body['visitor'])
    assert len(command) == 1 and len(views) == 3
    assert_014_fields(command[0].body, 'lc_a', identity=('project',))
    for i, m in enumerate(views):
        assert_014_fields(m.body, 'lc_a', identity=('project',))
        assert m.body['message'] == 'hello visitor-%d' % i
        assert m.body['path'] == '/hello/visitor-%d' % i
        assert m.body['subsystem'] == 'django_test'
        assert m.routing_key == 'logstash.demo.views'
    # The console handler of the user's LOGGING dict is kept.
    assert 'hello visitor-0' in out.stderr


def test_gunicorn_forked_workers_ship_every_request_once():
    exchange = unique('lc-py-gunicorn')
    port = free_port()
    requests = 40
    with Capture(exchange) as capture:
        server = subprocess.Popen(
            [venv_bin('gunicorn'), '-c', 'gunicorn.conf.py', 'mysite.wsgi'],
            cwd=PROJECT, env=env(exchange, GUNICORN_BIND='127.0.0.1:%d' % port,
                                 GUNICORN_WORKERS=2),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_port(port)
            for i in range(requests):
                with urllib.request.urlopen('http://127.0.0.1:%d/hello/g%d' % (port, i),
                                            timeout=10) as r:
                    assert r.status == 200
        finally:
            # Graceful stop: the workers finish and exit normally (atexit
            # runs logging.shutdown, which flushes each worker's shipper).
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=60)
        msgs = capture.wait(requests + 1, timeout=30, settle=1.0)
    by_logger = collections.defaultdict(list)
    for m in msgs:
        by_logger[m.body['logger']].append(m)
    master = by_logger['demo.server']
    assert len(master) == 1, (master, stderr)
    views = by_logger['demo.views']
    assert sorted(m.body['visitor'] for m in views) == sorted('g%d' % i for i in range(requests)), \
        'request records missing or twice: %d of %d\n%s' % (len(views), requests, stderr)
    worker_pids = {m.body['process'] for m in views}
    assert master[0].body['process'] not in worker_pids, 'records must come from the workers'
    assert server.returncode == 0, stderr
    assert '[logcollect]' not in stderr, stderr
