"""gunicorn settings for the Django example, on its fork model:

    gunicorn -c gunicorn.conf.py mysite.wsgi     # in this directory

``preload_app`` loads Django (and so the logcollect handler) in the master
before the workers are forked, and the master logs a record when it is
ready, before it forks them: each worker inherits a running shipper, must
leave it alone and ship through its own. ``GUNICORN_BIND`` (default
127.0.0.1:8000) and ``GUNICORN_WORKERS`` (default 2) set the address and
the number of workers.
"""

import logging
import os

bind = os.environ.get('GUNICORN_BIND', '127.0.0.1:8000')
workers = int(os.environ.get('GUNICORN_WORKERS', '2'))
worker_class = 'sync'
preload_app = True


def when_ready(server):
    logging.getLogger('demo.server').info('gunicorn master ready, forking %d workers', workers)
