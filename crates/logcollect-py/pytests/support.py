"""Helpers of the Python tests: unique names, a capture queue on the real
broker (127.0.0.1:5672, guest/guest), the 0.14 fixtures and their field
types, running the examples, and the machine-wide fault lock."""

import contextlib
import fcntl
import itertools
import json
import os
import socket
import subprocess
import sys
import time

import amqp

HOST = '127.0.0.1:5672'
BROKER_URI = 'amqp://guest:guest@127.0.0.1:5672/'
CELERY_BROKER_URL = 'amqp://guest:guest@127.0.0.1:5672//'

PYTESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(PYTESTS, '..', '..', '..'))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'python-0.14')
EXAMPLES = os.path.join(REPO, 'examples', 'python')

#: Where processes that break the shared broker take turns (the Rust fault
#: tests take the same lock: tests/support/faults.rs); the other Python
#: tests hold it shared (conftest.py).
FAULT_LOCK_FILE = '/tmp/logcollect-broker-faults.lock'

_counter = itertools.count()


def unique(prefix):
    """A name no other test, run or checkout uses."""
    return '%s-%d-%d-%d' % (prefix, os.getpid(), time.time_ns(), next(_counter))


def connect():
    conn = amqp.Connection(HOST, userid='guest', password='guest',
                           virtual_host='/', connect_timeout=10)
    conn.connect()
    return conn


class Capture:
    """A queue bound to a topic exchange, holding what the handler sends.

    ``durable=True`` makes the exchange and the queue survive a broker
    restart (with the handler's ``durable=True``, messages are persistent).
    The queue is read with ``basic_get`` over a fresh connection, so a test
    can read it after the broker cut every connection.
    """

    def __init__(self, exchange, durable=False, binding='#'):
        self.exchange = exchange
        self.queue = unique('lc-py-capture')
        self.durable = durable
        self.messages = []
        conn = connect()
        try:
            ch = conn.channel()
            ch.exchange_declare(exchange, 'topic', durable=durable, auto_delete=False)
            ch.queue_declare(self.queue, durable=durable, auto_delete=False)
            ch.queue_bind(self.queue, exchange, binding)
        finally:
            conn.close()

    def _drain_once(self):
        got = 0
        conn = connect()
        try:
            ch = conn.channel()
            while True:
                msg = ch.basic_get(self.queue, no_ack=True)
                if msg is None:
                    return got
                self.messages.append(Message(msg))
                got += 1
        finally:
            conn.close()

    def wait(self, n, timeout=30.0, settle=0.5, counts=None):
        """Reads until ``n`` messages arrived (only those ``counts(message)``
        accepts, when given) or ``timeout`` passed, then for ``settle``
        seconds more, so that an extra (duplicate) message shows."""
        def counted():
            if counts is None:
                return len(self.messages)
            return sum(1 for m in self.messages if counts(m))
        deadline = time.monotonic() + timeout
        while counted() < n and time.monotonic() < deadline:
            if self._drain_once() == 0:
                time.sleep(0.05)
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            if self._drain_once() == 0:
                time.sleep(0.05)
        return self.messages

    def delete(self):
        with contextlib.suppress(Exception):
            conn = connect()
            try:
                ch = conn.channel()
                ch.queue_delete(self.queue)
                ch.exchange_delete(self.exchange)
            finally:
                conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.delete()


class Message:
    def __init__(self, msg):
        self.routing_key = msg.delivery_info['routing_key']
        self.properties = dict(msg.properties)
        self.raw = msg.body if isinstance(msg.body, bytes) else msg.body.encode()
        self.body = json.loads(self.raw)

    def __repr__(self):
        return 'Message(%s, %s)' % (self.routing_key, self.body)


def fixture(name):
    """A recorded message of Python logcollect 0.14 (tests/fixtures/python-0.14)."""
    with open(os.path.join(FIXTURES, name + '.json'), encoding='utf-8') as f:
        return json.load(f)


