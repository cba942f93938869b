"""Polling helper shared by the app tests (the UI works from worker threads)."""

import time


def wait_until(predicate, timeout=30.0):
    """True as soon as ``predicate()`` holds, False after ``timeout`` seconds."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False
