"""The database a CLI verb talks to: --database-url, the environment, or the embedded server."""

from __future__ import annotations

import argparse
import os
import sys


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: EMGD_DATABASE_URL, then DATABASE_URL)",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        default=None,
        help="use the embedded PostgreSQL in EMGD_EMBEDDED_DIR (default .emgd/pg)",
    )


def fail(message: str) -> int:
    """One clear line on stderr, exit code 2: how every verb reports a usage or setup problem."""
    print(f"emgd: {message}", file=sys.stderr)
    return 2


def plain_url(args: argparse.Namespace) -> str | None:
    """--database-url, else the first database variable settings would read (same names, order)."""
    from daemon.settings import env_names

    names = env_names("database_url")
    return args.database_url or next((os.environ[n] for n in names if os.environ.get(n)), None)