def json_type(value):
    """The JSON type of a parsed value, telling integers from floats."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


#: Fields Python logcollect 0.14 writes on every record (the fixtures' frame).
FIELDS_014 = ('@timestamp', '@version', 'message', 'host', 'tags', 'type',
              'seq', 'levelname', 'logger', 'stack_info', 'process')


#: The activity identity of the recordings.
IDENTITY_014 = ('project', 'application')


def assert_014_fields(body, fixture_name, renamed=(), identity=IDENTITY_014):
    """Every field of the 0.14 recording is in ``body`` with the same JSON
    type, except the keys in ``renamed``: 0.14 let an ``extra=`` key
    overwrite one of its fields; we keep ours and send the user's value as
    ``extra_<key>`` (README: differences from 0.14). ``identity``: the
    recording's activity-identity keys this record also has."""
    recorded = dict(fixture(fixture_name)['body'])
    for key in set(IDENTITY_014) - set(identity):
        recorded.pop(key)
    missing = [k for k in recorded if k not in body]
    assert not missing, '%s: fields of 0.14 missing %s in %s' % (fixture_name, missing, body)
    for key, value in recorded.items():
        if key in renamed:
            assert 'extra_' + key in body, (key, body)
            continue
        assert json_type(body[key]) == json_type(value), (
            '%s: field %r is %s, 0.14 sent %s (%r vs %r)' % (
                fixture_name, key, json_type(body[key]), json_type(value),
                body[key], value))
    ts = body['@timestamp']
    assert len(ts) == 27 and ts.endswith('Z') and ts[10] == 'T', ts


def python_env(**extra):
    """The environment for a child Python: this interpreter's, with the
    repository's examples importable."""
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    env['PYTHONUNBUFFERED'] = '1'
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_python(args, env, cwd=None, timeout=120):
    """Runs ``python args...`` with this interpreter; returns the result."""
    return subprocess.run([sys.executable] + list(args), env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def venv_bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def wait_port(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        time.sleep(0.1)
    raise AssertionError('nothing listens on 127.0.0.1:%d' % port)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


#: How long a fault test waits for its turn: the longest fault test of any
#: checkout takes about two minutes, so ten minutes means the lock leaked.
FAULT_LOCK_WAIT = 600.0
#: How long a counting test waits for a fault test to finish before it runs
#: anyway (it may then see another process's fault).
SHARED_LOCK_WAIT = 300.0
_shared_lock_gave_up = False


def lock_holders():
    """Who holds the fault lock, from /proc/locks: ``pid command`` lines
    (the holder may be a process that inherited the lock's file)."""
    try:
        inode = os.stat(FAULT_LOCK_FILE).st_ino
    except OSError:
        return []
    holders = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir('/proc/%s/fd' % pid):
                if os.stat('/proc/%s/fd/%s' % (pid, fd)).st_ino == inode:
                    with open('/proc/%s/cmdline' % pid, 'rb') as f:
                        cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
                    holders.append('%s %s' % (pid, cmd[:100]))
                    break
    return holders


def _flock(f, mode, wait):
    """Takes the lock, polling until ``wait`` seconds passed; False then."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


@contextlib.contextmanager
def fault_lock():
    """Holds the machine-wide lock of the tests that break the broker, and
    puts the broker back (app started) before and after, whatever happens."""
    with open(FAULT_LOCK_FILE, 'a') as f:
        if not _flock(f, fcntl.LOCK_EX, FAULT_LOCK_WAIT):
            raise AssertionError(
                'the broker fault lock %s was not free for %d s; processes that have it '
                'open: %s' % (FAULT_LOCK_FILE, FAULT_LOCK_WAIT, lock_holders()))
        try:
            restore_broker()
            yield
        finally:
            restore_broker()
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def shared_fault_lock():
    """Held by the tests that count records (conftest.py): no fault test of
    any checkout runs meanwhile. After one wait of SHARED_LOCK_WAIT in vain,
    says so and runs without it (the lock has leaked; the tests may then
    see another process's fault), rather than hang."""
    global _shared_lock_gave_up
    with open(FAULT_LOCK_FILE, 'a') as f:
        if _shared_lock_gave_up or not _flock(f, fcntl.LOCK_SH, SHARED_LOCK_WAIT):
            if not _shared_lock_gave_up:
                sys.stderr.write('warning: the broker fault lock %s was not free for %d s '
                                 '(held through %s); running without it\n'
                                 % (FAULT_LOCK_FILE, SHARED_LOCK_WAIT, lock_holders()))
            _shared_lock_gave_up = True
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rabbitmqctl(*args):
    out = subprocess.run(['rabbitmqctl', '-q'] + list(args),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, 'rabbitmqctl %s: %s' % (args, out.stderr)
    return out.stdout


def broker_up():
    try:
        connect().close()
        return True
    except Exception:
        return False


def restore_broker(timeout=90.0):
    subprocess.run(['rabbitmqctl', '-q', 'start_app'], capture_output=True, timeout=120)
    deadline = time.monotonic() + timeout
    while not broker_up():
        assert time.monotonic() < deadline, 'the broker did not come back'
        time.sleep(0.2)
