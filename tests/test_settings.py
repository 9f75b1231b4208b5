"""Settings: environment names, defaults, derived values and readable validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from daemon.settings import Settings, SettingsError, env_names, load_settings

DB = "postgresql://postgres@127.0.0.1:5432/emgd"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test starts from an environment with none of the daemon's variables."""
    for name in list(os.environ):
        if name.startswith(("EMGD_", "SUPABASE_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_with_only_a_database_url(clean_env):
    clean_env.setenv("EMGD_DATABASE_URL", DB)
    s = load_settings()
    assert s.database_url == DB
    assert s.storage_backend == "local"
    assert s.local_storage_dir == Path(".emgd/storage")
    assert (s.concurrency, s.health_host, s.health_port) == (2, "0.0.0.0", 8080)
    assert (s.poll_interval, s.lease_seconds, s.shutdown_grace) == (2.0, 30.0, 20.0)
    assert s.heartbeat_interval == pytest.approx(10.0)  # derived: a third of the lease
    assert (s.job_timeout, s.job_memory_mb) == (60.0, 2048)
    assert s.listen is True and s.embedded is False
    assert (s.log_format, s.log_level) == ("auto", "info")
    assert s.embedded_dir == Path(".emgd/pg")


def test_settings_are_frozen(clean_env):
    s = load_settings(database_url=DB)
    with pytest.raises(pydantic.ValidationError):
        s.concurrency = 9


def test_platform_names_are_read_and_emgd_names_win(clean_env):
    clean_env.setenv("DATABASE_URL", DB)
    clean_env.setenv("SUPABASE_URL", "https://abc.supabase.co")
    clean_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-key")
    clean_env.setenv("EMGD_STORAGE_BACKEND", "SUPABASE")
    s = load_settings()
    assert s.database_url == DB
    assert s.storage_backend == "supabase"
    assert s.supabase_url == "https://abc.supabase.co"
    assert s.supabase_service_role_key.get_secret_value() == "service-key"
    assert "service-key" not in repr(s)

    clean_env.setenv("EMGD_DATABASE_URL", "postgresql://other/db")
    clean_env.setenv("EMGD_SUPABASE_URL", "http://127.0.0.1:54321")
    s = load_settings()
    assert s.database_url == "postgresql://other/db"
    assert s.supabase_url == "http://127.0.0.1:54321"


def test_env_values_are_parsed(clean_env):
    for name, value in {
        "EMGD_DATABASE_URL": DB,
        "EMGD_CONCURRENCY": "8",
        "EMGD_HEALTH_PORT": "0",
        "EMGD_POLL_INTERVAL": "0.5",
        "EMGD_LEASE_SECONDS": "12",
        "EMGD_LISTEN": "false",
        "EMGD_LOG_FORMAT": "JSON",
        "EMGD_LOG_LEVEL": "DEBUG",
        "EMGD_LOCAL_STORAGE_DIR": "/srv/c3d",
    }.items():
        clean_env.setenv(name, value)
    s = load_settings()
    assert (s.concurrency, s.health_port, s.poll_interval) == (8, 0, 0.5)
    assert s.heartbeat_interval == pytest.approx(4.0)
    assert s.listen is False
    assert (s.log_format, s.log_level, s.log_level_number) == ("json", "debug", 10)
    assert s.local_storage_dir == Path("/srv/c3d")


def test_overrides_win_and_none_means_not_given(clean_env):
    clean_env.setenv("EMGD_DATABASE_URL", DB)
    clean_env.setenv("EMGD_CONCURRENCY", "3")
    assert load_settings(concurrency=None).concurrency == 3
    assert load_settings(concurrency=7).concurrency == 7
    with pytest.raises(SettingsError, match="concurency: unknown setting"):
        load_settings(concurency=7)


def test_embedded_mode_needs_no_database_url(clean_env):
    s = load_settings(embedded=True)
    assert s.database_url is None and s.embedded


def test_missing_database_url_is_named(clean_env):
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "EMGD_DATABASE_URL / DATABASE_URL: required" in str(info.value)
    assert len(info.value.problems) == 1


def test_every_wrong_value_is_reported_once_by_its_env_name(clean_env):
    clean_env.setenv("EMGD_DATABASE_URL", DB)
    clean_env.setenv("EMGD_CONCURRENCY", "lots")
    clean_env.setenv("EMGD_HEALTH_PORT", "70000")
    clean_env.setenv("EMGD_STORAGE_BACKEND", "s3")
    clean_env.setenv("EMGD_POLL_INTERVAL", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    problems = info.value.problems
    assert len(problems) == 4, text
    assert any(p.startswith("EMGD_CONCURRENCY:") and "'lots'" in p for p in problems)
    assert any(p.startswith("EMGD_HEALTH_PORT:") and "65535" in p for p in problems)
    assert any(p.startswith("EMGD_STORAGE_BACKEND:") and "'s3'" in p for p in problems)
    assert any(p.startswith("EMGD_POLL_INTERVAL:") for p in problems)
    assert "pydantic" not in text and "errors.pydantic.dev" not in text


def test_supabase_backend_requires_url_and_key_without_echoing_secrets(clean_env):
    clean_env.setenv("EMGD_DATABASE_URL", "postgresql://u:hunter2@db/x")
    clean_env.setenv("EMGD_STORAGE_BACKEND", "supabase")
    with pytest.raises(SettingsError) as info:
        load_settings()
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("EMGD_SUPABASE_URL / SUPABASE_URL: required")
    assert problems[1].startswith(
        "EMGD_SUPABASE_SERVICE_ROLE_KEY / SUPABASE_SERVICE_ROLE_KEY: required"
    )
    # a bad database URL is reported without its password
    clean_env.setenv("EMGD_DATABASE_URL", "mysql://u:hunter2@db/x")
    with pytest.raises(SettingsError) as info:
        load_settings(storage_backend="local")
    assert "must start with postgresql://" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_heartbeat_must_be_shorter_than_the_lease(clean_env):
    with pytest.raises(SettingsError, match="EMGD_HEARTBEAT_INTERVAL: must be below"):
        load_settings(database_url=DB, lease_seconds=5, heartbeat_interval=5)
    s = load_settings(database_url=DB, lease_seconds=5, heartbeat_interval=1)
    assert s.heartbeat_interval == 1


def test_env_names_helper():
    assert env_names("database_url") == ["EMGD_DATABASE_URL", "DATABASE_URL"]
    assert env_names("concurrency") == ["EMGD_CONCURRENCY"]
    assert set(Settings.model_fields) >= {"job_timeout", "job_memory_mb", "embedded_dir"}
