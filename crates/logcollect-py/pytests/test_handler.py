"""The handler against the real broker: the 0.14 field set and types, the
documented fixes, and the promises (never block, errors at set-up, flush at
exit within the deadline)."""

import datetime
import logging
import math
import os
import sys
import textwrap
import time

import pytest

from logcollect.boot import default_config, django_dict_config, ensure_amqp_handler
from logcollect.formatter import AMQPLogstashFormatter
from logcollect.handler import AMQPHandler
from support import (BROKER_URI, EXAMPLES, Capture, assert_014_fields,
                     python_env, run_python, unique)

IDENTITY = {'project': 'demo', 'application': 'backend'}


@pytest.fixture
def shipping():
    """A handler on a private logger tree, shipping to a fresh exchange with a
    capture queue bound; yields ``(logger_factory, handler, capture)``."""
    exchange = unique('lc-py-handler')
    capture = Capture(exchange)
    handler = AMQPHandler(BROKER_URI, exchange=exchange, durable=False)
    handler.setFormatter(AMQPLogstashFormatter(activity_identity=IDENTITY))
    prefix = unique('t').replace('-', '_')
    loggers = []

    def logger(name):
        # Each test's loggers hang below a unique parent so that the root
        # logger (pytest's capture handlers) never sees them.
        parent = logging.getLogger(prefix)
        parent.propagate = False
        if handler not in parent.handlers:
            parent.addHandler(handler)
            parent.setLevel(logging.DEBUG)
        log = logging.getLogger(prefix + '.' + name)
        loggers.append(log)
        return log

    yield logger, handler, capture
    logging.getLogger(prefix).removeHandler(handler)
    handler.close()
    capture.delete()


def one(capture):
    msgs = capture.wait(1)
    assert len(msgs) == 1, msgs
    return msgs[0]


def test_plain_record_has_the_014_fields_and_types(shipping):
    logger, handler, capture = shipping
    log = logger('test')
    line = sys._getframe().f_lineno + 1
    log.info('hello')
    m = one(capture)
    assert_014_fields(m.body, 'lc_a')
    assert m.body['message'] == 'hello'
    assert m.body['levelname'] == 'INFO'
    assert m.body['logger'] == log.name
    assert m.routing_key == 'logstash.' + log.name
    assert m.body['process'] == os.getpid()
    assert m.body['threadName'] == 'MainThread'
    assert m.body['funcName'] == 'test_plain_record_has_the_014_fields_and_types'
    assert m.body['lineno'] == line
    assert m.body['project'] == 'demo' and m.body['application'] == 'backend'
    assert m.properties.get('content_type') == 'application/json'
    assert m.properties.get('message_id') == m.body['record_id']


class Custom:
    def __repr__(self):
        return '<Custom id=42>'


def test_extra_values_convert_as_014_and_collisions_are_renamed(shipping):
    logger, handler, capture = shipping
    log = logger('app.extra')
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901)
    log.info('extra types', extra={
        's': 'text', 'i': 7, 'f': 1.5, 'b_true': True, 'b_false': False,
        'none': None, 'lst': [1, 'two', 3.0, None], 'dct': {'k': 'v', 'n': 1},
        'tup': (1, 2), 'byt': b'\x00ab', 'when': when, 'obj': Custom(),
        'host': 'extra-host', 'type': 'extra-type', 'logger': 'extra-logger',
        'seq': 99})
    b = one(capture).body
    # 0.14 let these four overwrite its own fields; they are renamed here.
    assert_014_fields(b, 'lc_c', renamed=('host', 'type', 'logger', 'seq'))
    assert b['host'] != 'extra-host' and b['extra_host'] == 'extra-host'
    assert b['type'] == 'Logstash' and b['extra_type'] == 'extra-type'
    assert b['logger'] == log.name and b['extra_logger'] == 'extra-logger'
    assert b['seq'] == 1 and b['extra_seq'] == 99
    assert (b['s'], b['i'], b['f'], b['b_true'], b['b_false'], b['none']) == \
        ('text', 7, 1.5, True, False, None)
    assert b['lst'] == [1, 'two', 3.0, None] and b['dct'] == {'k': 'v', 'n': 1}
    # As 0.14: a tuple, bytes, a datetime and an object are their repr().
    assert b['tup'] == '(1, 2)'
    assert b['byt'] == repr(b'\x00ab')
    assert b['when'] == repr(when)
    assert b['obj'] == '<Custom id=42>'


