"""Which database errors are worth retrying: the one place the daemon decides it.

PostgreSQL says what kind of error it raised in the first two characters of its SQLSTATE (the
class). Some classes describe the server or the connection, not the statement: the same statement
can succeed later, so the job is retried with backoff (and the claim loop, heartbeats and listener
simply try again). The others describe the data or the statement: retrying the same file cannot
help.

=====  ===========================  ==========  ============================================
class  name                         verdict     e.g.
=====  ===========================  ==========  ============================================
08     connection exception         transient   connection failure, cannot connect now
40     transaction rollback         transient   serialization failure, deadlock detected
53     insufficient resources       transient   disk full ("could not extend file"), out of
                                                memory, too many connections
57     operator intervention        transient   query canceled (statement timeout), admin
                                                shutdown, cannot connect now (starting up)
22     data exception               permanent   a value out of range for its column
23     integrity constraint         permanent   a check, foreign key or unique violation
other  (P0001 raise, 42 ...)        permanent   a validation trigger refusing the results
=====  ===========================  ==========  ============================================

Client-side trouble (the socket dropped, a timeout, asyncpg's ``InterfaceError`` such as "the
connection is closed") is transient as well: it carries no SQLSTATE because the server never
answered. So is asyncpg's ``InternalClientError`` "cannot switch to state 12; another operation
is in progress": a pooled connection whose server process has just been told to terminate
(``pg_ctl restart -m fast``) has received the FATAL message but not yet the close, and the next
query on it fails that way.

Public API
----------
``TRANSIENT_SQLSTATE_CLASSES``: the classes above that are transient.
``TRANSIENT_DB_ERRORS``: the same as a tuple of exception types, for ``except`` clauses (asyncpg
    raises a subclass of its class's base exception for every SQLSTATE, known or not).
``is_transient(exc) -> bool``: the verdict for any exception.
``DATABASE_ERRORS``: every exception type a database call raises (transient or not).
``database_unavailable(exc) -> bool``: ``is_transient``, except a dropped database: what the
    daemon's loops wait out rather than stop for.
``describe(exc) -> str``: a short reason for ``sessions.error`` (message plus SQLSTATE).
"""

from __future__ import annotations

import asyncio

import asyncpg
from asyncpg import exceptions as pgerr

__all__ = [
    "DATABASE_ERRORS",
    "TRANSIENT_DB_ERRORS",
    "TRANSIENT_SQLSTATE_CLASSES",
    "database_unavailable",
    "describe",
    "is_transient",
]

TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,  # includes "connection is closed" / "connection was closed"
    asyncpg.InternalClientError,  # a query on a connection the server is closing
    pgerr.PostgresConnectionError,  # 08
    pgerr.TransactionRollbackError,  # 40
    pgerr.InsufficientResourcesError,  # 53
    pgerr.OperatorInterventionError,  # 57
)


# Everything a database call can raise, transient or not: what best-effort clean-up (a release
# on the way out) swallows, and what a reconnecting loop catches before asking is_transient.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError)


def sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def is_transient(exc: BaseException) -> bool:
    """True when the same statement may well succeed later; False when the data is at fault."""
    code = sqlstate(exc)
    if code is not None:
        return code[:2] in TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, TRANSIENT_DB_ERRORS)


def database_unavailable(exc: BaseException) -> bool:
    """Trouble that waiting cures: transient, and not a dropped database (which never returns)."""
    if isinstance(exc, asyncpg.DatabaseDroppedError):
        return False
    return is_transient(exc)


def describe(exc: BaseException) -> str:
    """``message (SQLSTATE xxxxx)``, or the exception's repr when the server never answered."""
    code = sqlstate(exc)
    if code is None:
        return str(exc) or repr(exc)
    return f"{exc} (SQLSTATE {code})"
