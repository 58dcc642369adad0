"""Forked processes: each child ships its own records with its own shipper,
none lost, none sent twice, whatever the parent's shipper was doing at the
fork."""

import collections
import textwrap

from support import BROKER_URI, Capture, python_env, run_python, unique

CHILDREN = 6
PER_CHILD = 300
PARENT = 2000

# The parent ships from a busy thread while it forks: at each fork its
# shipper thread is publishing and its queue holds records. Children end in
# three ways: logging.shutdown() then os._exit (what a well-behaved pool
# process does), flush_all() then os._exit (billiard's way, via
# celery_config's worker_process_shutdown hook), and a normal exit (atexit
# runs logging.shutdown, as in a gunicorn worker).
SCRIPT = textwrap.dedent('''
    import logging, os, sys, threading
    from logcollect.boot import default_config
    from logcollect.handler import flush_all

    children, per_child, parent_n = %(children)d, %(per_child)d, %(parent)d
    default_config(os.environ['URI'], exchange=os.environ['EXCHANGE'])
    log = logging.getLogger('fork')
    log.info('parent before the forks', extra={'who': 'parent', 'i': -1})

    def busy():
        for i in range(parent_n):
            log.info('parent %%d', i, extra={'who': 'parent', 'i': i})
    t = threading.Thread(target=busy, name='busy')
    t.start()

    pids = []
    for c in range(children):
        pid = os.fork()
        if pid == 0:
            for i in range(per_child):
                log.info('child %%d record %%d', c, i, extra={'who': 'child%%d' %% c, 'i': i})
            way = c %% 3
            if way == 0:
                logging.shutdown()
                os._exit(0)
            elif way == 1:
                ok = flush_all()
                os._exit(0 if ok else 3)
            else:
                sys.exit(0)
        pids.append(pid)
    t.join()
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    print(' '.join(str(p) for p in pids))
''') % dict(children=CHILDREN, per_child=PER_CHILD, parent=PARENT)


def test_forked_children_deliver_all_their_records_exactly_once():
    exchange = unique('lc-py-fork')
    with Capture(exchange) as capture:
        out = run_python(['-c', SCRIPT], python_env(URI=BROKER_URI, EXCHANGE=exchange),
                         timeout=180)
        assert out.returncode == 0, out.stderr
        expected = 1 + PARENT + CHILDREN * PER_CHILD
        msgs = capture.wait(expected, timeout=60, settle=1.0)
    child_pids = [int(p) for p in out.stdout.split()]
    by_who = collections.defaultdict(list)
    for m in msgs:
        by_who[m.body['who']].append(m)
    assert sorted(m.body['i'] for m in by_who['parent']) == list(range(-1, PARENT)), \
        'parent records missing or twice'
    for c, pid in enumerate(child_pids):
        got = by_who['child%d' % c]
        assert sorted(m.body['i'] for m in got) == list(range(PER_CHILD)), \
            'child %d (pid %d): %d of %d records' % (c, pid, len(got), PER_CHILD)
        assert {m.body['process'] for m in got} == {pid}
    assert len(msgs) == expected, out.stderr
    assert '[logcollect]' not in out.stderr, out.stderr
    # The children were forked from the same thread: without a fresh seed
    # after the fork, each would draw the same random part for its i-th
    # record_id, and ids made in the same microsecond would be equal (and
    # Logstash, which uses record_id as the document id, would keep one).
    tails = [m.body['record_id'][-12:] for m in msgs if m.body['who'].startswith('child')]
    assert len(set(tails)) == len(tails), 'children drew the same random ids'

