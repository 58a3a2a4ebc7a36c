"""Where an export's NDJSON goes: the output writer, pluggable behind ``ExportWriter``.

``LocalFiles`` (the default) writes one folder per job under ``<data dir>/exports``: for
each stream (a resource type, ``output`` for files organized by patient, ``error`` for the
OperationOutcomes of the error file) numbered parts ``<stream>-<n>.ndjson`` of at most
``per_file`` lines each. Lines are appended as they come (a page at a time: memory stays
bounded whatever the export's size); a checkpoint syncs the open parts to disk and records
their sizes, and a resumed run cuts each part back to its checkpointed size, so a page
written after the last checkpoint is written again, once. An object-store writer would keep
the same contract with multipart uploads (docs/bulk-export.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = ["ERROR_STREAM", "ExportWriter", "LocalFiles", "Part", "read_chunks"]

#: The stream of the error file (OperationOutcomes).
ERROR_STREAM = "error"
_CHUNK = 256 * 1024


@dataclass
class Part:
    """One output file: its stream, name, line count and size in bytes."""

    stream: str
    name: str
    count: int = 0
    size: int = 0

    def to_json(self) -> list[Any]:
        return [self.stream, self.name, self.count, self.size]


class ExportWriter(Protocol):
    """Where an export writes: streams of NDJSON lines, made durable at checkpoints."""

    def restore(self, state: list[list[Any]] | None) -> None:
        """Return to a checkpoint's state (None: start empty)."""
        ...

    def write(self, stream: str, lines: Sequence[bytes], together: bool = False) -> None:
        """Append lines (each one JSON value and its newline) to a stream; ``together``:
        in one file (a patient's block)."""
        ...

    async def sync(self) -> list[list[Any]]:
        """Make everything written durable; return the state a resumed run restores."""
        ...

    def parts(self) -> list[Part]:
        """The files written, in order."""
        ...

    def discard(self) -> None:
        """Remove everything the export wrote."""
        ...


class LocalFiles:
    """``ExportWriter`` on a local folder (see the module)."""

    def __init__(self, folder: Path, per_file: int) -> None:
        self.folder = folder
        self.per_file = per_file
        self._parts: list[Part] = []
        self._open: dict[str, tuple[Part, IO[bytes]]] = {}

    def restore(self, state: list[list[Any]] | None) -> None:
        """Cut the parts back to the checkpoint's sizes and drop any part made after it."""
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._parts = [Part(str(s), str(n), int(c), int(z)) for s, n, c, z in state or []]
        kept = {part.name for part in self._parts}
        for path in self.folder.glob("*.ndjson"):
            if path.name not in kept:
                path.unlink()
        for part in self._parts:
            with (self.folder / part.name).open("ab") as handle:
                handle.truncate(part.size)

    def _part_of(self, stream: str, room: int = 1) -> tuple[Part, IO[bytes]]:
        """The part to write ``room`` more lines of a stream to."""
        current = self._open.get(stream)
        if current is not None and (current[0].count == 0
                                    or current[0].count + room <= self.per_file):
            return current
        if current is not None:
            current[1].close()
        last = next((p for p in reversed(self._parts) if p.stream == stream), None)
        if last is None or (last.count and last.count + room > self.per_file):
            number = sum(1 for p in self._parts if p.stream == stream) + 1
            last = Part(stream, f"{stream}-{number}.ndjson")
            self._parts.append(last)
        handle = (self.folder / last.name).open("ab")
        self._open[stream] = (last, handle)
        return last, handle

    def write(self, stream: str, lines: Sequence[bytes], together: bool = False) -> None:
        """Append ``lines`` to the stream, starting a new part every ``per_file`` lines;
        ``together``: all in one part (a new one unless they fit), however many they are."""
        position = 0
        while position < len(lines):
            part, handle = self._part_of(stream, len(lines) if together else 1)
            room = len(lines) if together else self.per_file - part.count
            chunk = lines[position:position + room]
            data = b"".join(chunk)
            handle.write(data)
            part.count += len(chunk)
            part.size += len(data)
            position += len(chunk)

    async def sync(self) -> list[list[Any]]:
        """Flush and fsync the open parts (in a thread); return every part's state."""
        handles = [handle for _, handle in self._open.values()]
        for handle in handles:
            handle.flush()
        await asyncio.to_thread(_fsync_all, [handle.fileno() for handle in handles])
        return [part.to_json() for part in self._parts]

    def parts(self) -> list[Part]:
        """The parts written, in the order they were started."""
        return list(self._parts)

    def close(self) -> None:
        """Close the open parts."""
        for _, handle in self._open.values():
            handle.close()
        self._open = {}

    def discard(self) -> None:
        """Remove the folder and everything in it."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _fsync_all(descriptors: list[int]) -> None:
    for descriptor in descriptors:
        os.fsync(descriptor)


async def read_chunks(path: Path) -> AsyncIterator[bytes]:
    """The bytes of a file in chunks, each read in a thread (memory stays bounded)."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        handle.close()
