"""``emgd run``: the daemon. ``--embedded`` runs it on the embedded PostgreSQL for local uploads."""

from __future__ import annotations

import argparse

from daemon.dbconnect import add_database_arguments, fail


def configure(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=None, help="jobs at once")
    parser.add_argument("--health-port", type=int, default=None, help="0 = no health server")
    parser.add_argument(
        "--poll-only", action="store_true", default=None, help="do not LISTEN; poll only"
    )


def main(args: argparse.Namespace) -> int:
    from daemon.runtime import embedded_database, exit_if_threads_linger, run_loop, serve
    from daemon.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            database_url=args.database_url,
            embedded=args.embedded,
            concurrency=args.concurrency,
            health_port=args.health_port,
            listen=False if args.poll_only else None,
        )
    except SettingsError as exc:
        return fail(str(exc))
    if settings.embedded:
        with embedded_database(settings) as dsn:
            print(f"emgd: embedded database at {dsn}", flush=True)
            code = run_loop(serve(settings, dsn))
    else:
        assert settings.database_url is not None  # load_settings refuses none without --embedded
        code = run_loop(serve(settings, settings.database_url))
    # The daemon has stopped (and said so): a thread stuck in the kernel must not keep the
    # process alive past that (see daemon/runtime.py).
    exit_if_threads_linger(code)
    return code
