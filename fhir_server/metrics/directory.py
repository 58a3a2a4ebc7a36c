"""The multiprocess directory of ``prometheus_client``, set up by ``fhir-server serve``.

With ``--workers N`` every request lands in one of N processes, and a scrape in one of them:
each process writes its figures to memory-mapped files in one directory
(``PROMETHEUS_MULTIPROC_DIR``) and the scrape sums them. The client reads that variable when it
is first imported, so :func:`prepare` runs in ``serve`` before any worker starts and before
this process imports it; the workers inherit the variable. The directory is emptied at each
start: figures of an earlier run would otherwise be added to this one's.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["MULTIPROCESS_ENV", "prepare"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(data_dir: Path) -> Path:
    """Empty (or create) ``<data_dir>/metrics`` and name it in the environment; return it.

    Raises ``RuntimeError`` if ``prometheus_client`` is already imported in this process:
    its metrics would then be this process's alone.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set")
    directory = data_dir / "metrics"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(directory.resolve())
    return directory
