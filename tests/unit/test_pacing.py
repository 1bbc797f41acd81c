"""DutyCycle: background work rests in proportion to what it did, and never when there is nothing to do."""

from __future__ import annotations

import threading
import time

import pytest

from recsys.common.pacing import DutyCycle


def test_rest_keeps_busy_time_to_the_share():
    assert DutyCycle(0.25).rest_s(0.1) == pytest.approx(0.3)  # busy 0.1 of every 0.4 s
    assert DutyCycle(0.5).rest_s(0.2) == pytest.approx(0.2)
    assert DutyCycle(1.0).rest_s(5.0) == 0.0  # no pacing
    assert DutyCycle(0.25).rest_s(0.0) == 0.0  # nothing done: no rest


def test_rest_ends_when_stopped():
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    DutyCycle(0.01).rest(1.0, stop)  # would rest ~99 s
    assert time.monotonic() - started < 2.0
