"""The intervention recorder: batches in the background, retries, bounded, never silent."""

from __future__ import annotations

import logging
import threading

import pytest

from agentguard import Intervention
from agentguard.interventions import InterventionRecorder


def item(n: int) -> Intervention:
    return Intervention(id=f"iv-{n}", action="send", target_type="agent", target_id="a")


def test_delivers_in_batches_and_flush_waits() -> None:
    got: list[tuple[list[str], int]] = []
    recorder = InterventionRecorder(
        lambda batch, dropped: got.append(([i.id for i in batch], dropped)), batch_size=3
    )
    for n in range(7):
        recorder.submit(item(n))
    assert recorder.flush(5)
    assert [i for batch, _ in got for i in batch] == [f"iv-{n}" for n in range(7)]
    assert all(len(batch) <= 3 for batch, _ in got) and recorder.sent == 7
    recorder.close()


def test_failed_deliveries_are_retried_in_order() -> None:
    attempts: list[list[str]] = []

    def flaky(batch: list[Intervention], dropped: int) -> None:
        attempts.append([i.id for i in batch])
        if len(attempts) < 3:
            raise ConnectionError("server down")

    recorder = InterventionRecorder(flaky)
    recorder.submit(item(1))
    assert recorder.flush(10)
    assert attempts == [["iv-1"], ["iv-1"], ["iv-1"]] and recorder.pending() == 0
    recorder.close()


def test_overflow_is_counted_logged_and_reported_with_the_next_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    got: list[tuple[list[str], int]] = []

    def slow(batch: list[Intervention], dropped: int) -> None:
        gate.wait(5)
        got.append(([i.id for i in batch], dropped))

    recorder = InterventionRecorder(slow, max_buffer=2, batch_size=1)
    with caplog.at_level(logging.ERROR, logger="agentguard"):
        for n in range(5):
            recorder.submit(item(n))
    assert recorder.dropped >= 3
    assert "intervention buffer full" in caplog.text
    gate.set()
    assert recorder.flush(5)
    assert sum(dropped for _, dropped in got) == recorder.dropped  # reported, exactly once
    recorder.close()
