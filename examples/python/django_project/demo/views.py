import logging

from django.http import HttpResponse

logger = logging.getLogger('demo.views')


def hello(request, name):
    """Logs one INFO record per request, with the request's path and name."""
    logger.info('hello %s', name, extra={'path': request.path, 'visitor': name})
    return HttpResponse('hello %s\n' % name)
