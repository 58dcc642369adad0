"""The logging handler: hands each record to logcollect's Rust shipper.

The record is turned into Logstash JSON and queued on the calling thread
(a few microseconds, never waiting for the broker); a Rust thread publishes
it with publisher confirms and reconnects forever. One shipper per process:
after a fork the child starts its own on its first record and never touches
the parent's (see ``_after_fork_in_child``).
"""

import atexit
import logging
import os
import sys
import threading
import time
import traceback
import weakref

from logcollect import _native
from logcollect.formatter import AMQPLogstashFormatter

__all__ = ['AMQPHandler', 'flush_all']

#: ``LogRecord`` attributes that are not ``extra=`` fields: those of a fresh
#: record on this Python (``taskName`` since 3.12) plus what formatters add.
STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord('', logging.INFO, '', 0, '', (), None).__dict__
) | {'message', 'asctime'}

#: A close that follows, within this many seconds, a flush that ran out of
#: time does not wait again: ``logging.shutdown()`` calls both, and must take
#: at most ``shutdown_timeout`` in all, not twice that.
_SHARED_DEADLINE_WINDOW = 1.0

#: Handlers alive in this process, for the fork hook and ``flush_all``.
_handlers = weakref.WeakSet()
_handlers_lock = threading.Lock()

#: Set when the process exits and every handler was closed (``_close_all``).
_exited = False

#: Shippers inherited through fork. Kept referenced for the life of the
#: process so that they are never dropped: their Rust thread does not exist
#: in the child and their locks may be held; see ``_after_fork_in_child``.
_inherited = []


