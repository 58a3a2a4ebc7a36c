"""Progress of long work (``load``, ``reindex``, ``generate``, ``facilities load``, the XML 130
import, the bulk export): a bar on a terminal, plain periodic lines elsewhere.

One small API for every long task::

    with track("load", total=items, unit="items", interval_s=settings.progress_interval_s) as p:
        p.advance()                  # one more done (or advance(n))
        p.reached(done)              # or: this many done in all (counts gathered elsewhere)
        p.set_total(n)               # when the total becomes known later
        p.note(rejected=3)           # figures shown beside the count

On a terminal (stderr is a TTY) it draws a ``tqdm`` bar with the rate and the time left. On
anything else (CI, a service's journal, a pipe) a redrawn bar would be one endless line of
carriage returns, so it writes a log record on ``fhir_server.progress`` every ``interval_s``
and one at the end: a plain line in the configured log format (``fhir_server.logs``), whose
fields (task, done, total, rate_per_s, eta_s, and the noted figures) a log pipeline can read.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

from tqdm import tqdm

__all__ = ["Progress", "track"]

log = logging.getLogger("fhir_server.progress")


class Progress(Protocol):
    """What long work tells about itself; see the module docstring."""

    def advance(self, n: int = 1) -> None: ...
    def reached(self, done: int) -> None: ...
    def set_total(self, total: int | None) -> None: ...
    def note(self, **figures: int) -> None: ...
    def close(self) -> None: ...


class _Bar:
    """A ``tqdm`` bar: count, percentage, rate and time left, redrawn at most 5 times a second."""

    def __init__(self, task: str, total: int | None, unit: str, stream: TextIO) -> None:
        self._bar = tqdm(total=total, desc=task, unit=f" {unit}", file=stream,
                         dynamic_ncols=True, mininterval=0.2, smoothing=0.1)

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)

    def reached(self, done: int) -> None:
        self._bar.update(done - self._bar.n)

    def set_total(self, total: int | None) -> None:
        self._bar.total = total
        self._bar.refresh()

    def note(self, **figures: int) -> None:
        self._bar.set_postfix(figures, refresh=False)

    def close(self) -> None:
        self._bar.close()


class _Lines:
    """A log line every ``interval_s`` (when something changed) and one at the end."""

    def __init__(self, task: str, total: int | None, unit: str, interval_s: float) -> None:
        self._task, self._total, self._unit, self._interval = task, total, unit, interval_s
        self._done = 0
        self._figures: dict[str, int] = {}
        self._started = self._last = time.monotonic()
        self._said = -1

    def advance(self, n: int = 1) -> None:
        self.reached(self._done + n)

    def reached(self, done: int) -> None:
        self._done = done
        if time.monotonic() - self._last >= self._interval:
            self._say(final=False)

    def set_total(self, total: int | None) -> None:
        self._total = total

    def note(self, **figures: int) -> None:
        self._figures.update(figures)

    def close(self) -> None:
        self._say(final=True)

    def _say(self, final: bool) -> None:
        now = time.monotonic()
        self._last = now
        if self._done == self._said and not final:
            return
        self._said = self._done
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        fields: dict[str, Any] = {"task": self._task, "done": self._done, "total": self._total,
                                  "rate_per_s": round(rate, 1), **self._figures}
        if final:
            fields["elapsed_s"] = round(elapsed, 1)
        elif self._total and rate > 0:
            fields["eta_s"] = round(max(self._total - self._done, 0) / rate)
        log.info("%s", _describe(fields, self._unit, final), extra={"fields": fields})


def _describe(fields: dict[str, Any], unit: str, final: bool) -> str:
    done, total = fields["done"], fields["total"]
    count = f"{done}/{total} {unit} ({100 * done // total} %)" if total else f"{done} {unit}"
    text = f"{fields['task']}: {'done, ' if final else ''}{count}, {fields['rate_per_s']} {unit}/s"
    if "eta_s" in fields:
        text += f", about {fields['eta_s']} s left"
    if final:
        text += f", in {fields['elapsed_s']} s"
    named = {k: v for k, v in fields.items()
             if k not in ("task", "done", "total", "rate_per_s", "eta_s", "elapsed_s")}
    return text + "".join(f", {key} {value}" for key, value in named.items())


@contextmanager
def track(task: str, total: int | None = None, unit: str = "items", *,
          interval_s: float = 10.0, stream: TextIO | None = None) -> Iterator[Progress]:
    """Show the progress of ``task`` (a bar on a terminal, else lines) until the block ends.

    ``stream`` is where a bar is drawn (default stderr); the lines go through logging.
    """
    out = stream if stream is not None else sys.stderr
    shown: Progress = (_Bar(task, total, unit, out) if out.isatty()
                       else _Lines(task, total, unit, interval_s))
    try:
        yield shown
    finally:
        shown.close()
