"""Sends N ``tasks.sample_task`` tasks (default 1) to the worker:

    python send_task.py [N]

Uses the same ``CELERY_BROKER_URL`` and ``LOGCOLLECT_EXAMPLE_QUEUE`` as
``tasks.py``.
"""

import os
import sys

from celery import Celery

app = Celery('send', broker=os.environ.get('CELERY_BROKER_URL',
                                           'amqp://guest:guest@127.0.0.1:5672//'))
queue = os.environ.get('LOGCOLLECT_EXAMPLE_QUEUE', 'celery')

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
for i in range(n):
    app.send_task('tasks.sample_task', kwargs={'msg': 'CELERY', 'number': i},
                  queue=queue)
print('sent %d task(s) to queue %s' % (n, queue))
