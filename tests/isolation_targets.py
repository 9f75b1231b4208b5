"""Test-only analysis targets for daemon.isolation: each misbehaves in one way a hostile file can.

Every function has the target signature ``(data: bytes, name: str, options: dict) -> dict``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time


class EmgError(Exception):
    """Stands in for emg_core.errors.EmgError (matched by class name, like the real one)."""

    code = "emg_error"


class NotAC3DFile(EmgError):
    code = "c3d_format"


WARMED = False


def warm() -> None:
    global WARMED
    WARMED = True


def warm_badly() -> None:
    raise RuntimeError("warm-up broke")


def works(data: bytes, name: str, options: dict) -> dict:
    return {
        "name": name,
        "size": len(data),
        "pid": os.getpid(),
        "options": options,
        "warmed": WARMED,
    }


def echo(data: bytes, name: str, options: dict) -> dict:
    return {"name": name, "data": data}


def sleep(data: bytes, name: str, options: dict) -> dict:
    # CLOCK_MONOTONIC is system-wide: the caller can compare these with its own and each other's
    started = time.monotonic()
    time.sleep(float(options.get("seconds", 0.2)))
    return {"name": name, "pid": os.getpid(), "started": started, "ended": time.monotonic()}


def segfault(data: bytes, name: str, options: dict) -> dict:
    ctypes.string_at(0)  # reads address 0: SIGSEGV in C, like a parser on a corrupt file
    return {}


def kill_self(data: bytes, name: str, options: dict) -> dict:
    os.kill(os.getpid(), getattr(signal, options.get("signal", "SIGSEGV")))
    time.sleep(5)
    return {}


def hang(data: bytes, name: str, options: dict) -> dict:
    while True:  # a busy loop, not a sleep: like a parser stuck on a cyclic structure
        pass


def allocate_10gb(data: bytes, name: str, options: dict) -> dict:
    block = bytearray(10 * 1024**3)
    return {"len": len(block)}


def allocate_numpy_10gb(data: bytes, name: str, options: dict) -> dict:
    import numpy as np

    return {"sum": float(np.ones(10 * 1024**3 // 8).sum())}


def reject(data: bytes, name: str, options: dict) -> dict:
    raise NotAC3DFile(f"{name} is not a C3D file (first byte {data[:1]!r})")


def bug(data: bytes, name: str, options: dict) -> dict:
    return {"x": [1, 2][int(options.get("i", 5))]}


def prints(data: bytes, name: str, options: dict) -> dict:
    print("chatty library output on stdout")
    os.write(1, b"raw C-level write to fd 1\n")
    sys.stdout.flush()
    return {"ok": True}


def exit_now(data: bytes, name: str, options: dict) -> dict:
    os._exit(3)


def dispatch(data: bytes, name: str, options: dict) -> dict:
    """One pool, many behaviours: ``options["do"]`` names the function above to run."""
    return globals()[options.get("do", "works")](data, name, options)


def slow_analysis(data: bytes, name: str, options: dict) -> dict:
    """The real analysis after a pause of ``EMGD_TEST_ANALYSIS_DELAY`` seconds (read from the
    worker's environment, which a daemon process passes on): e2e tests use it to act while a job
    is certainly mid-analysis, and still get results the schema accepts."""
    from daemon.isolation import analyze_to_dict

    time.sleep(float(os.environ.get("EMGD_TEST_ANALYSIS_DELAY", "0")))
    return analyze_to_dict(data, name, options)


# --- targets for the daemon integration tests (tests/test_daemon_*.py) -------------------------
# emg_core's reader is pure numpy and turns every damaged file we know into a typed error, so no
# file content makes the parser crash; these targets inject the crash (or a delay) in the worker
# when the bytes start with a marker, and otherwise run the daemon's real analysis.

CRASH_MARKER = b"EMGD-TEST-CRASH\n"
SLOW_MARKER = b"EMGD-TEST-SLOW:"  # followed by the seconds to sleep, in ASCII, and a newline


def real_or_misbehave(data: bytes, name: str, options: dict) -> dict:
    if data.startswith(CRASH_MARKER):
        segfault(data, name, options)
    if data.startswith(SLOW_MARKER):
        head, _, data = data.partition(b"\n")
        time.sleep(float(head[len(SLOW_MARKER) :]))
    from daemon.isolation import analyze_to_dict

    return analyze_to_dict(data, name, options)


def environment(data: bytes, name: str, options: dict) -> dict:
    return {"environ": dict(os.environ)}


def real_then_nan(data: bytes, name: str, options: dict) -> dict:
    """The real analysis, whose result the daemon then cannot encode (a NaN): an internal error
    in the daemon, after the file's bytes, its metadata and the job's lease are all in frames."""
    from daemon.isolation import analyze_to_dict

    result = analyze_to_dict(data, name, options)
    result["duration_s"] = float("nan")
    return result
