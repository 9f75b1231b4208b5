"""The daemon's settings: one frozen object, read from the environment once at start.

Public API
----------
``Settings``
    Frozen pydantic-settings model. Environment variables use the prefix ``EMGD_`` (e.g.
    ``EMGD_CONCURRENCY``); a few also answer to the names Supabase and Heroku-style platforms set:
    ``DATABASE_URL``, ``SUPABASE_URL``, ``SUPABASE_SERVICE_ROLE_KEY``.
``load_settings(**overrides) -> Settings``
    Builds the object; keyword overrides (field names) win over the environment, and an override
    of ``None`` means "not given" so CLI flags can be passed through untouched. Raises
    ``SettingsError`` whose ``str`` lists every missing or wrong variable, one per line, by its
    environment name (never echoing secrets); ``.problems`` holds the same lines as a list.

Derived and cross-field rules (checked by ``load_settings`` only):
- ``heartbeat_interval`` defaults to ``lease_seconds / 3`` and must stay below ``lease_seconds``;
- ``database_url`` is required unless ``embedded`` is true (the embedded server provides one);
- ``supabase_url`` and ``supabase_service_role_key`` are required when ``storage_backend`` is
  ``supabase``.
``health_port = 0`` means "no health server" (the runner skips it), not "pick a free port".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "env_names", "load_settings"]


def _env(field: str, *extra: str) -> AliasChoices:
    # The EMGD_ name first: an explicit EMGD_ value beats a platform-wide one.
    return AliasChoices(f"EMGD_{field.upper()}", *extra, field)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EMGD_",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,
        extra="ignore",
    )

    database_url: str | None = Field(None, validation_alias=_env("database_url", "DATABASE_URL"))
    storage_backend: Literal["supabase", "local"] = "local"
    local_storage_dir: Path = Path(".emgd/storage")
    supabase_url: str | None = Field(None, validation_alias=_env("supabase_url", "SUPABASE_URL"))
    supabase_service_role_key: SecretStr | None = Field(
        None, validation_alias=_env("supabase_service_role_key", "SUPABASE_SERVICE_ROLE_KEY")
    )
    # The service key must not cross a network in clear: plain http is refused unless the URL is
    # loopback or this is set (a private network the operator vouches for).
    allow_insecure_http: bool = False
    storage_timeout: float = Field(30.0, gt=0)
    # Total time one download may take, body included, retries included, on either backend: a
    # hung mount or a server that drips bytes must not hold a job (and its lease) forever.
    download_timeout: float = Field(120.0, gt=0)
    # Where a job's object is streamed while it is analysed (one file per job in flight, removed
    # when the job ends); the system's temporary folder when unset. Needs room for
    # EMGD_CONCURRENCY files of up to EMGD_MAX_FILE_MB.
    download_dir: Path | None = None
    concurrency: int = Field(2, ge=1, le=256)
    health_host: str = "0.0.0.0"
    health_port: int = Field(8080, ge=0, le=65535)
    poll_interval: float = Field(2.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_interval: float | None = Field(None, gt=0)
    shutdown_grace: float = Field(20.0, ge=0)
    job_timeout: float = Field(60.0, gt=0)
    job_memory_mb: int = Field(2048, ge=64)
    # Largest object the daemon downloads: a GHOSTLY session is a few MB; anything far larger is
    # not a recording and must not be read into memory.
    max_file_mb: float = Field(512.0, gt=0)
    # 'module:function' run in the analysis workers; tests and benchmarks point it elsewhere.
    analysis_target: str = Field("daemon.isolation:analyze_to_dict", pattern=r"^[\w.]+:\w+$")
    listen: bool = True
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    embedded: bool = False
    embedded_dir: Path = Path(".emgd/pg")

    @field_validator("storage_backend", "log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]


def env_names(field: str) -> list[str]:
    """The environment variable names a field is read from, preferred name first."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices if c != field]
    return [f"EMGD_{field.upper()}"]


class SettingsError(ValueError):
    """Invalid or missing settings; ``str`` is a readable list, one problem per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


_SECRET_FIELDS = {"database_url", "supabase_service_role_key"}


def _field_of(loc: tuple[Any, ...]) -> str | None:
    if not loc:
        return None
    head = str(loc[0])
    if head in Settings.model_fields:
        return head
    for name in Settings.model_fields:
        if head.upper() in (n.upper() for n in env_names(name)):
            return name
    return None


def _describe(err: ErrorDetails) -> str:
    field = _field_of(tuple(err.get("loc", ())))
    msg = str(err.get("msg", "invalid"))
    if field is None:
        return msg
    names = " / ".join(env_names(field))
    shown = "" if field in _SECRET_FIELDS else f" (got {err.get('input')!r})"
    return f"{names}: {msg}{shown}"


def _cross_check(s: Settings) -> list[str]:
    db = " / ".join(env_names("database_url"))
    url = " / ".join(env_names("supabase_url"))
    key = " / ".join(env_names("supabase_service_role_key"))
    problems = []
    if not s.embedded and not s.database_url:
        problems.append(f"{db}: required (a postgresql:// URL), unless EMGD_EMBEDDED=true")
    if s.database_url and not s.database_url.startswith(("postgresql://", "postgres://")):
        problems.append(f"{db}: must start with postgresql:// or postgres://")
    if s.storage_backend == "supabase":
        if not s.supabase_url:
            problems.append(f"{url}: required when EMGD_STORAGE_BACKEND=supabase")
        elif not s.supabase_url.startswith(("http://", "https://")):
            problems.append(f"{url}: must be an http(s) URL (got {s.supabase_url!r})")
        else:
            from daemon.storage import StorageError, check_storage_url

            try:
                check_storage_url(s.supabase_url, allow_insecure_http=s.allow_insecure_http)
            except StorageError as exc:
                problems.append(f"{url}: {exc}")
        secret = s.supabase_service_role_key
        if secret is None or not secret.get_secret_value():
            problems.append(f"{key}: required when EMGD_STORAGE_BACKEND=supabase")
    hb = s.heartbeat_interval if s.heartbeat_interval is not None else s.lease_seconds / 3
    if hb >= s.lease_seconds:
        problems.append(
            f"EMGD_HEARTBEAT_INTERVAL: must be below EMGD_LEASE_SECONDS ({s.lease_seconds:g}),"
            f" got {hb:g}"
        )
    return problems


# Settings that moved into the database, where every daemon and the SQL functions read the same
# value: a variable left in a deployment is refused rather than silently ignored.
MOVED_TO_DATABASE = {
    "EMGD_BUCKET": "the C3D bucket is emgd.config.bucket in the database"
    " (update emgd.config set bucket = '...'); the storage policies and the trigger read it there",
    "EMGD_MAX_ATTEMPTS": "the attempt limit is emgd.config.max_attempts in the database"
    " (update emgd.config set max_attempts = N); the daemon and the rescue both apply it there",
}


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (plus overrides) once and validate every rule; see module docstring."""
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise SettingsError([f"{k}: unknown setting" for k in unknown])
    moved = [
        f"{name}: no longer a setting; {why}"
        for name, why in MOVED_TO_DATABASE.items()
        if os.environ.get(name)
    ]
    if moved:
        raise SettingsError(moved)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise SettingsError([_describe(e) for e in exc.errors()]) from None
    problems = _cross_check(settings)
    if problems:
        raise SettingsError(problems)
    if settings.heartbeat_interval is None:
        settings = settings.model_copy(update={"heartbeat_interval": settings.lease_seconds / 3})
    return settings
