"""The native example of Python logcollect 0.14, on the Rust engine: one INFO
record with a random number from logger ``test``.

    python examples/python/native/native_logging.py

``LOGCOLLECT_BROKER_URI`` (default ``amqp://guest:guest@127.0.0.1/``) and
``LOGCOLLECT_EXCHANGE`` (default ``logstash``) pick the broker and exchange;
``LOGCOLLECT_EXAMPLE_RECORDS`` logs that many records instead of one.
The process exits 0 even when the broker is away: ``logging.shutdown()``
(run at exit) waits at most ``shutdown_timeout`` and says on stderr what was
not delivered.
"""

import os
import random
from logging import getLogger

from logcollect.boot import default_config

default_config(os.environ.get('LOGCOLLECT_BROKER_URI', 'amqp://guest:guest@127.0.0.1/'),
               exchange=os.environ.get('LOGCOLLECT_EXCHANGE', 'logstash'),
               activity_identity={'project': 'logcollect',
                                  'subsystem': 'native_test'})

logger = getLogger("test")

for i in range(int(os.environ.get('LOGCOLLECT_EXAMPLE_RECORDS', '1'))):
    number = random.randint(0, 999999)
    logger.info("native logging test, random number %s", number,
                extra={'random': number, 'i': i})
