"""Logging set-up, shared by the command line, uvicorn and each server worker process.

Every record is one line on stderr, in one of two formats (``FHIR_SERVER_LOG_FORMAT``):

- ``json`` (the default): one JSON object per line, ``{"time", "level", "logger", "pid",
  "message", ...}`` plus the record's structured ``fields`` (``extra={"fields": {...}}``),
  and ``exception`` with the stack trace when there is one;
- ``text``: ``time LEVEL logger message`` for a developer's terminal (the message says what
  the fields say; they are not repeated).

uvicorn's own lines (start-up, shutdown, errors) go through the same handler: ``serve`` hands
uvicorn :func:`uvicorn_log_config`, which uvicorn applies in the supervisor and in each worker
process before anything logs. ``uvicorn --workers N`` starts its workers as fresh processes,
so :func:`configure_logging` also runs in ``create_app`` (it does nothing where a handler is
already installed).

Every request writes one access line, so a record's cost matters: the records skip looking
up thread and process names, which no line shows, and time stamps reuse their formatted second.
Nothing here decides what is logged; callers log no health data (resource content, query
strings, tokens) and the access line carries only the request's coordinates (see
``api.middleware``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Literal

import orjson

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure_logging",
           "uvicorn_log_config"]

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _SecondCache:
    """Formats each second of ``time.localtime`` once (a strftime costs about 2 µs)."""

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._second = -1
        self._text = ""

    def text(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._pattern, time.localtime(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """``YYYY-MM-DD HH:MM:SS,mmm LEVEL logger message`` (local time)."""

    def __init__(self, fmt: str = _TEXT) -> None:
        super().__init__(fmt)
        self._seconds = _SecondCache("%Y-%m-%d %H:%M:%S")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._seconds.text(record.created)},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601 with the UTC offset), level, logger, pid,
    message, the record's ``fields``, and ``exception`` (the formatted stack trace)."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache("%Y-%m-%dT%H:%M:%S")
        self._offset = time.strftime("%z")
        self._offset = f"{self._offset[:3]}:{self._offset[3:]}"
        self._pid = os.getpid()  # the formatter is built in each process (dictConfig)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": f"{self._seconds.text(record.created)}.{int(record.msecs):03d}{self._offset}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": self._pid,
            "message": record.getMessage(),
        }
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def _formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format is json or text, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: str = "json") -> None:
    """Install one stderr handler in ``log_format`` on the root logger, at ``level``.

    Does nothing when the root logger already has handlers (a second call in the same
    process, uvicorn having applied :func:`uvicorn_log_config`, or an embedding application
    that configured logging itself). Raises ``ValueError`` for an unknown format.
    """
    formatter = _formatter(log_format)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())


def uvicorn_log_config(level: str, log_format: str = "json") -> dict[str, Any]:
    """The ``log_config`` for ``uvicorn.run``: the root handler of :func:`configure_logging`,
    and uvicorn's loggers propagating to it instead of printing their own format."""
    _formatter(log_format)  # refuse an unknown format here, in the parent
    factory = "JsonFormatter" if log_format == "json" else "TextFormatter"
    uvicorn_loggers = {name: {"handlers": [], "propagate": True, "level": level.upper()}
                       for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"fhir_server.logs.{factory}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": uvicorn_loggers,
    }
