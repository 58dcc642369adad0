"""Every test that counts records at the broker holds the machine-wide
fault lock in shared mode: tests of any checkout that break the broker
(close every connection, stop the app) take it exclusively, so they never
run while these count, and these never see duplicates or redeliveries that
another process's fault caused. The fault tests (test_faults.py) take it
exclusively themselves."""

import fcntl

import pytest

from support import FAULT_LOCK_FILE


@pytest.fixture(autouse=True)
def steady_broker(request):
    if request.module.__name__ == 'test_faults':
        yield
        return
    with open(FAULT_LOCK_FILE, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
