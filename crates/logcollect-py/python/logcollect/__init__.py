"""logcollect: Python ``logging`` to RabbitMQ as Logstash JSON, on the
Rust engine of the logcollect project (the API of Python logcollect 0.14).

Set-up helpers are in ``logcollect.boot``: ``default_config`` (plain
programs), ``django_dict_config`` (a Django ``LOGGING`` dict) and
``celery_config`` (Celery workers). The handler is
``logcollect.handler.AMQPHandler``.
"""

from logcollect.handler import AMQPHandler, flush_all

__all__ = ['AMQPHandler', 'flush_all', '__version__']

try:
    from importlib.metadata import version as _version
    __version__ = _version('logcollect')
except Exception:  # running from a source tree
    __version__ = 'unknown'
