"""The pace of a background job: at most a share of its event loop's time.

A job runs on the event loop of a server worker, beside the requests. Between two steps of
work it sleeps in proportion to the time the step took, so that over any stretch it keeps
the loop (and, since its steps are CPU work, a core) busy at most ``share`` of the time; the
requests of the same worker get the rest. ``share`` 1 never sleeps (``fhir-server export``).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pace"]

#: Sleeps shorter than this are carried over to the next pause instead (a sleep of a few
#: microseconds costs more than it gives back).
_MIN_SLEEP_S = 0.002


class Pace:
    """Measures a job's steps and sleeps after each so that work / (work + sleep) <= share."""

    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a job's share of the time is in (0, 1], not {share}")
        self.share = share
        self.worked = 0.0
        self.slept = 0.0
        self._owed = 0.0
        self._began = time.monotonic()

    def restart(self) -> None:
        """Start measuring the next step now (after waiting for something else)."""
        self._began = time.monotonic()

    async def pause(self) -> None:
        """End a step: sleep the time the share asks for, then start the next step."""
        step = time.monotonic() - self._began
        self.worked += step
        self._owed += step * (1 - self.share) / self.share
        if self._owed >= _MIN_SLEEP_S:
            owed, self._owed = self._owed, 0.0
            await asyncio.sleep(owed)
            self.slept += owed
        self._began = time.monotonic()