class AMQPHandler(logging.Handler):
    """A ``logging.Handler`` that ships records to a RabbitMQ topic exchange.

    The arguments of Python logcollect 0.14's ``AMQPHandler``; the activity
    identity, ``type``, ``tags`` and host name come from an
    ``AMQPLogstashFormatter`` set on the handler (the default one if none),
    as in 0.14. Keyword-only options: ``shutdown_timeout`` (seconds that
    ``flush()``/``close()`` and so ``logging.shutdown()`` wait for the broker,
    default 5), ``queue_capacity`` (records kept in memory while the broker
    is away, default 65,536), ``connect_timeout``, ``max_record_bytes``,
    ``spool_dir`` (a directory where records wait on disk while the broker
    is away, kept across restarts: the next process sends them) and
    ``spool_max_bytes`` (its cap, default 256 MiB).

    A bad URI raises ``ValueError`` here; a broker that is down is not an
    error: records wait in the queue and are sent when it is back.
    """

    def __init__(self, broker_uri='amqp://localhost/', exchange='logstash',
                 exchange_type='topic', durable=True, routing_key='logstash',
                 auto_delete=False, *, shutdown_timeout=None,
                 queue_capacity=None, connect_timeout=None,
                 max_record_bytes=None, spool_dir=None, spool_max_bytes=None):
        super().__init__()
        if exchange_type != 'topic':
            raise ValueError(
                "exchange_type %r is not supported: logcollect publishes to a "
                "topic exchange (routing key <routing_key>.<logger>); use "
                "'topic'" % (exchange_type,))
        self.broker_uri = broker_uri
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.durable = durable
        self.routing_key = routing_key
        self.auto_delete = auto_delete
        self._options = dict(shutdown_timeout=shutdown_timeout,
                             queue_capacity=queue_capacity,
                             connect_timeout=connect_timeout,
                             max_record_bytes=max_record_bytes,
                             spool_dir=spool_dir,
                             spool_max_bytes=spool_max_bytes)
        self._config = None
        self._config_formatter = None
        self._shipper = None
        self._missed_deadline = None
        # Validate now: a bad URI, exchange or option fails at set-up.
        self._make_config(self.formatter)
        with _handlers_lock:
            _handlers.add(self)

    # -- configuration -------------------------------------------------

    def _make_config(self, formatter):
        if not isinstance(formatter, AMQPLogstashFormatter):
            formatter = AMQPLogstashFormatter()
        self._config = _native.Config(
            broker_uri=self.broker_uri,
            exchange=self.exchange,
            routing_key=self.routing_key,
            durable=bool(self.durable),
            auto_delete=bool(self.auto_delete),
            activity_identity=formatter.identity_pairs(),
            standard_attributes=sorted(STANDARD_ATTRIBUTES),
            host=formatter.host,
            type_name=formatter.message_type,
            tags=list(formatter.tags),
            **self._options)
        self._config_formatter = formatter

    def setFormatter(self, fmt):
        """Sets the formatter; an ``AMQPLogstashFormatter`` brings the
        activity identity, type, tags and host of the records shipped from
        now on (other formatters are not used: records are encoded in Rust)."""
        super().setFormatter(fmt)
        if isinstance(fmt, AMQPLogstashFormatter) and fmt is not self._config_formatter:
            self.acquire()
            try:
                self._make_config(fmt)
                old, self._shipper = self._shipper, None
            finally:
                self.release()
            if old is not None:
                _shutdown_quietly(old, self._config.shutdown_timeout)

    @property
    def shutdown_timeout(self):
        """Seconds ``flush()`` and ``close()`` wait at most."""
        return self._config.shutdown_timeout

    # -- the hot path --------------------------------------------------

    def _start(self):
        shipper = _native.Shipper(self._config)
        self._shipper = shipper
        return shipper

    def emit(self, record):
        if _exited:
            _dropped_after_exit(record)
            return
        try:
            try:
                message = record.getMessage()
                fields = None
            except Exception as e:  # a bad %-format: keep the record, say why
                message = str(record.msg)
                fields = [('format_error', '%s: %s' % (type(e).__name__, e)),
                          ('format_args', repr(record.args))]
            exception = _exception(record)
            shipper = self._shipper or self._start()
            if shipper.submit(record, message, exception, fields) == _native.OTHER_PROCESS:
                # Forked without os.fork's hooks (a C-level fork): this
                # process needs its own shipper; the inherited one is kept
                # referenced, never touched.
                _inherited.append(shipper)
                self._start().submit(record, message, exception, fields)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    # -- lifecycle -----------------------------------------------------

    def flush(self):
        """Waits (at most ``shutdown_timeout`` seconds) until every record
        handed over so far is confirmed by the broker."""
        self.acquire()
        try:
            shipper = self._shipper
        finally:
            self.release()
        if shipper is None:
            return
        deadline = time.monotonic() + self.shutdown_timeout
        if shipper.flush(self.shutdown_timeout):
            self._missed_deadline = None
        else:
            self._missed_deadline = deadline

    def _close_budget(self):
        """Seconds ``close()`` may wait: the whole ``shutdown_timeout``,
        unless a flush just ran out of it (``logging.shutdown()`` calls
        ``flush()`` then ``close()``, and must not wait twice)."""
        missed = self._missed_deadline
        now = time.monotonic()
        if missed is not None and now - missed <= _SHARED_DEADLINE_WINDOW:
            return max(0.0, missed - now)
        return self.shutdown_timeout

    def close(self):
        """Delivers what it can within ``shutdown_timeout`` and stops this
        process's shipper thread; what was not delivered is reported on
        stderr. Logging to a closed handler starts a new shipper."""
        self._close_within(self._close_budget())
        super().close()

    def _close_within(self, timeout):
        self.acquire()
        try:
            shipper, self._shipper = self._shipper, None
        finally:
            self.release()
        if shipper is not None:
            shipper.shutdown(timeout)

    def stats(self):
        """This process's counters (``accepted``, ``confirmed``, ``pending``,
        ``lost`` and each cause), or ``{}`` before the first record."""
        shipper = self._shipper
        return shipper.stats() if shipper is not None else {}

    def _after_fork_in_child(self):
        # The parent's shipper thread does not exist in the child, and its
        # mutexes may have been held at the fork: never call it, never drop
        # it. The child starts its own shipper on its first record, so none
        # of the parent's queued records is sent twice and none of the
        # child's depends on the parent.
        if self._shipper is not None:
            _inherited.append(self._shipper)
            self._shipper = None
        self._missed_deadline = None

    def __repr__(self):
        return '<%s %s exchange=%s (%s)>' % (
            type(self).__name__, _uri_without_password(self.broker_uri),
            self.exchange, logging.getLevelName(self.level))


