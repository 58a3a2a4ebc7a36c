"""Server-assigned ids: unguessable UUIDs that sort by the time they were made."""

from __future__ import annotations

import time
import uuid

from fhir_server.interactions.context import new_id
from fhir_server.resources import ID_PATTERN


def test_new_ids_are_version_7_uuids_and_valid_fhir_ids() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert ID_PATTERN.match(value) and str(parsed) == value
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_new_ids_start_with_the_millisecond_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(value).int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    earlier = [new_id() for _ in range(50)]
    time.sleep(0.002)
    later = [new_id() for _ in range(50)]
    assert max(earlier) < min(later)


def test_the_random_part_differs_within_one_millisecond() -> None:
    tails = {new_id()[15:] for _ in range(200)}  # after the time and the version digit
    assert len(tails) == 200


def test_threads_and_forked_processes_never_share_random_bytes() -> None:
    import os
    import threading

    new_id()  # this process has a block of random bytes read
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out
        os.write(write, "\n".join(new_id()[15:] for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    ours = {new_id()[15:] for _ in range(20)}
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    assert len(theirs) == 20 and not ours & theirs
    found: list[str] = []
    workers = [threading.Thread(target=lambda: found.extend(new_id()[15:] for _ in range(500)))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(set(found)) == len(found) == 2000
