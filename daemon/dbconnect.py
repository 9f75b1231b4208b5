"""The database a CLI verb talks to: --database-url, the environment, or the embedded server.

Every verb that needs a database declares its options with ``add_database_arguments`` (the one
declaration) and opens it with ``database(args)``. A URL comes from ``--database-url``, else the
variables settings reads (``EMGD_DATABASE_URL``, then ``DATABASE_URL``). The embedded PostgreSQL
(``EMGD_EMBEDDED_DIR``, default ``.emgd/pg`` in the current folder) is used only when asked for
with ``--embedded`` (or ``EMGD_EMBEDDED=true``, as for ``emgd run``): a verb given neither refuses
in one sentence rather than quietly starting a server of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: EMGD_DATABASE_URL, then DATABASE_URL); use a direct "
        "connection, not a transaction pooler",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        default=None,
        help="use the embedded PostgreSQL in EMGD_EMBEDDED_DIR (default .emgd/pg), started "
        "and migrated on demand",
    )


class NoDatabaseError(RuntimeError):
    """Neither a database URL nor ``--embedded``: the verb has nothing to talk to."""


def fail(message: str) -> int:
    """One clear line on stderr, exit code 2: how every verb reports a usage or setup problem."""
    print(f"emgd: {message}", file=sys.stderr)
    return 2


def _env(field: str) -> str | None:
    """The first non-empty variable settings would read for ``field`` (same names, same order)."""
    from daemon.settings import env_names

    return next((os.environ[n] for n in env_names(field) if os.environ.get(n)), None)


def plain_url(args: argparse.Namespace) -> str | None:
    """--database-url, else the first database variable settings would read."""
    return getattr(args, "database_url", None) or _env("database_url")


def wants_embedded(args: argparse.Namespace) -> bool:
    """--embedded, else EMGD_EMBEDDED read the way settings reads a boolean."""
    if getattr(args, "embedded", None):
        return True
    raw = _env("embedded")
    if raw is None:
        return False
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(bool).validate_python(raw)
    except ValidationError:
        raise NoDatabaseError(f"EMGD_EMBEDDED must be true or false (got {raw!r})") from None


def embedded_dir() -> Path:
    from daemon.settings import Settings

    raw = _env("embedded_dir")
    return Path(raw) if raw else Settings.model_fields["embedded_dir"].default


def no_database_message() -> str:
    from daemon.settings import env_names

    names = " or ".join(env_names("database_url"))
    return (
        f"no database given: pass --database-url or set {names}, or pass --embedded to use "
        f"the embedded PostgreSQL in {embedded_dir()}"
    )


@contextlib.contextmanager
def database(args: argparse.Namespace, *, migrate: bool = True) -> Iterator[str]:
    """Yield the DSN this verb talks to (see the module docstring).

    With ``--embedded`` the server is started for the duration (or attached to, if a daemon runs
    on the same folder) and, when ``migrate``, brought up to date with the stand-in and every
    migration first. Raises ``NoDatabaseError`` when neither a URL nor ``--embedded`` was given.
    """
    embedded = wants_embedded(args)
    url = plain_url(args)
    if not embedded:
        if not url:
            raise NoDatabaseError(no_database_message())
        yield url
        return
    import asyncio

    from daemon.embedded import EmbeddedPostgres
    from daemon.migrate import apply_migrations

    server = EmbeddedPostgres(embedded_dir())
    dsn = server.start()
    try:
        if migrate:
            asyncio.run(apply_migrations(dsn, local_supabase=True))
        yield dsn
    finally:
        server.stop()
