"""Waiting helper shared by the app tests (the UI works from worker threads)."""

import time

# A sanity bound, not a time budget: long enough for a cold start on a busy 2-core
# machine, so that reaching it means the awaited thing is not going to happen.
TIMEOUT = 120.0


def wait_until(predicate, timeout=TIMEOUT):
    """True as soon as ``predicate()`` holds, False after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
