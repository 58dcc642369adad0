"""The formatter of Python logcollect 0.14, kept for its settings.

Records are encoded in Rust by the handler; this class only carries what
0.14's formatter was given (activity identity, ``type``, ``tags``, host
name), so that Django ``LOGGING`` dicts and code written for 0.14 keep
working. ``format()`` returns the plain message, for handlers that use it
by mistake.
"""

import logging
import socket

__all__ = ['AMQPLogstashFormatter']


class AMQPLogstashFormatter(logging.Formatter):
    """Settings of the records an ``AMQPHandler`` ships.

    ``activity_identity``: pairs merged at the top level of every record,
    winning over every other field; values are sent as strings.
    ``message_type``: the ``type`` field. ``tags``: the ``tags`` field.
    ``fqdn``: send ``socket.getfqdn()`` as ``host`` instead of the short
    name. ``max_seq_no``: accepted for 0.14 compatibility; ``seq`` stops at
    1000 as in 0.14, and any other value is refused.
    """

    def __init__(self, message_type='Logstash', tags=None, fqdn=False,
                 activity_identity=None, max_seq_no=1000):
        super().__init__()
        if max_seq_no != 1000:
            raise ValueError('max_seq_no: only 1000 (the 0.14 default) is supported')
        self.message_type = message_type
        self.tags = list(tags) if tags is not None else []
        self.host = socket.getfqdn() if fqdn else socket.gethostname()
        self.activity_identity = dict(activity_identity or {})

    def identity_pairs(self):
        """The activity identity as ``(key, value)`` string pairs, in order."""
        return [(str(k), v if isinstance(v, str) else str(v))
                for k, v in self.activity_identity.items()]