def test_exception_gives_exc_info_lineno_thread_name(shipping):
    logger, handler, capture = shipping
    log = logger('app.jobs')

    def do_job():
        try:
            try:
                {}['missing']
            except KeyError as e:
                raise ZeroDivisionError('division by zero') from e
        except ZeroDivisionError:
            log.exception('job %s failed', 'j1')
    do_job()
    b = one(capture).body
    assert_014_fields(b, 'lc_d')
    assert b['levelname'] == 'ERROR' and b['message'] == 'job j1 failed'
    assert b['exc_info'].startswith('Traceback (most recent call last):\n')
    assert b['exc_info'].endswith('ZeroDivisionError: division by zero\n')
    assert 'in do_job' in b['exc_info']
    assert b['error_chain'] == ["KeyError: 'missing'"]
    assert b['threadName'] == 'MainThread'


def test_root_logger_record():
    exchange = unique('lc-py-root')
    script = textwrap.dedent('''
        import logging, os
        from logcollect.boot import default_config
        default_config(os.environ['URI'], exchange=os.environ['EXCHANGE'],
                       activity_identity={'project': 'demo', 'application': 'backend'})
        logging.info('root message')
    ''')
    with Capture(exchange) as capture:
        out = run_python(['-c', script], python_env(URI=BROKER_URI, EXCHANGE=exchange))
        assert out.returncode == 0, out.stderr
        msgs = capture.wait(1)
    assert len(msgs) == 1, (msgs, out.stderr)
    assert_014_fields(msgs[0].body, 'lc_i')
    assert msgs[0].body['logger'] == 'root'
    assert msgs[0].routing_key == 'logstash.root'


def test_nan_and_nested_values_stay_valid_json(shipping):
    """0.14 wrote bare NaN (invalid JSON) and lost records holding a
    datetime inside a list; both are sent here."""
    logger, handler, capture = shipping
    log = logger('fixes')
    when = datetime.datetime(2024, 1, 2)
    loop = []
    loop.append(loop)
    log.info('fixes', extra={'nan': math.nan, 'inf': -math.inf,
                             'nested': [when, {'d': when, 1: (1, 2), None: b'x'}],
                             'loop': loop, 'big': 2 ** 70})
    b = one(capture).body
    assert b['nan'] == 'NaN' and b['inf'] == '-Infinity'
    assert b['nested'] == [repr(when), {'d': repr(when), '1': [1, 2], 'null': repr(b'x')}]
    assert b['big'] == str(2 ** 70)
    # A list holding itself: cut, never a hang or a lost record.
    depth, cur = 0, b['loop']
    while isinstance(cur, list):
        cur, depth = cur[0], depth + 1
    assert isinstance(cur, str) and depth == 19


def test_a_bad_format_keeps_the_record(shipping):
    logger, handler, capture = shipping
    logger('fmt').info('value %d', 'not a number')
    b = one(capture).body
    assert b['message'] == 'value %d'
    assert b['format_error'].startswith('TypeError')
    assert b['format_args'] == "('not a number',)"


def test_timestamp_is_the_records_own_time_in_utc(shipping):
    logger, handler, capture = shipping
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)
    log = logger('clock')
    log.addHandler(Keep())
    log.warning('tick')
    b = one(capture).body
    expected = datetime.datetime.fromtimestamp(seen[0].created, datetime.timezone.utc)
    assert b['@timestamp'] == expected.strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def test_stack_info_is_sent(shipping):
    logger, handler, capture = shipping
    logger('stack').info('where', stack_info=True)
    b = one(capture).body
    stack = b['stack_info']
    # Python's text, or its last 1 KiB (the most recent calls) after '…'.
    assert stack.startswith('Stack (most recent call last):') or stack.startswith('…'), stack
    assert len(stack.encode()) <= 1024
    assert "logger('stack').info('where', stack_info=True)" in stack, stack


def test_identity_wins_and_record_attribute_keys_are_refused_by_logging(shipping):
    logger, handler, capture = shipping
    log = logger('identity')
    log.info('x', extra={'project': 'intruder', '@timestamp': 'mine', 'a[b]': 1})
    b = one(capture).body
    assert b['project'] == 'demo' and b['extra_project'] == 'intruder'
    assert b['at_timestamp'] == 'mine' and b['a_b_'] == 1
    with pytest.raises(KeyError):
        log.info('x', extra={'message': 'logging refuses this, as with 0.14'})


