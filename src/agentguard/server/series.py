"""Time series of the fleet: a window of time cut into equal steps (buckets).

``?window=24h&step=5m`` asks for the last 24 hours in 5-minute buckets. Buckets start at whole
multiples of the step since the Unix epoch (UTC), so two reads a minute apart share their
buckets; the last bucket holds ``now`` and is still filling. Durations are a whole number and
a unit: ``s``, ``m``, ``h`` or ``d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .store.usage import USAGE_SLICE

DURATION_PATTERN = r"^[1-9][0-9]{0,6}[smhd]$"
DURATION_RULE = "must be a whole number and a unit, s, m, h or d (e.g. 30s, 5m, 24h, 7d)"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

MIN_WINDOW = 60
MAX_WINDOW = 31 * 86400
MAX_STEP = 86400
MAX_POINTS = 2880  # e.g. 24 hours in 30-second steps, 10 days in 5-minute steps
MAX_EVENTS = 500  # kills and revives in one answer, the newest

WINDOW_RULE = "from 1m to 31d"
STEP_RULE = f"from {USAGE_SLICE}s to 1d, a whole multiple of {USAGE_SLICE}s"
GRID_RULE = f"at most the window, and at most {MAX_POINTS:,} steps in it"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def seconds(duration: str) -> int:
    """``"5m"`` as 300 (the text matches :data:`DURATION_PATTERN`)."""
    return int(duration[:-1]) * UNITS[duration[-1]]


def window_problem(window: int) -> str | None:
    """What is wrong with a window of ``window`` seconds, if anything."""
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        return f"must be {WINDOW_RULE}"
    return None


def step_problem(step: int) -> str | None:
    """What is wrong with a step of ``step`` seconds, if anything (usage has 10-second slices)."""
    if not USAGE_SLICE <= step <= MAX_STEP or step % USAGE_SLICE:
        return f"must be {STEP_RULE}"
    return None


def grid_problem(window: int, step: int) -> str | None:
    """What is wrong with a step for a window (both valid on their own), if anything."""
    if step > window:
        return "must not be longer than the window"
    if math.ceil(window / step) > MAX_POINTS:
        shortest = math.ceil(window / MAX_POINTS / 10) * 10
        return f"too short for the window: at most {MAX_POINTS:,} steps, so at least {shortest}s"
    return None


@dataclass(frozen=True)
class Grid:
    """``points`` buckets of ``step`` seconds from ``start``."""

    start: datetime
    step: int
    points: int

    @classmethod
    def ending_at(cls, now: datetime, window: int, step: int) -> Grid:
        """The buckets covering ``window`` seconds up to ``now``, the last one holding it."""
        elapsed = math.floor((now - _EPOCH).total_seconds())
        end = _EPOCH + timedelta(seconds=(elapsed // step + 1) * step)
        points = math.ceil(window / step)
        return cls(end - timedelta(seconds=points * step), step, points)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.step * self.points)

    def at(self, index: int) -> datetime:
        """The start of bucket ``index``."""
        return self.start + timedelta(seconds=self.step * index)
