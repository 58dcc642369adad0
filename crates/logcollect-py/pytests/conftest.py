"""Every test that counts records at the broker holds the machine-wide
fault lock in shared mode: tests of any checkout that break the broker
(close every connection, stop the app) take it exclusively, so they never
run while these count, and these never see duplicates or redeliveries that
another process's fault caused. The fault tests (test_faults.py) take it
exclusively themselves."""

import pytest

from support import shared_fault_lock


@pytest.fixture(autouse=True)
def steady_broker(request):
    if request.module.__name__ == 'test_faults':
        yield
        return
    with shared_fault_lock():
        yield
