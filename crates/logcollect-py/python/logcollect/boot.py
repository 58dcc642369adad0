"""One-call set-up, with the signatures of Python logcollect 0.14.

- ``default_config(...)``: plain programs; the root logger gets the handler.
- ``django_dict_config(LOGGING, ...)``: amends a Django ``LOGGING`` dict.
- ``celery_config(...)``: Celery workers; the task logger gets the handler
  in every worker process (and the root logger with ``collect_root_logs``).

Every helper takes, besides the 0.14 parameters, the handler's keyword-only
options (``shutdown_timeout``, ``queue_capacity``, ``connect_timeout``,
``max_record_bytes``, ``spool_dir``, ``spool_max_bytes``; see ``AMQPHandler``).
"""

import logging

from logcollect.formatter import AMQPLogstashFormatter
from logcollect.handler import AMQPHandler

__all__ = ['default_config', 'django_dict_config', 'celery_config',
           'ensure_amqp_handler']

#: The dotted names Django's ``dictConfig`` instantiates.
HANDLER_CLASS = 'logcollect.handler.AMQPHandler'
FORMATTER_CLASS = 'logcollect.formatter.AMQPLogstashFormatter'


def _level(level):
    """A level name or number as a number; an unknown name is an error."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError('unknown level %r: use DEBUG, INFO, WARNING, ERROR, '
                         'CRITICAL or a number' % (level,))
    return value


def ensure_amqp_handler(broker_uri, exchange, routing_key, durable,
                        auto_delete, level, activity_identity, logger=None,
                        **options):
    """Attaches a logcollect handler to ``logger`` (default: root), unless
    one with the same broker, exchange and routing key is already there.
    Returns the handler. Lowers the logger's level to ``level`` when it is
    higher, so that records of that level reach the handler."""
    logger = logger or logging.getLogger()
    for h in logger.handlers:
        if (isinstance(h, AMQPHandler) and h.broker_uri == broker_uri
                and h.exchange == exchange and h.routing_key == routing_key):
            return h
    handler = AMQPHandler(broker_uri=broker_uri, exchange=exchange,
                          durable=durable, routing_key=routing_key,
                          auto_delete=auto_delete, **options)
    handler.setFormatter(AMQPLogstashFormatter(
        activity_identity=activity_identity or {}))
    handler.setLevel(_level(level))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    return handler


def default_config(broker_uri='amqp://localhost/', exchange='logstash',
                   routing_key='logstash', durable=False, auto_delete=False,
                   level='DEBUG', activity_identity=None, **options):
    """Ships every record of the process: the root logger gets the handler.

    Unlike 0.14, the root logger's other handlers are kept and a second call
    returns the handler already installed. Returns the handler.
    """
    return ensure_amqp_handler(broker_uri, exchange, routing_key, durable,
                               auto_delete, level, activity_identity,
                               **options)


def django_dict_config(LOGGING, broker_uri='amqp://localhost/',
                       exchange='logstash', routing_key='logstash',
                       durable=False, auto_delete=False, level='DEBUG',
                       activity_identity=None, **options):
    """Amends a Django ``LOGGING`` dict in place (call it in the settings
    module, after ``LOGGING``): adds a ``logcollect`` handler and formatter
    and attaches the handler to the root logger, keeping the other handlers.
    Settings already in the dict win. Returns the handler's name."""
    handler_name = _find_or_add(LOGGING.setdefault('handlers', {}), HANDLER_CLASS,
                                {'class': HANDLER_CLASS})
    formatter_name = _find_or_add(LOGGING.setdefault('formatters', {}), FORMATTER_CLASS,
                                  {'()': FORMATTER_CLASS,
                                   'activity_identity': dict(activity_identity or {})})
    handlers = LOGGING['handlers']

    root = LOGGING.setdefault('loggers', {}).setdefault('', {})
    root_handlers = root.setdefault('handlers', [])
    if handler_name not in root_handlers:
        root_handlers.append(handler_name)
    root.setdefault('level', level)

    conf = handlers[handler_name]
    conf.setdefault('broker_uri', broker_uri)
    conf.setdefault('exchange', exchange)
    conf.setdefault('routing_key', routing_key)
    conf.setdefault('durable', durable)
    conf.setdefault('auto_delete', auto_delete)
    conf.setdefault('level', level)
    conf.setdefault('formatter', formatter_name)
    for k, v in options.items():
        conf.setdefault(k, v)
    return handler_name


def _find_or_add(section, dotted_class, new_conf):
    """The name of the entry of a ``LOGGING`` section (``handlers``,
    ``formatters``) made by ``dotted_class``, added as ``logcollect`` with
    ``new_conf`` when there is none."""
    for name, conf in section.items():
        if dotted_class in (conf.get('class'), conf.get('()')):
            return name
    if 'logcollect' in section:
        raise ValueError("LOGGING already has an entry named 'logcollect' that is not a "
                         "%s: rename it" % (dotted_class,))
    section['logcollect'] = new_conf
    return 'logcollect'


def celery_config(broker_uri='amqp://localhost/', exchange='logstash',
                  routing_key='logstash', durable=True, level='DEBUG',
                  auto_delete=False, activity_identity=None,
                  collect_root_logs=False, **options):
    """Ships the records of Celery tasks (``celery.utils.log.task_logger``
    and the ``get_task_logger`` loggers below it); with
    ``collect_root_logs`` every record of the worker processes.

    Hooks ``worker_process_init`` (each pool process, after the fork) and
    ``worker_ready`` (the main process, which runs the tasks of the solo and
    threads pools), as 0.14 did, and ``worker_process_shutdown``: a pool
    process ends with ``os._exit()``, which skips ``logging.shutdown()``, so
    its records are flushed there. Records made inside a task carry
    ``task_id`` and ``task_name``.
    """
    from celery import signals

    def init_logging(**_):
        from celery.utils.log import task_logger
        kwargs = dict(broker_uri=broker_uri, exchange=exchange,
                      routing_key=routing_key, durable=durable,
                      auto_delete=auto_delete, level=level,
                      activity_identity=activity_identity, **options)
        if collect_root_logs:
            _with_task_fields(ensure_amqp_handler(**kwargs))
        _with_task_fields(ensure_amqp_handler(logger=task_logger, **kwargs))

    def flush_logging(**_):
        from logcollect.handler import flush_all
        flush_all()

    signals.worker_process_init.connect(init_logging, weak=False)
    signals.worker_ready.connect(init_logging, weak=False)
    signals.worker_process_shutdown.connect(flush_logging, weak=False)


class _TaskFields(logging.Filter):
    """Adds ``task_id`` and ``task_name`` of the running Celery task."""

    def filter(self, record):
        from celery._state import get_current_task
        task = get_current_task()
        if task is not None and task.request.id is not None:
            record.__dict__.setdefault('task_id', task.request.id)
            record.__dict__.setdefault('task_name', task.name)
        return True


def _with_task_fields(handler):
    if not any(isinstance(f, _TaskFields) for f in handler.filters):
        handler.addFilter(_TaskFields())
    return handler
