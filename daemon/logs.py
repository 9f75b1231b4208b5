"""Logging set-up: structlog, configured once by the CLI.

Public API
----------
``configure(fmt: str | None = None, level: str | None = None) -> None``
    ``fmt`` is ``auto`` | ``json`` | ``console``; ``auto`` renders JSON when stderr is not a
    terminal (containers, log shippers) and coloured console lines when it is. ``None`` falls back
    to ``EMGD_LOG_FORMAT`` / ``EMGD_LOG_LEVEL`` and then to ``auto`` / ``info``. Calling it again
    reconfigures (tests rely on that). Context variables are merged into every event, so
    ``structlog.contextvars.bound_contextvars(job_id=...)`` puts the job id on every line logged
    while the job runs, from any module. Standard-library loggers (aiohttp, asyncpg) are routed
    through the same renderer so the output stays one format.

``redact(*secrets)``: strings never to appear in any log line (the service key, the database
    password); each occurrence is replaced by ``[redacted]`` in the rendered line. The runtime
    registers them at start.

Modules log with ``log = structlog.get_logger(__name__)`` and stable snake_case event names.

What is never logged: local variables (tracebacks carry frames and source lines only, in both
formats: a frame's locals hold file bytes, C3D metadata and lease tokens), file contents, C3D
metadata values, object names (a file name can name a patient) and secrets. Jobs are named by
their pseudonymous ids, ``job_id`` and ``session_id``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["configure", "redact"]

_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10}


def _resolve(fmt: str | None, level: str | None) -> tuple[str, int]:
    fmt = (fmt or os.environ.get("EMGD_LOG_FORMAT") or "auto").strip().lower()
    name = (level or os.environ.get("EMGD_LOG_LEVEL") or "info").strip().lower()
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console (got {fmt!r})")
    if name not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)} (got {name!r})")
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    return fmt, _LEVELS[name]


_SECRETS: set[str] = set()
_REDACTED = "[redacted]"


def redact(*secrets: str | None) -> None:
    """Never let these strings reach the log (short ones would redact ordinary words: ignored)."""
    _SECRETS.update(s for s in secrets if s and len(s) >= 8)


def _redacting(render: Processor) -> Processor:
    def processor(
        logger: WrappedLogger, method: str, event: EventDict
    ) -> str | bytes | bytearray | tuple[Any, ...] | Mapping[str, Any]:
        out = render(logger, method, event)
        if _SECRETS and isinstance(out, str):
            for secret in _SECRETS:
                out = out.replace(secret, _REDACTED)
        return out

    return processor


def configure(fmt: str | None = None, level: str | None = None) -> None:
    fmt, level_no = _resolve(fmt, level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # structlog's defaults put every frame's local variables into tracebacks (show_locals): the
    # bytes of the file being analysed, its metadata, the job's lease token. Frames only.
    if fmt == "json":
        tail: list[Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            _redacting(structlog.processors.JSONRenderer()),
        ]
    else:
        tail = [
            _redacting(
                structlog.dev.ConsoleRenderer(
                    colors=sys.stderr.isatty(),
                    exception_formatter=structlog.dev.plain_traceback,
                )
            )
        ]

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        # Resolved at call time, so a test's redirected stderr (capsys) is honoured.
        logger_factory=_StderrLoggerFactory(),
        # Not cached: a reconfigure (tests, `demo` switching format) must reach module loggers.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_emgd", False)]:
        root.removeHandler(old)
    handler._emgd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # Libraries are chatty at INFO (aiohttp access lines); our own events carry that detail.
    root.setLevel(max(level_no, logging.WARNING))


class _StderrLoggerFactory:
    def __call__(self, *args: object) -> structlog.PrintLogger:
        return structlog.PrintLogger(file=sys.stderr)
