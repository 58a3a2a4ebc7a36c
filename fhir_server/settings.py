"""One typed Settings object; every field can be set as an environment variable ``FHIR_SERVER_*``.

The command line (``fhir-server serve --port 9000``) overrides the environment, which overrides
the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PROJECT_DIR", "Settings"]

#: The project directory (the parent of the package), holding ``profiles/`` and ``terminology/``.
PROJECT_DIR = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Server configuration (see the configuration table in README.md)."""

    model_config = SettingsConfigDict(env_prefix="FHIR_SERVER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: Path = Path("./data")
    storage: str = Field(
        default="",
        description="Storage URL: sqlite:///path/to/file.sqlite3 (default: a file in data_dir).",
    )
    base_url: str = Field(
        default="",
        description="Public base URL of the FHIR endpoint; default http://host:port/fhir.",
    )
    max_body_bytes: int = 16 * 1024 * 1024
    max_bundle_entries: int = 1000
    referential_integrity: bool = True
    default_count: int = 20
    max_count: int = 1000
    #: A search still running after this many seconds is stopped (503, ``too-costly``).
    search_timeout_s: float = 30.0
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_s: float = 10.0
    #: Page cache of each SQLite connection, in MiB (grows only as pages are used). Writes
    #: into a large store insert index rows at random places: a cache that holds the hot
    #: index pages took the 1M-resource push from ~86 to ~113 Bundles/s (docs/performance.md).
    sqlite_cache_mb: int = 512
    seed_search_parameters: bool = True
    profiles_dir: Path = PROJECT_DIR / "profiles"
    terminology_dir: Path = PROJECT_DIR / "terminology"
    auth: Literal["on", "off"] = "on"
    trusted_issuers_file: Path | None = Field(
        default=None, description="JSON list of trusted token issuers (see docs/security.md)"
    )
    audit: bool = True
    validation: Literal["enforce", "warn", "off"] = "enforce"
    validation_overrides: dict[str, Literal["enforce", "warn", "off"]] = Field(
        default_factory=dict,
        description="Per-type modes as JSON, e.g. {\"Observation\": \"warn\"}",
    )
    log_level: str = "info"
    #: ``json``: one JSON object per line from every process; ``text``: for a developer.
    log_format: Literal["json", "text"] = "json"
    #: Off a terminal, long commands (load, reindex...) write a progress line this often.
    progress_interval_s: float = 10.0
    #: Who may read ``/metrics``: ``loopback`` (127.0.0.0/8 and ::1 only), ``token`` (a
    #: bearer ``metrics_token`` from anywhere), ``open`` (anyone) or ``off`` (404).
    metrics: Literal["loopback", "token", "open", "off"] = "loopback"
    metrics_token: str = ""
    #: A pushed resource naming a facility code missing from the facility registry (loaded by
    #: ``fhir-server facilities load``): a warning, an error (422), or not checked. The check
    #: applies once the registry holds a facility.
    unknown_facility: Literal["warn", "error", "off"] = "warn"

    def validation_mode(self, resource_type: str) -> str:
        """Return the profile validation mode (enforce, warn, off) for a resource type."""
        return self.validation_overrides.get(resource_type, self.validation)

    def storage_url(self) -> str:
        """Return the storage URL, defaulting to the SQLite file inside the data directory."""
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.data_dir / 'fhir.sqlite3').as_posix()}"

    def public_base_url(self) -> str:
        """Return the FHIR base URL used in links, Location headers and token audiences."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
