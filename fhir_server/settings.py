"""One typed Settings object; every field can be set as an environment variable ``FHIR_SERVER_*``.

The command line (``fhir-server serve --port 9000``) overrides the environment, which overrides
the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fhir_server.search.model import SearchLimits

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
    #: Bounds on one search (docs/search.md, "Limits"): name=value pairs (repetitions
    #: included), ORed values of one parameter, ``_sort`` keys, ``_include``/``_revinclude``
    #: parameters, and the depth of a chain or of nested ``_has``.
    search_max_parameters: int = 64
    search_max_values: int = 200
    search_max_sort_keys: int = 8
    search_max_includes: int = 16
    search_max_chain_depth: int = 4
    #: The longest string element a written resource may hold, in characters (R4's own
    #: bound for a string, 1024 * 1024); base64Binary elements are bounded by the body size.
    max_string_chars: int = 1024 * 1024
    #: Origins allowed to call the API from a browser (CORS); empty: CORS off.
    cors_origins: list[str] = Field(default_factory=list)
    #: A search still running after this many seconds is stopped (503, ``too-costly``).
    search_timeout_s: float = 30.0
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_s: float = 10.0
    #: The memory one worker process may hold, in MiB: the embedded store's page caches and
    #: statement memory get all of it but a fixed part for Python (``sqlite.memory``), half of
    #: it the writer's (hot index pages make writes to a large store faster), an eighth each
    #: reading connection's, and the whole as SQLite's heap limit (docs/operations.md).
    worker_memory_mb: int = 1024
    seed_search_parameters: bool = True
    profiles_dir: Path = PROJECT_DIR / "profiles"
    terminology_dir: Path = PROJECT_DIR / "terminology"
    auth: Literal["on", "off"] = "on"
    trusted_issuers_file: Path | None = Field(
        default=None, description="JSON list of trusted token issuers (see docs/security.md)"
    )
    #: SMART App Launch (docs/security.md): the OpenID Connect provider citizens sign in with.
    identity_issuer: str = Field(
        default="", description="Issuer URL of the upstream OpenID Connect provider (VNeID...)"
    )
    identity_client_id: str = ""
    identity_client_secret: str = ""
    #: The id_token claim that carries the person's CCCD (12-digit citizen identity number).
    identity_cccd_claim: str = "cccd"
    identity_scope: str = "openid"
    #: The built-in identity provider page (``/dev-idp``): DEVELOPMENT AND TESTS ONLY.
    dev_identity_provider: bool = False
    #: Lifetimes, in seconds, of what the authorization server issues.
    access_token_ttl: int = 300
    refresh_token_ttl: int = 30 * 24 * 3600
    authorization_code_ttl: int = 60
    sign_in_ttl: int = 900
    #: RFC 7591 dynamic client registration (``POST /fhir/auth/register``).
    dynamic_registration: bool = False
    audit: bool = True
    #: Consent (docs/consent.md): whether patients' Consents govern what clinicians and
    #: facilities read; the types they read without one; the clients of national operators
    #: that read only under a ``research`` Consent; how long a break-the-glass lasts; the
    #: rules that label sensitive data when it is written (a JSON file; none: the default).
    consent_enforced: bool = True
    consent_open_types: list[str] = Field(default_factory=lambda: ["Patient"])
    consent_secondary_use_clients: list[str] = Field(default_factory=list)
    break_glass_minutes: int = Field(default=60, ge=1, le=24 * 60)
    consent_labels_file: Path | None = None
    validation: Literal["enforce", "warn", "off"] = "enforce"
    #: Severity of an address's district or commune code that no list of its date holds
    #: (docs/geography.md); a unit not in force on that date is always an error.
    unknown_unit_code: Literal["error", "warning"] = "error"
    validation_overrides: dict[str, Literal["enforce", "warn", "off"]] = Field(
        default_factory=dict,
        description="Per-type modes as JSON, e.g. {\"Observation\": \"warn\"}",
    )
    log_level: str = "info"
    #: Bulk export (docs/bulk-export.md): how long a finished export's files are kept, the
    #: share of its worker's event loop a running export may take (its pace), resources per
    #: search page and per NDJSON file, unfinished exports one client may have at once, and
    #: how often a running export records where it is (what a restart resumes from).
    export_expiry_s: int = 24 * 3600
    export_cpu_share: float = 0.5
    export_page_size: int = 500
    export_file_resources: int = 100_000
    export_jobs_per_client: int = 4
    export_checkpoint_s: float = 2.0
    #: Background jobs: how often each worker looks for work, and how long a job's lease
    #: lasts without a checkpoint (a job whose process died on another host waits for it).
    jobs_poll_s: float = 1.0
    jobs_lease_s: float = 30.0
    #: Digital signatures on what is written (docs/signatures.md): ``off`` checks nothing,
    #: ``record`` checks every signature and keeps the proof, ``enforce`` also refuses (422)
    #: what carries a signature that does not verify.
    signature_verification: Literal["off", "record", "enforce"] = "record"
    #: The trust list (JSON): the roots, intermediates, CRLs and OCSP responses signers are
    #: judged by.
    signature_trust_list: Path | None = None
    #: The server's own signing key (PEM, unencrypted) and its certificate chain (PEM, the
    #: key's certificate first): with both set, $summary and $document are signed.
    signature_key_file: Path | None = None
    signature_certificate_file: Path | None = None
    #: Subscriptions (docs/subscriptions.md): delivery of notifications in the background.
    subscriptions: bool = True
    #: Rest-hook endpoints must be https:// unless this is on (tests, development).
    subscription_allow_http: bool = False
    #: Endpoints on loopback, private, link-local or reserved addresses are refused unless
    #: this is on (an endpoint inside the operator's own network).
    subscription_allow_private_endpoints: bool = False
    #: A failing rest-hook is retried with exponential back-off (from
    #: ``subscription_retry_first_s``, at most ``subscription_retry_max_interval_s`` apart)
    #: for this long, then the subscription goes to ``error`` with the reason.
    subscription_retry_window_s: float = 24 * 3600.0
    subscription_retry_first_s: float = 2.0
    subscription_retry_max_interval_s: float = 900.0
    #: How long a handshake is retried before the subscription goes to ``error``.
    subscription_handshake_window_s: float = 300.0
    #: Events are kept this long for ``$events`` (and for a subscriber that was away).
    subscription_event_retention_days: float = 7.0
    #: How often each worker process looks for notifications to send.
    subscription_poll_s: float = 0.25
    #: Lifetime of a ``$get-ws-binding-token`` token, in seconds.
    subscription_ws_token_ttl_s: int = 600
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

    def search_limits(self) -> SearchLimits:
        """Return the bounds of one search (the ``search_max_*`` settings)."""
        return SearchLimits(self.search_max_parameters, self.search_max_values,
                            self.search_max_sort_keys, self.search_max_includes,
                            self.search_max_chain_depth)

    def storage_url(self) -> str:
        """Return the storage URL, defaulting to the SQLite file inside the data directory."""
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.data_dir / 'fhir.sqlite3').as_posix()}"

    def app_launch_enabled(self) -> bool:
        """Whether citizens can sign in: an upstream provider or the development one is set."""
        return bool(self.identity_issuer) or self.dev_identity_provider

    def public_base_url(self) -> str:
        """Return the FHIR base URL used in links, Location headers and token audiences."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
