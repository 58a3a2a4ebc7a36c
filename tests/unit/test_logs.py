"""The log set-up: the cached time stamp reads exactly as the standard one."""

from __future__ import annotations

import logging

from fhir_server.logs import _FORMAT, _Formatter


def test_time_stamps_match_the_standard_formatter() -> None:
    ours, standard = _Formatter(_FORMAT), logging.Formatter(_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.LogRecord("fhir_server.access", logging.INFO, __file__, 1, "x", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
