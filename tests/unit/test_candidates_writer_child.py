"""The catalogue writer's child process: jobs go over the socket pair and answers come back, at the niceness asked
for; a child that died is replaced by the next write, and one that stops answering is stopped and reported (the
real writes into Milvus are in tests/integration/test_catalog.py)."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from recsys.candidates.writer import WriteJob
from recsys.candidates.writer_child import ChildWriter

NOWHERE = ("http://127.0.0.1:1", "")  # nothing listens there: the child answers with the connection error
JOB = WriteJob("items_v1", "/nonexistent-model", [], [], ["a"])


@pytest.fixture
def writer():
    w = ChildWriter(lambda: NOWHERE, nice=7, timeout_s=20.0).start()
    yield w
    w.close()


def test_the_child_answers_each_job_at_its_niceness(writer):
    with pytest.raises(RuntimeError, match="catalogue writer: .*127.0.0.1:1"):
        writer.write(JOB)
    assert psutil.Process(writer._proc.pid).nice() == 7


def test_a_dead_child_is_replaced_by_the_next_write(writer):
    first = writer._proc.pid
    os.kill(first, signal.SIGKILL)
    writer._proc.wait()
    with pytest.raises(RuntimeError, match="catalogue writer: "):
        writer.write(JOB)  # answered by a fresh child
    assert writer._proc.pid != first


def test_a_child_that_stops_answering_is_stopped_and_reported():
    w = ChildWriter(lambda: NOWHERE, nice=0, timeout_s=1.0).start()
    try:
        stuck = w._proc
        os.kill(stuck.pid, signal.SIGSTOP)
        with pytest.raises(ConnectionError, match="no answer in 1 s"):
            w.write(JOB)
        assert stuck.poll() is not None and w._proc is None  # stopped; the next write starts another
    finally:
        w.close()


def test_niceness_outside_0_to_19_is_refused():
    with pytest.raises(ValueError, match="0-19"):
        ChildWriter(lambda: NOWHERE, nice=20)
