"""The ``emgd`` command line: one verb per operator task.

Each verb lives in its own module exposing ``configure(parser)`` and ``main(args) -> int``; this
module only parses arguments, configures logging once and dispatches, so ``emgd analyze`` never
imports asyncpg and ``emgd --help`` stays fast. Every verb that talks to a database takes
``--database-url`` and ``--embedded`` from ``daemon.dbconnect.add_database_arguments``, the one
declaration, so all of them offer the same options and read the same variables.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "run": ("daemon.cmd_run", "run the daemon: listen, claim, analyse, commit"),
    "migrate": ("daemon.migrate", "apply the database migrations (idempotent)"),
    "check": (
        "daemon.cmd_check",
        "exit 0 when the daemon's /readyz answers 200 (Docker HEALTHCHECK)",
    ),
    "status": ("daemon.cmd_status", "queue depth by state, oldest pending, recent failures"),
    "requeue": ("daemon.cmd_requeue", "requeue jobs (wraps emgd.requeue* SQL functions)"),
    "upload": ("daemon.cmd_upload", "store a C3D file the way Supabase Storage does (local mode)"),
    "analyze": ("daemon.cmd_analyze", "analyse one C3D file and print the result"),
    "demo": (
        "daemon.cmd_demo",
        "embedded database, synthetic uploads, process them, print results",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emgd", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=None,
        help="log rendering (default: EMGD_LOG_FORMAT or auto: json off a terminal)",
    )
    parser.add_argument(
        "--log-level", default=None, help="log level (default: EMGD_LOG_LEVEL or info)"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module_name, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        importlib.import_module(module_name).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from daemon import logs

    logs.configure(args.log_format, args.log_level)
    module = importlib.import_module(VERBS[args.verb][0])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
