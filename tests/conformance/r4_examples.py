"""The official FHIR R4 examples (npm package ``hl7.fhir.r4.examples`` 4.0.1, 5,305 resources),
fetched once into a cache by the test set-up.

``examples_package()`` returns the cached tarball, fetching it with ``npm pack`` from the npm
registry the first time (about 19 MB); where npm or the registry cannot be had, the tests
that need it skip. ``FHIR_SERVER_TEST_CACHE`` names the cache directory (default
``~/.cache/fhir-server-tests``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
TARBALL = "hl7.fhir.r4.examples-4.0.1.tgz"
SHA1 = "537ea7db3f3c7b3575fe2eaa7808bad21261cca3"  # the registry's dist.shasum

#: Examples that break R4 itself, each refused for the reason given (the reference
#: validator reports the same errors): the server must refuse them, and only them.
R4_INVALID: dict[str, str] = {
    "Bundle-dataelements.json": "MSG_INVARIANT_BDL_7",
    "Bundle-v2-valuesets.json": "MSG_EMPTY_VALUE",
    "CodeSystem-v2-0550.json": "MSG_EMPTY_VALUE",
    "ImplementationGuide-fhir.json": "MSG_CARDINALITY",
    "ig-r4.json": "MSG_CARDINALITY",
    "Questionnaire-qs1.json": "MSG_CARDINALITY",
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json":
        "MSG_ID_INVALID",
    **{f"SearchParameter-{kind.lower()}-extensions-{kind}-{code}.json": "MSG_CARDINALITY"
       for kind in ("CodeSystem", "ValueSet")
       for code in ("author", "effective", "end", "keyword", "workflow")},
    "StructureDefinition-Definition.json": "MSG_INVARIANT_SDF_4",
    "StructureDefinition-Event.json": "MSG_INVARIANT_SDF_4",
    "StructureDefinition-FiveWs.json": "MSG_INVARIANT_SDF_4",
    "StructureDefinition-Request.json": "MSG_INVARIANT_SDF_4",
}


def cache_dir() -> Path:
    """Where downloaded test data is kept between runs."""
    default = Path.home() / ".cache" / "fhir-server-tests"
    return Path(os.environ.get("FHIR_SERVER_TEST_CACHE", default))


def _fetch(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the R4 examples package cannot be fetched")
    with tempfile.TemporaryDirectory() as work:
        try:
            subprocess.run([npm, "pack", PACKAGE, "--pack-destination", work], check=True,
                           capture_output=True, timeout=300, cwd=work)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"the R4 examples package could not be fetched: {exc}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(work) / TARBALL), target)


def examples_package() -> Path:
    """The cached tarball of the R4 examples (fetched on first use; checked by SHA-1)."""
    target = cache_dir() / TARBALL
    if not target.exists():
        _fetch(target)
    if hashlib.sha1(target.read_bytes()).hexdigest() != SHA1:
        target.unlink()
        pytest.fail(f"{target} was not the published package; removed, run again")
    return target


def examples(tarball: Path, wanted: Callable[[int, str], bool]) -> Iterator[tuple[str, bytes]]:
    """(file name, JSON bytes) of the example resources of the package for which
    ``wanted(position in name order, file name)`` holds."""
    with tarfile.open(tarball) as archive:
        members = sorted((m for m in archive.getmembers() if m.name.endswith(".json")
                          and not m.name.endswith(("/package.json", "/.index.json"))),
                         key=lambda m: m.name)
        for index, member in enumerate(members):
            name = member.name.rsplit("/", 1)[-1]
            if not wanted(index, name):
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                yield name, handle.read()