def _exception(record):
    """``(type name, message, traceback text, causes)`` or ``None``."""
    exc_info = record.exc_info
    if exc_info and exc_info is not True and exc_info[0] is not None:
        _, exc, _ = exc_info
        text = ''.join(traceback.format_exception(*exc_info))
        chain = []
        seen = {id(exc)}
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        # 32 causes at most, as the Rust encoder's error chains.
        while cause is not None and id(cause) not in seen and len(chain) < 32:
            seen.add(id(cause))
            chain.append('%s: %s' % (type(cause).__name__, cause))
            cause = cause.__cause__ or (
                None if cause.__suppress_context__ else cause.__context__)
        return (type(exc).__name__, str(exc), text, chain)
    if record.exc_text:
        # A record that crossed a process boundary (QueueHandler, a socket)
        # carries its traceback as text only.
        return ('', '', record.exc_text, [])
    return None


def _uri_without_password(uri):
    try:
        scheme, rest = uri.split('://', 1)
        creds, host = rest.rsplit('@', 1)
        return '%s://%s@%s' % (scheme, creds.split(':', 1)[0], host)
    except ValueError:
        return uri


def _shutdown_quietly(shipper, timeout):
    try:
        shipper.shutdown(timeout)
    except Exception:  # already shut down, or another process's
        pass


def flush_all(timeout=None):
    """Flushes every logcollect handler of this process, waiting at most
    ``timeout`` seconds in all (default: each handler's ``shutdown_timeout``).
    For processes that end with ``os._exit()``, which skips
    ``logging.shutdown()``. Returns ``True`` when everything was confirmed."""
    with _handlers_lock:
        handlers = list(_handlers)
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = True
    for h in handlers:
        shipper = h._shipper
        if shipper is None:
            continue
        left = h.shutdown_timeout if deadline is None else max(0.0, deadline - time.monotonic())
        ok = shipper.flush(left) and ok
    return ok


def _dropped_after_exit(record):
    global _exit_drop_reported
    if not _exit_drop_reported:
        _exit_drop_reported = True
        sys.stderr.write(
            '[logcollect] a record logged after the handlers were closed at exit was '
            'dropped (logger %r); log before interpreter shutdown\n' % (record.name,))


_exit_drop_reported = False


def _close_all():
    """At exit: closes every handler of the process within one deadline (the
    longest ``shutdown_timeout``), also handlers that ``logging`` no longer
    lists (``dictConfig`` forgets the handlers it closes, even those it
    leaves attached to loggers, which start again on their next record).
    Runs before ``logging.shutdown()``, which then finds nothing to wait
    for. Sequential: Python 3.12 refuses new threads at exit."""
    global _exited
    with _handlers_lock:
        handlers = list(_handlers)
    if handlers:
        deadline = time.monotonic() + max(h.shutdown_timeout for h in handlers)
        for h in handlers:
            h._close_within(max(0.0, deadline - time.monotonic()))
    _exited = True


# atexit runs its functions last registered first: this one, registered
# after logging's, runs before logging.shutdown().
atexit.register(_close_all)


def _after_fork_in_child():
    global _handlers_lock
    # Children of one process must not draw the same random parts of their
    # record ids (Logstash's document ids).
    _native.after_fork_in_child()
    # Another thread of the parent may have held the lock at the fork; the
    # child has one thread, so a new lock is safe.
    _handlers_lock = threading.Lock()
    for h in list(_handlers):
        h._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
