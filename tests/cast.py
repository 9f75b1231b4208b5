"""The cast of the access-rule tests (tests/test_rls.py, tests/test_therapist_schema.py).

Patient P with an active therapist T and an inactive one I, patient Q with therapist U, an admin
A, each with one session (SP, SQ); and the API roles anon and service_role. ``seed_cast`` creates
them (``seeded_world``: on a fresh database, with a module's extras), ``attempt`` runs an
operation as one of them and rolls it back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.dbutil import (
    as_user,
    assign,
    connect,
    make_session,
    make_user,
    rolled_back,
    run_sync,
)

ACTORS = [
    "patient",
    "other_patient",
    "therapist_assigned",
    "therapist_unassigned",
    "therapist_inactive",
    "admin",
    "anon",
    "service_role",
]
#: the user each actor is (anon and service_role are roles without a user)
ACTOR_USER = {
    "patient": "P",
    "other_patient": "Q",
    "therapist_assigned": "T",
    "therapist_unassigned": "U",
    "therapist_inactive": "I",
    "admin": "A",
}


@dataclass(frozen=True)
class World:
    url: str
    ids: dict[str, Any]


async def seed_cast(conn: asyncpg.Connection) -> dict[str, Any]:
    """The users, their therapists' assignments and one session each; their ids by letter."""
    ids: dict[str, Any] = {}
    for key, role in [
        ("P", "patient"),
        ("Q", "patient"),
        ("T", "therapist"),
        ("U", "therapist"),
        ("I", "therapist"),
        ("A", "admin"),
    ]:
        ids[key] = await make_user(conn, role)
    await assign(conn, ids["T"], ids["P"])
    await assign(conn, ids["I"], ids["P"], active=False)
    await assign(conn, ids["U"], ids["Q"])
    ids["SP"] = await make_session(conn, ids["P"], "p.c3d")
    ids["SQ"] = await make_session(conn, ids["Q"], "q.c3d")
    return ids


Operation = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[object]]


def seeded_world(
    url: str, extras: Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[None]]
) -> World:
    """The world on the fresh database at ``url``: the cast, then what ``extras`` adds (it may
    record more ids)."""

    async def seed() -> dict[str, Any]:
        conn = await connect(url)
        try:
            ids = await seed_cast(conn)
            await extras(conn, ids)
            return ids
        finally:
            await conn.close()

    return World(url, run_sync(seed))


async def attempt(world: World, actor: str, op: Operation) -> bool:
    """Run ``op(conn, ids)`` as ``actor`` and roll back; True when it was allowed."""
    ids = world.ids
    role = {"anon": "anon", "service_role": "service_role"}.get(actor, "authenticated")
    user = ids[ACTOR_USER[actor]] if actor in ACTOR_USER else None
    conn = await connect(world.url)
    try:
        async with rolled_back(conn), as_user(conn, user, role):
            return bool(await op(conn, ids))
    except asyncpg.InsufficientPrivilegeError:
        return False
    finally:
        await conn.close()


def affected(status: str) -> int:
    """Rows a command's status (``UPDATE 1``, ``DELETE 0``) says it touched."""
    return int(status.split()[-1])
