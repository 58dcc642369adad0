"""Settings of the logcollect Django example: a LOGGING dict with a console
handler, amended by ``django_dict_config`` so that the root logger also
ships to RabbitMQ (the console handler stays).

``LOGCOLLECT_BROKER_URI`` and ``LOGCOLLECT_EXCHANGE`` pick the broker and
exchange (defaults: the local broker, ``logstash``).
"""

import os

from logcollect.boot import django_dict_config

SECRET_KEY = 'example-only-not-secret'
DEBUG = False
ALLOWED_HOSTS = ['127.0.0.1', 'localhost', 'testserver']
INSTALLED_APPS = ['demo']
MIDDLEWARE = []
ROOT_URLCONF = 'mysite.urls'
WSGI_APPLICATION = 'mysite.wsgi.application'
DATABASES = {}
USE_TZ = True

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'formatters': {
        'verbose': {'format': '%(levelname)s %(asctime)s %(module)s %(message)s'},
    },
    'handlers': {
        'console': {'class': 'logging.StreamHandler', 'formatter': 'verbose'},
    },
    'loggers': {
        '': {'handlers': ['console'], 'level': 'INFO'},
    },
}

django_dict_config(LOGGING,
                   broker_uri=os.environ.get('LOGCOLLECT_BROKER_URI',
                                             'amqp://guest:guest@127.0.0.1/'),
                   exchange=os.environ.get('LOGCOLLECT_EXCHANGE', 'logstash'),
                   level='INFO',
                   activity_identity={'project': 'logcollect',
                                      'subsystem': 'django_test'})
