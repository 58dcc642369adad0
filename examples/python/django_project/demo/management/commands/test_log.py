"""``manage.py test_log [--requests N]``: the Django example of Python
logcollect 0.14. Logs one record from the command itself, then serves N
requests (default 1) to a view that logs, through Django's full request
handling (``django.test.Client``)."""

import logging
import random

from django.core.management.base import BaseCommand
from django.test import Client

logger = logging.getLogger('test')


class Command(BaseCommand):
    help = 'Logs a record, then serves requests to a view that logs.'

    def add_arguments(self, parser):
        parser.add_argument('--requests', type=int, default=1)

    def handle(self, *args, **options):
        number = random.randint(0, 999999)
        logger.info('django logging test, random number %s', number,
                    extra={'random': number})
        client = Client()
        for i in range(options['requests']):
            response = client.get('/hello/visitor-%d' % i)
            if response.status_code != 200:
                raise SystemExit('request %d: status %d' % (i, response.status_code))
        self.stdout.write('logged 1 record and served %d request(s)' % options['requests'])
