"""``emgd check``: exit 0 when the local daemon's ``/readyz`` answers 200, else 1.

Meant for Docker's HEALTHCHECK, so it imports nothing heavy (urllib only) and needs no
settings: the URL defaults to ``http://127.0.0.1:$EMGD_HEALTH_PORT/readyz`` (port 8080 when the
variable is unset). With ``EMGD_HEALTH_PORT=0`` the daemon serves no health endpoint and this
check fails with a message saying so (pass ``--url`` to check a daemon elsewhere).

Public API: ``configure(parser)``, ``main(args) -> int``, ``check(url, timeout) -> (ok, message)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request


def default_url() -> str | None:
    port = (os.environ.get("EMGD_HEALTH_PORT") or "8080").strip()
    if port == "0":
        return None
    return f"http://127.0.0.1:{port}/readyz"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help="readiness URL (default: http://127.0.0.1:$EMGD_HEALTH_PORT/readyz)",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")


def check(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # 503 with the reasons in the body
        return False, f"HTTP {exc.code}: {exc.read(4096).decode('utf-8', 'replace')}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"cannot reach {url}: {reason}"


def main(args: argparse.Namespace) -> int:
    url = args.url or default_url()
    if url is None:
        print("emgd check: EMGD_HEALTH_PORT=0, the health server is off", file=sys.stderr)
        return 1
    ok, message = check(url, args.timeout)
    print(message.strip(), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
