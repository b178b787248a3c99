"""Waiting for something another thread or process does, without fixed sleeps."""

import time


def eventually(condition, timeout=20.0, interval=0.02):
    """Poll ``condition`` until it is truthy or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
