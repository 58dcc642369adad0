"""The Python side of tests/celery_interop.rs: Celery 5 publishes tasks the
way a Python service does, and kombu reads what the Rust helpers publish.

    celery_interop.py publish QUEUE plain|subtask|asgi   -> {"task_id": ...}
    celery_interop.py read QUEUE N                       -> [{"headers": ..., "correlation_id": ...}, ...]
"""
import json
import sys
import time

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def publish(queue, mode):
    from celery import Celery

    app = Celery("interop", broker=BROKER)

    @app.task(name="interop.add")
    def add(x, y):
        return x + y

    options = {}
    if mode == "asgi":
        # asgi-correlation-id's Celery extension: the request's id travels in
        # the CORRELATION_ID header of every task published while serving it.
        from asgi_correlation_id.context import correlation_id
        from asgi_correlation_id.extensions.celery import load_correlation_ids

        load_correlation_ids()
        correlation_id.set("req-from-asgi-1")
    elif mode == "subtask":
        # What Celery sets when a running task sends another one.
        options = dict(root_id="root-flow-1", parent_id="parent-task-1")
    elif mode != "plain":
        raise SystemExit("unknown mode " + mode)
    result = add.apply_async((1, 2), queue=queue, **options)
    print(json.dumps({"task_id": result.id}))


def read(queue, n):
    from kombu import Connection, Queue

    out = []
    deadline = time.monotonic() + 30
    with Connection(BROKER) as conn:
        q = Queue(queue, no_declare=True).bind(conn.default_channel)
        while len(out) < n:
            message = q.get(no_ack=True)
            if message is None:
                if time.monotonic() > deadline:
                    raise SystemExit("read: only %d of %d messages" % (len(out), n))
                time.sleep(0.05)
                continue
            out.append(
                {
                    "headers": message.headers,
                    "correlation_id": message.properties.get("correlation_id"),
                    "body": message.body.decode() if isinstance(message.body, bytes) else message.body,
                }
            )
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        publish(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "read":
        read(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