def test_a_log_call_never_waits_for_a_broker_that_is_away():
    handler = AMQPHandler('amqp://guest:guest@127.0.0.1:1/', exchange=unique('lc-py-away'),
                          shutdown_timeout=0.2)
    log = logging.getLogger(unique('away'))
    log.propagate = False
    log.addHandler(handler)
    worst = 0.0
    for i in range(2000):
        t = time.perf_counter()
        log.warning('record %d', i)
        worst = max(worst, time.perf_counter() - t)
    stats = handler.stats()
    handler.close()
    # 0.14 blocked each call for the connect attempt (3-10 s on a timeout);
    # here nothing on the calling thread touches the network.
    assert worst < 0.5, worst
    assert stats['accepted'] == 2000 and stats['confirmed'] == 0


def test_records_spooled_while_the_broker_is_away_are_sent_by_the_next_handler(tmp_path):
    exchange = unique('lc-py-spool')
    capture = Capture(exchange)
    spool = str(tmp_path / 'spool')
    # No broker: the records go to the spool, which outlives the handler.
    away = AMQPHandler('amqp://guest:guest@127.0.0.1:1/', exchange=exchange,
                       durable=False, shutdown_timeout=0.5, spool_dir=spool,
                       spool_max_bytes=8 << 20)
    log = logging.getLogger(unique('spooled'))
    log.propagate = False
    log.addHandler(away)
    for i in range(200):
        log.warning('record %d', i, extra={'i': i})
    log.removeHandler(away)
    away.close()
    assert os.listdir(spool), 'nothing was spooled'
    try:
        # The next process (here: handler) on the same spool sends them once
        # it starts shipping, at its first record (the handler starts its
        # shipper lazily, so that a fork before any logging is safe).
        back = AMQPHandler(BROKER_URI, exchange=exchange, durable=False,
                           spool_dir=spool)
        log.addHandler(back)
        log.warning('back', extra={'i': 200})
        back.flush()
        msgs = capture.wait(201, timeout=30)
        log.removeHandler(back)
        back.close()
        assert sorted(m.body['i'] for m in msgs) == list(range(201))
    finally:
        capture.delete()


def test_configuration_errors_are_raised_at_set_up():
    with pytest.raises(ValueError, match='broker'):
        AMQPHandler('http://nowhere/')
    with pytest.raises(ValueError, match='topic'):
        AMQPHandler(BROKER_URI, exchange_type='fanout')
    with pytest.raises(ValueError, match='shutdown_timeout'):
        AMQPHandler(BROKER_URI, shutdown_timeout=-1)
    with pytest.raises(ValueError, match='level'):
        ensure_amqp_handler(BROKER_URI, 'logstash', 'logstash', False, False,
                            'LOUD', None, logger=logging.getLogger(unique('lvl')))


def test_exit_flushes_within_the_deadline_and_reports_what_was_lost():
    """logging.shutdown() at exit: with the broker away, the process ends
    after about shutdown_timeout and says on stderr how many records were not
    delivered."""
    script = textwrap.dedent('''
        import logging
        from logcollect.boot import default_config
        default_config('amqp://guest:guest@127.0.0.1:1/', shutdown_timeout=1.0)
        for i in range(10):
            logging.getLogger('app').info('record %d', i)
    ''')
    t = time.monotonic()
    out = run_python(['-c', script], python_env())
    took = time.monotonic() - t
    assert out.returncode == 0, out.stderr
    assert '[logcollect]' in out.stderr and '10 record(s) not delivered' in out.stderr, out.stderr
    # One deadline for flush() and close() together, plus interpreter start
    # and the shutdown's grace for closing the connection.
    assert took < 1.0 + 6.0, took


def test_exit_delivers_everything_when_the_broker_is_up():
    exchange = unique('lc-py-exit')
    with Capture(exchange) as capture:
        out = run_python([os.path.join(EXAMPLES, 'native', 'native_logging.py')],
                         python_env(LOGCOLLECT_BROKER_URI=BROKER_URI,
                                    LOGCOLLECT_EXCHANGE=exchange,
                                    LOGCOLLECT_EXAMPLE_RECORDS=500))
        assert out.returncode == 0, out.stderr
        msgs = capture.wait(500)
    assert len(msgs) == 500, out.stderr
    assert sorted(m.body['i'] for m in msgs) == list(range(500))
    for m in msgs[:5]:
        assert_014_fields(m.body, 'lc_a', identity=('project',))
        assert m.body['subsystem'] == 'native_test'
        assert m.body['logger'] == 'test'


