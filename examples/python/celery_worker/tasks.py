"""The Celery example of Python logcollect 0.14, on the Rust engine.

    celery -A tasks worker --pool=prefork --concurrency=2     # in this directory
    python send_task.py 10                                     # in another terminal

Every task logs through Celery's task logger (shipped: ``celery_config``
attaches the handler to it in each pool process) and through a plain logger
(shipped too with ``LOGCOLLECT_COLLECT_ROOT_LOGS=1``).

Environment: ``LOGCOLLECT_BROKER_URI`` (the logs' broker, default the local
RabbitMQ), ``LOGCOLLECT_EXCHANGE`` (default ``logstash``),
``CELERY_BROKER_URL`` (the tasks' broker, default the local RabbitMQ) and
``LOGCOLLECT_EXAMPLE_QUEUE`` (the task queue, default ``celery``).
"""

import os

from celery import Celery
from celery.utils.log import get_logger, get_task_logger

from logcollect.boot import celery_config

celery_config(os.environ.get('LOGCOLLECT_BROKER_URI', 'amqp://guest:guest@127.0.0.1/'),
              exchange=os.environ.get('LOGCOLLECT_EXCHANGE', 'logstash'),
              level='INFO',
              collect_root_logs=os.environ.get('LOGCOLLECT_COLLECT_ROOT_LOGS') == '1',
              activity_identity={'project': 'logcollect',
                                 'subsystem': 'celery_test'})

app = Celery('tasks',
             broker=os.environ.get('CELERY_BROKER_URL',
                                   'amqp://guest:guest@127.0.0.1:5672//'))
app.conf.task_default_queue = os.environ.get('LOGCOLLECT_EXAMPLE_QUEUE', 'celery')
app.conf.task_ignore_result = True
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task
def sample_task(msg='CELERY', number=0):
    get_task_logger('sample_task').info('%s %s', msg, number,
                                        extra={'number': number})
    get_logger('celery_sample_logger').info('%s %s (plain logger)', msg, number,
                                            extra={'number': number})
