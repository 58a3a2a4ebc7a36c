"""Worker processes end with the process that started them.

``fhir-server serve --workers N`` runs a supervisor that spawns N uvicorn workers. A worker
does not notice its supervisor's end: killed with ``kill -9`` (or by the OOM killer), the
supervisor left its workers serving, holding the port, so a restart could not bind it and an
operator had servers running that nothing supervised. The supervisor names itself in
``FHIR_SERVER_SUPERVISOR_PID``; a worker whose parent it is asks the kernel (Linux
``PR_SET_PDEATHSIG``) for SIGTERM when that parent ends, and shuts down as uvicorn does on
SIGTERM: requests in flight are answered, the store closes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

__all__ = ["SUPERVISOR_ENV", "follow_supervisor"]

SUPERVISOR_ENV = "FHIR_SERVER_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("fhir_server")


def follow_supervisor() -> None:
    """In a worker of ``serve``, arrange to end with the supervisor; elsewhere do nothing."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit() or os.getpid() == int(supervisor):
        return  # not a spawned worker (`serve` in one process, tests, the loader)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("cannot follow the supervisor: prctl errno %d", ctypes.get_errno())
        return
    if os.getppid() != int(supervisor):  # it ended before (or while) the worker started
        os.kill(os.getpid(), signal.SIGTERM)