def test_default_config_keeps_other_root_handlers_and_installs_once():
    script = textwrap.dedent('''
        import logging
        from logcollect.boot import default_config
        from logcollect.handler import AMQPHandler
        console = logging.StreamHandler()
        logging.getLogger().addHandler(console)
        a = default_config('amqp://guest:guest@127.0.0.1/', exchange='lc-py-unused')
        b = default_config('amqp://guest:guest@127.0.0.1/', exchange='lc-py-unused')
        hs = logging.getLogger().handlers
        assert a is b, (a, b)
        assert console in hs and sum(isinstance(h, AMQPHandler) for h in hs) == 1, hs
        assert logging.getLogger().level == logging.DEBUG
        print('ok')
    ''')
    out = run_python(['-c', script], python_env())
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr


def test_django_dict_config_amends_logging_in_place():
    LOGGING = {
        'version': 1,
        'handlers': {'console': {'class': 'logging.StreamHandler'}},
        'loggers': {'': {'handlers': ['console'], 'level': 'WARNING'}},
    }
    name = django_dict_config(LOGGING, broker_uri=BROKER_URI, exchange='x',
                              activity_identity={'project': 'p'})
    assert name == 'logcollect'
    assert LOGGING['loggers']['']['handlers'] == ['console', 'logcollect']
    assert LOGGING['loggers']['']['level'] == 'WARNING'  # the user's setting wins
    conf = LOGGING['handlers']['logcollect']
    assert conf['class'] == 'logcollect.handler.AMQPHandler'
    assert conf['exchange'] == 'x' and conf['formatter'] == 'logcollect'
    assert LOGGING['formatters']['logcollect']['activity_identity'] == {'project': 'p'}
    # Idempotent: a second call finds the handler and formatter.
    django_dict_config(LOGGING, broker_uri=BROKER_URI)
    assert LOGGING['loggers']['']['handlers'] == ['console', 'logcollect']
    assert len(LOGGING['handlers']) == 2 and len(LOGGING['formatters']) == 1
    with pytest.raises(ValueError, match='rename'):
        django_dict_config({'handlers': {'logcollect': {'class': 'logging.NullHandler'}}})


def test_records_after_a_later_dict_config_are_still_delivered_at_exit():
    """dictConfig closes every handler logging knows and forgets them, but
    leaves the root logger's handlers attached when it does not configure
    root: our handler starts again on the next record, and the exit hook
    (not logging.shutdown, which no longer lists it) delivers its records."""
    exchange = unique('lc-py-dictconfig')
    script = textwrap.dedent('''
        import logging, logging.config, os
        from logcollect.boot import default_config
        default_config(os.environ['URI'], exchange=os.environ['EXCHANGE'])
        logging.getLogger('app').info('before', extra={'i': -1})
        logging.config.dictConfig({'version': 1, 'disable_existing_loggers': False})
        for i in range(100):
            logging.getLogger('app').info('after %d', i, extra={'i': i})
    ''')
    with Capture(exchange) as capture:
        out = run_python(['-c', script], python_env(URI=BROKER_URI, EXCHANGE=exchange))
        assert out.returncode == 0, out.stderr
        msgs = capture.wait(101)
    assert sorted(m.body['i'] for m in msgs) == list(range(-1, 100)), out.stderr


def test_a_record_logged_after_exit_closed_the_handlers_is_reported():
    script = textwrap.dedent('''
        import atexit, logging, os
        # Registered before logcollect is imported: runs after its exit hook.
        atexit.register(lambda: logging.getLogger('late').warning('too late'))
        from logcollect.boot import default_config
        default_config(os.environ['URI'], exchange=os.environ['EXCHANGE'])
    ''')
    out = run_python(['-c', script], python_env(URI=BROKER_URI, EXCHANGE=unique('lc-py-late')))
    assert out.returncode == 0, out.stderr
    assert "logged after the handlers were closed at exit was dropped (logger 'late')" in out.stderr
