"""Run the analysis in warm worker processes, so a hostile file costs one job, never the daemon.

The C3D reader is emg_core's own and checks every length a file promises, but the analysis still
runs native code (numpy, scipy) on whatever a file holds: an input nobody foresaw, or a bug, can
hang it, make it allocate gigabytes or crash the interpreter. And numpy work would stall the event
loop (heartbeats, health answers). Each job therefore runs in a separate, already warm worker
process with a wall-clock timeout and an address-space limit.

Public API
----------
``AnalysisPool(size, *, timeout_s, memory_mb, target=DEFAULT_TARGET, preload=DEFAULT_PRELOAD,
warmup=None)``
    ``async start()``: starts ``size`` workers and waits until each has imported ``target`` (and
    the ``preload`` modules) and run ``warmup`` ('module:function', no arguments, errors
    ignored; default: one small synthetic analysis when ``target`` is the default, so the first
    real job does not pay for lazy imports and caches); raises ``PoolError`` if a worker cannot
    start.
    ``async analyse(source: bytes | PathLike, *, name: str, options: dict) -> dict``: runs
    ``target(data, name, options)`` in an idle worker (waiting for one if all are busy) and
    returns its dict (``SessionResult.to_dict()``). Given a path, the worker reads the file
    itself: the daemon hands over a downloaded object without ever holding its bytes (its memory
    stays flat whatever the file sizes; the bytes count against the worker's limit). Raises:
      ``AnalysisRejected(reason)``  permanent: the target raised an ``EmgError`` (``.code`` is the
                                     error's code, the reason its sentence) or an unexpected
                                     exception (``.code`` = ``internal_error``; the reason names
                                     only its type, the message and traceback go to the log and
                                     ``.detail``); the worker stays in service;
      ``WorkerCrashed(reason)``      the worker died (reason names the signal, e.g. SIGSEGV) or hit
                                     the memory limit (reason says so; numpy's own words are in
                                     the log and ``.detail``); it is replaced;
      ``WorkerTimeout(reason)``      the job ran past ``timeout_s``; the worker is killed, replaced.
    All three derive from ``AnalysisError``; ``.reason`` (== ``str``) is fit for ``sessions.error``.
    ``async render_report(source, *, name, options, result, timeout_s=30) -> bytes``: the
    session's report picture (``daemon.report.render_png``) in a worker, under the same memory
    limit and its own time bound; raises what ``analyse`` raises. ``reports=True`` gives the
    pool one more worker for pictures only, at nice 19, started and closed with the pool.
    ``stats() -> dict``: size, idle, starting, restarts, jobs (for readiness and metrics).
    ``async close()``: stops every worker (idle ones exit on EOF; busy ones are killed, their
    callers get ``WorkerCrashed``); calls waiting for a worker, or made later, get ``PoolError``.
    Drain jobs before closing.
``analyze_to_dict(data, name, options) -> dict``: the default target, an adapter around
``emg_core.analysis.analyze(...).to_dict()`` (emg_core exposes no dict-returning entry point).

How: workers are fresh interpreters (``python -c``; the same guarantee as multiprocessing's
'spawn' context, never a fork of this threaded asyncio process) driven through asyncio's
non-blocking subprocess pipes: stdin carries length-prefixed jobs, the worker's original stdout
carries pickled replies (its fd 1 is pointed at stderr so C libraries that print cannot corrupt
the protocol). In the worker: SIGINT ignored (Ctrl-C drains the daemon, not the jobs), no core
dumps, PR_SET_PDEATHSIG so it dies with the daemon, BLAS single-threaded, and
``RLIMIT_AS = footprint after imports + memory_mb`` — ``memory_mb`` is what one analysis may
allocate beyond the warm worker's own size. A MemoryError retires the worker (its heap is
suspect). A dead or killed worker is replaced in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any

import structlog

__all__ = [
    "DEFAULT_PRELOAD",
    "DEFAULT_TARGET",
    "REPORT_TARGET",
    "AnalysisError",
    "AnalysisPool",
    "AnalysisRejected",
    "PoolError",
    "WorkerCrashed",
    "WorkerTimeout",
    "analyze_to_dict",
    "warm_up",
]

log = structlog.get_logger(__name__)

DEFAULT_TARGET = "daemon.isolation:analyze_to_dict"
# What a job runs: emg_core's analysis on numpy and scipy.signal. Imported before the first job (so
# it pays no import time) and before the memory limit is measured (so the libraries are not charged
# to the analysis). Not ezc3d: emg_core reads C3D itself; ezc3d only writes synthetic recordings
# (the warm-up's among them, so a warm worker holds it all the same, for 3 MB).
DEFAULT_PRELOAD = ("numpy", "scipy.signal", "emg_core.analysis")
# The report picture, drawn after the results are committed. With ``reports=True`` the pool keeps
# one worker of its own for it, at the lowest CPU priority: a picture never takes a worker or CPU
# time from the next session's analysis (on two cores, drawing beside it tripled its latency).
REPORT_TARGET = "daemon.report:render_png"
REPORT_PRELOAD = (*DEFAULT_PRELOAD, "daemon.report", "matplotlib.figure",
                  "matplotlib.backends.backend_agg")  # fmt: skip
# no warm-up drawing: it would cost every daemon start CPU time the analyses need; the first
# picture pays for its fonts instead, behind the results
REPORT_WARMUP = ""
REPORT_TIMEOUT_S = 30.0
REPORT_NICE = 19
DEFAULT_WARMUP = "daemon.isolation:warm_up"
_HEAD = struct.Struct("!QQ")  # request: header length, data length
_LEN = struct.Struct("!Q")  # reply: pickle length
_MAX_REPLY = 512 << 20
_START_TIMEOUT = 120.0


class AnalysisError(Exception):
    """``reason`` is a sentence for the session; ``detail`` what a developer needs (logged)."""

    def __init__(self, reason: str, *, code: str = "analysis_error", detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.detail = detail


class AnalysisRejected(AnalysisError):
    """The input cannot be analysed (permanent)."""


class WorkerCrashed(AnalysisError):
    """The worker died or ran out of memory while analysing."""


class WorkerTimeout(AnalysisError):
    """The analysis ran past its wall-clock limit; the worker was killed."""


class PoolError(RuntimeError):
    """The pool cannot start or is closed."""


def analyze_to_dict(data: bytes, name: str, options: dict[str, Any]) -> dict[str, Any]:
    from emg_core.analysis import AnalysisOptions, analyze

    opts = AnalysisOptions.from_dict(options) if options else None
    return analyze(data, options=opts, name=name).to_dict()


def warm_up() -> None:
    """One session-length analysis in a fresh worker: lazy imports, caches and malloc's
    thresholds settle, so the first real job runs as fast as the hundredth."""
    from emg_core.synthetic import ghostly_recording

    data, _ = ghostly_recording(duration_s=180.0)
    analyze_to_dict(data, "warm-up.c3d", {})


# ------------------------------------------------------------------------------- parent side

_SIGNALS = {
    signal.SIGSEGV: "segmentation fault (SIGSEGV)",
    signal.SIGBUS: "bus error (SIGBUS)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGFPE: "floating-point exception (SIGFPE)",
    signal.SIGILL: "illegal instruction (SIGILL)",
    signal.SIGKILL: "killed (SIGKILL; the kernel's out-of-memory killer does this)",
}


def _death(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        sig = signal.Signals(-returncode)
        return _SIGNALS.get(sig, f"killed by signal {sig.name}")
    return f"exited with code {returncode}"


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]):
        self.proc = proc
        self.pid = proc.pid
        self.info = info

    async def reply(self) -> tuple[str, Any]:
        assert self.proc.stdout is not None
        (n,) = _LEN.unpack(await self.proc.stdout.readexactly(_LEN.size))
        if n > _MAX_REPLY:
            raise ValueError(f"reply of {n} bytes")
        reply: tuple[str, Any] = pickle.loads(await self.proc.stdout.readexactly(n))
        return reply

    async def kill(self) -> int | None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        return await self.proc.wait()


class AnalysisPool:
    def __init__(
        self,
        size: int,
        *,
        timeout_s: float,
        memory_mb: int,
        target: str = DEFAULT_TARGET,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        warmup: str | None = None,
        nice: int = 0,
        reports: bool = False,
    ):
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.size, self.timeout_s, self.memory_mb = size, timeout_s, memory_mb
        self.nice = nice
        self._reports = (
            AnalysisPool(
                1,
                timeout_s=min(timeout_s, REPORT_TIMEOUT_S),
                memory_mb=memory_mb,
                preload=REPORT_PRELOAD,
                warmup=REPORT_WARMUP,
                nice=REPORT_NICE,
            )
            if reports
            else None
        )
        self._reports_started: asyncio.Task[None] | None = None
        self.target, self.preload = target, tuple(preload)
        if warmup is None:
            warmup = DEFAULT_WARMUP if target == DEFAULT_TARGET else ""
        self.warmup = warmup
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False
        self._closing = asyncio.Event()
        self.restarts = 0
        self.jobs = 0

    # -- lifecycle

    async def start(self) -> None:
        workers = await asyncio.gather(
            *(self._spawn() for _ in range(self.size)), return_exceptions=True
        )
        failed = [w for w in workers if isinstance(w, BaseException)]
        for w in workers:
            if isinstance(w, _Worker):
                self._idle.put_nowait(w)
        if failed:
            await self.close()
            raise PoolError(f"analysis worker failed to start: {failed[0]}") from failed[0]
        if self._reports is not None:
            # in the background: pictures must not delay the daemon's readiness
            self._reports_started = asyncio.create_task(self._reports.start())
        log.info("analysis_pool_started", size=self.size, target=self.target)

    async def close(self) -> None:
        if self._reports_started is not None:
            self._reports_started.cancel()
            await asyncio.gather(self._reports_started, return_exceptions=True)
        if self._reports is not None:
            await self._reports.close()
        self._closed = True
        self._closing.set()  # wakes analyse() calls still waiting for an idle worker
        for task in list(self._starting):
            task.cancel()
        for worker in list(self._all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()  # an idle worker exits on EOF
        deadline = time.monotonic() + 2.0
        for worker in list(self._all):
            try:
                await asyncio.wait_for(worker.proc.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                await worker.kill()
        self._all.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "idle": self._idle.qsize(),
            "starting": len(self._starting),
            "restarts": self.restarts,
            "jobs": self.jobs,
        }

    async def _spawn(self) -> _Worker:
        code = "from daemon.isolation import _child_main; _child_main()"
        env = worker_environment(os.environ)
        env["EMGD_WORKER_TARGET"] = self.target
        env["EMGD_WORKER_MEMORY_MB"] = str(self.memory_mb)
        env["EMGD_WORKER_PRELOAD"] = ",".join(self.preload)
        env["EMGD_WORKER_WARMUP"] = self.warmup
        env["EMGD_WORKER_NICE"] = str(self.nice)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [_root(), env.get("PYTHONPATH")] if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
        )
        _widen_pipes(proc)
        worker = _Worker(proc, {})
        self._all.add(worker)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                kind, payload = await worker.reply()
        except (asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            rc = await worker.kill()
            self._all.discard(worker)
            raise PoolError(f"worker {_death(rc)} while starting") from exc
        except BaseException:
            await worker.kill()
            self._all.discard(worker)
            raise
        if kind != "ready":
            await worker.kill()
            self._all.discard(worker)
            raise PoolError(f"worker could not load {self.target}: {payload}")
        worker.info = payload
        return worker

    def _replace(self, worker: _Worker) -> None:
        self._all.discard(worker)
        if self._closed:
            return
        self.restarts += 1
        task = asyncio.create_task(self._refill())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _refill(self) -> None:
        delay = 0.2
        while not self._closed:
            try:
                worker = await self._spawn()
            except PoolError as exc:
                log.error("analysis_worker_start_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self._closed:
                await worker.kill()
                return
            self._idle.put_nowait(worker)
            return

    # -- jobs

    async def render_report(
        self,
        data: bytes | os.PathLike[str],
        *,
        name: str,
        options: dict[str, Any],
        result: dict[str, Any],
        timeout_s: float = REPORT_TIMEOUT_S,
    ) -> bytes:
        """The session's report picture (PNG) in a worker (the pool's report worker when it has
        one), within ``timeout_s`` (and never longer than an analysis may take); raises what
        ``analyse`` raises."""
        pool = self._reports if self._reports is not None else self
        if self._reports_started is not None:
            await self._reports_started  # raises PoolError if the report worker cannot start
        png: bytes = await pool.analyse(
            data,
            name=name,
            options=options,
            call=(REPORT_TARGET, (result,)),
            timeout_s=min(timeout_s, self.timeout_s),
        )
        return png

    async def analyse(
        self,
        data: bytes | os.PathLike[str],
        *,
        name: str,
        options: dict[str, Any],
        call: tuple[str, tuple[Any, ...]] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        worker = await self._acquire()
        self.jobs += 1
        keep = False
        try:
            result = await self._run(worker, data, name, options, call, timeout_s)
            keep = True
            return result
        except AnalysisRejected:
            keep = True  # the worker answered normally: it stays in service
            raise
        finally:
            if keep and not self._closed:
                self._idle.put_nowait(worker)
            elif keep:
                self._all.discard(worker)
                await worker.kill()
            else:
                self._replace(worker)

    async def _acquire(self) -> _Worker:
        if self._closed:
            raise PoolError("analysis pool is closed")
        if not self._idle.empty():
            return self._idle.get_nowait()
        getter = asyncio.ensure_future(self._idle.get())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({getter, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not getter.done():
                getter.cancel()
        if self._closed:
            if getter.done() and not getter.cancelled():
                self._all.discard(getter.result())
                await getter.result().kill()
            raise PoolError("analysis pool is closed")
        return getter.result()

    async def _run(
        self,
        worker: _Worker,
        source: bytes | os.PathLike[str],
        name: str,
        options: dict[str, Any],
        call: tuple[str, tuple[Any, ...]] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One job on one worker; raises AnalysisError subclasses. ``call`` runs another
        function of the worker, ``function(data, name, options, *args)``, instead of the
        target."""
        path, data = (None, source) if isinstance(source, bytes) else (os.fspath(source), b"")
        header = pickle.dumps((name, options, path, call), protocol=pickle.HIGHEST_PROTOCOL)
        stdin = worker.proc.stdin
        assert stdin is not None
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                stdin.write(_HEAD.pack(len(header), len(data)))
                stdin.write(header)
                stdin.write(data)
                await stdin.drain()
                kind, payload = await worker.reply()
        except TimeoutError:
            await worker.kill()
            raise WorkerTimeout(
                f"analysis took longer than {timeout_s:g} s; worker killed",
                code="worker_timeout",
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            rc = await _wait_briefly(worker)
            raise WorkerCrashed(f"analysis worker {_death(rc)}", code="worker_crashed") from None
        except BaseException:
            await worker.kill()  # cancelled mid-job: its state is unknown
            raise
        if kind == "ok":
            return payload
        if kind == "rejected":
            code, reason = payload
            raise AnalysisRejected(reason, code=code)
        if kind == "oom":
            await _wait_briefly(worker)
            # numpy's words ("Unable to allocate 16.0 GiB for an array with shape ...") are for
            # the log; the session says what happened.
            log.warning("analysis_out_of_memory", limit_mb=self.memory_mb, detail=str(payload))
            raise WorkerCrashed(
                f"analysis exceeded the memory limit ({self.memory_mb} MB)",
                code="worker_out_of_memory",
                detail=str(payload),
            )
        raise _internal_error(payload)


def _internal_error(payload: Any) -> AnalysisRejected:
    """An exception the analysis did not expect: a readable reason, the raw message in the log.

    Raw messages from numpy and friends ("array is too big; `arr.size * arr.dtype.itemsize` is
    larger than the maximum possible size") mean nothing to a therapist reading the session.
    """
    if isinstance(payload, dict):
        kind = str(payload.get("type") or "error")
        detail = f"{kind}: {payload.get('message', '')}\n{payload.get('traceback', '')}".strip()
    else:  # a worker of an older protocol: a plain string
        kind, detail = "error", str(payload)
    log.error("analysis_internal_error", error_type=kind, detail=detail)
    return AnalysisRejected(
        f"the analysis stopped on an unexpected {kind}: this file could not be analysed"
        " (the details are in the daemon's log)",
        code="internal_error",
        detail=detail,
    )


async def _wait_briefly(worker: _Worker) -> int | None:
    try:
        return await asyncio.wait_for(worker.proc.wait(), 2.0)
    except TimeoutError:
        return await worker.kill()


def _widen_pipes(proc: asyncio.subprocess.Process) -> None:
    # A 1 MB pipe instead of 64 KB: a multi-MB C3D crosses in a few writes, not a hundred wakeups.
    for stream in (proc.stdin, proc.stdout):
        transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is not None:
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------- worker side


# What an analysis worker may see of the daemon's environment. These processes parse untrusted
# files: they get no credentials (the service key, the database URL and its password, cloud
# keys), only what the interpreter and the numeric libraries read, and emgd's own non-secret
# settings. An allow-list, so a secret under a name nobody thought of stays out too.
_WORKER_ENV_NAMES = {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP"}
_WORKER_ENV_PREFIXES = ("LC_", "PYTHON")
_WORKER_ENV_SUFFIXES = ("_NUM_THREADS",)
_SECRET_EMGD_NAMES = {"EMGD_DATABASE_URL", "EMGD_SUPABASE_SERVICE_ROLE_KEY"}


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment an analysis worker starts with: ``environ`` with everything but the
    allowed names removed."""
    return {
        name: value
        for name, value in environ.items()
        if name in _WORKER_ENV_NAMES
        or name.startswith(_WORKER_ENV_PREFIXES)
        or name.endswith(_WORKER_ENV_SUFFIXES)
        or (name.startswith("EMGD_") and name not in _SECRET_EMGD_NAMES)
    }


def _child_main() -> None:
    """Entry point of a worker process (see module docstring for the protocol)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # C code that prints must not write into the reply stream
    sys.stdout = sys.stderr

    def send(kind: str, payload: Any) -> None:
        body = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_LEN.pack(len(body)) + body)

    try:
        for mod in filter(None, os.environ.get("EMGD_WORKER_PRELOAD", "").split(",")):
            with contextlib.suppress(ImportError):
                importlib.import_module(mod)
        module_name, _, func_name = os.environ["EMGD_WORKER_TARGET"].partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
    except Exception as exc:
        send("failed", f"{type(exc).__name__}: {exc}")
        return
    warmup = os.environ.get("EMGD_WORKER_WARMUP")
    if warmup:
        try:
            module_name, _, fn = warmup.partition(":")
            getattr(importlib.import_module(module_name), fn)()
        except Exception as exc:  # a cold first job is slower, not wrong
            print(f"emgd worker: warm-up {warmup} failed: {exc!r}", file=sys.stderr)
    nice = int(os.environ.get("EMGD_WORKER_NICE") or 0)
    if nice > 0:
        os.nice(nice)  # a background worker (the report picture): yields the CPU to analyses
    limit = _set_memory_limit(int(os.environ.get("EMGD_WORKER_MEMORY_MB", "2048")))
    send("ready", {"pid": os.getpid(), "as_limit_mb": limit})

    while True:
        head = inp.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return  # parent closed the pipe: shut down
        hlen, dlen = _HEAD.unpack(head)
        name, options, path, call = pickle.loads(inp.read(hlen))
        data = inp.read(dlen)
        try:
            if path is not None:
                with open(path, "rb") as fh:
                    data = fh.read()
            if call is None:
                send("ok", func(data, name, options))
            else:
                module_name, _, fn = call[0].partition(":")
                other = getattr(importlib.import_module(module_name), fn)
                send("ok", other(data, name, options, *call[1]))
        except MemoryError as exc:
            del data
            send("oom", str(exc) or "MemoryError")
            return  # heap state is suspect after a failed huge allocation: retire
        except Exception as exc:
            if any(c.__name__ == "EmgError" for c in type(exc).__mro__):
                send("rejected", (getattr(exc, "code", "emg_error"), str(exc)))
            else:
                import traceback

                message = str(exc)[:2000]
                trace = "".join(traceback.format_exception(exc))[-8000:]
                send("error", {"type": type(exc).__name__, "message": message, "traceback": trace})


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _set_memory_limit(memory_mb: int) -> int:
    import resource

    with open("/proc/self/status") as fh:
        size_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    limit = (size_kb // 1024 + memory_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit >> 20
