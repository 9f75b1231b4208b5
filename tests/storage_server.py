"""A small real HTTP server that speaks Supabase Storage's object API, for tests and e2e runs.

It serves ``GET /storage/v1/object/<bucket>/<path>`` (download) and ``POST|PUT`` on the same path
(multipart upload, as storage3 sends it), checks ``apikey`` and ``Authorization: Bearer``, and
answers as the current Supabase Storage server does (checked against its source): errors are
HTTP 400 with the real status inside the JSON body. A missing object is
``{"statusCode":"404","code":"NoSuchKey","error":"not_found","message":"Object not found"}``. A
wrong, expired or garbage key makes the caller anon: a download from a private bucket then answers
``{"statusCode":"404","code":"NoSuchBucket","error":"Bucket not found",...}`` (exactly what a
missing bucket answers), an upload ``{"statusCode":"403","code":"AccessDenied","error":
"Unauthorized",...}``. Object keys must match Storage's ``VALID_OBJECT_KEY``; an upload under any
other key is ``{"statusCode":"400","code":"InvalidKey",...}``. ``GET /storage/v1/bucket/<id>``
returns the bucket (the daemon's credential check). ``fail_next(n)`` makes the next n requests
answer 503 (JSON) and ``fail_next(n, status=502, body="bad gateway")`` a plain-text gateway
error. ``drip = seconds`` makes downloads slow the way a congested link or a stuck proxy is: the
status line and headers (with the full ``Content-Length``) come at once, then the body
``drip_bytes`` at a time with ``drip`` seconds between pieces, so no single read waits long but
the whole never arrives in time.
``chunked = True`` sends downloads without ``Content-Length`` (chunked transfer encoding, as a
proxy that compresses or re-encodes does), counting what it wrote in ``sent``.
``redirects[(bucket, name)] = url`` answers that object's download with ``302 Location: url``;
``seen_headers`` keeps each request's headers, so a test can see who received the key.

Use::

    server = await start_storage_server(key="k", objects={("c3d-examples", "p/a.c3d"): b"..."})
    server.url            # http://127.0.0.1:<port>  (give it to SupabaseStorage / SUPABASE_URL)
    server.objects[...]   # the store (bucket, name) -> bytes; mutate freely
    server.requests       # list of (method, bucket, name) served, in order
    await server.stop()

or, from synchronous code / another process, ``python -m tests.storage_server --port 0`` prints
its URL on stdout and serves until killed (objects added through the upload API; ``--drip S``
serves downloads slowly, as above).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass, field

from aiohttp import web

# Storage's src/storage/limits.ts: only S3-safe characters and a few that need special handling.
VALID_OBJECT_KEY = re.compile(r"^[A-Za-z0-9_/!.*'() &$=@;:+,?-]*$")


@dataclass
class StorageServer:
    key: str
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering: lets tests provoke client timeouts
    drip: float = 0.0  # seconds between pieces of a download's body (0: all at once)
    drip_bytes: int = 16
    chunked: bool = False
    sent: int = 0
    redirects: dict[tuple[str, str], str] = field(default_factory=dict)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    buckets: set[str] = field(default_factory=lambda: {"c3d-examples"})
    _failures: list[tuple[int, str | None]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int, *, status: int = 503, body: str | None = None) -> None:
        self._failures.extend([(status, body)] * n)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        bucket, name = request.match_info["bucket"], request.match_info["name"]
        self._seen(request, bucket, name)
        if self.delay:
            await asyncio.sleep(self.delay)
        failure = self._injected_failure()
        if failure is not None:
            return failure
        if not self._authenticated(request):
            # The JWT does not verify: Storage serves the request as anon. Downloads allow that
            # (public buckets), and a private bucket is then "not found"; uploads refuse.
            return _no_such_bucket() if request.method == "GET" else _unauthorized()
        if not self._has_bucket(bucket):
            return _no_such_bucket()
        if request.method == "GET":
            if (bucket, name) in self.redirects:
                raise web.HTTPFound(self.redirects[(bucket, name)])
            data = self.objects.get((bucket, name))
            if data is None:
                return _error(400, "404", "not_found", "Object not found", "NoSuchKey")
            if self.drip:
                return await self._drip(request, data)
            if self.chunked:
                return await self._chunked(request, data)
            return web.Response(body=data, content_type="application/octet-stream")
        if not name or not VALID_OBJECT_KEY.match(name):
            return _error(400, "400", "InvalidKey", f"Invalid key: {name}", "InvalidKey")
        upsert = request.headers.get("x-upsert") == "true" or request.method == "PUT"
        if (bucket, name) in self.objects and not upsert:
            return _error(
                400, "409", "Duplicate", "The resource already exists", "KeyAlreadyExists"
            )
        post = await request.post()
        upload = post.get("file")
        self.objects[(bucket, name)] = upload.file.read() if upload is not None else b""
        return web.json_response({"Key": f"{bucket}/{name}", "Id": "00000000-0000-0000-0000-0"})

    def _seen(self, request: web.Request, bucket: str, name: str) -> None:
        self.requests.append((request.method, bucket, name))
        self.seen_headers.append(dict(request.headers))

    def _injected_failure(self) -> web.Response | None:
        """The answer ``fail_next`` queued for this request, if any."""
        if not self._failures:
            return None
        status, body = self._failures.pop(0)
        if body is not None:
            return web.Response(status=status, text=body)
        return _error(status, str(status), "internal", "Service temporarily unavailable")

    def _has_bucket(self, bucket: str) -> bool:
        return bucket in self.buckets or any(b == bucket for b, _ in self.objects)

    def _authenticated(self, request: web.Request) -> bool:
        return (
            request.headers.get("apikey") == self.key
            and request.headers.get("Authorization") == f"Bearer {self.key}"
        )

    async def _bucket(self, request: web.Request) -> web.Response:
        bucket = request.match_info["bucket"]
        self._seen(request, bucket, "")
        failure = self._injected_failure()
        if failure is not None:
            return failure
        if not self._authenticated(request):
            return _unauthorized()
        if not self._has_bucket(bucket):
            return _no_such_bucket()
        return web.json_response(
            {"id": bucket, "name": bucket, "public": False, "type": "STANDARD"}
        )

    async def _drip(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        )
        await response.prepare(request)
        try:
            for at in range(0, len(data), self.drip_bytes):
                await response.write(data[at : at + self.drip_bytes])
                await asyncio.sleep(self.drip)
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up: nothing more to send
        return response

    async def _chunked(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for at in range(0, len(data), 64 << 10):
                piece = data[at : at + (64 << 10)]
                await response.write(piece)
                self.sent += len(piece)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading: nothing more to send
        return response

    async def start(self, port: int = 0) -> StorageServer:
        app = web.Application(client_max_size=1 << 30)
        route = "/storage/v1/object/{bucket}/{name:.+}"
        app.router.add_route("GET", route, self._handle)
        app.router.add_route("POST", route, self._handle)
        app.router.add_route("PUT", route, self._handle)
        app.router.add_route("GET", "/storage/v1/bucket/{bucket}", self._bucket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _error(
    http_status: int, status_code: str, error: str, message: str, code: str | None = None
) -> web.Response:
    body = {"statusCode": status_code, "code": code or error, "error": error, "message": message}
    return web.Response(status=http_status, text=json.dumps(body), content_type="application/json")


def _unauthorized() -> web.Response:
    return _error(400, "403", "Unauthorized", "signature verification failed", "AccessDenied")


def _no_such_bucket() -> web.Response:
    return _error(400, "404", "Bucket not found", "Bucket not found", "NoSuchBucket")


async def start_storage_server(
    *, key: str = "service-role-key", objects: dict[tuple[str, str], bytes] | None = None
) -> StorageServer:
    return await StorageServer(key=key, objects=dict(objects or {})).start()


async def _serve_forever(port: int, key: str, drip: float = 0.0) -> None:
    server = await StorageServer(key=key, drip=drip).start(port)
    print(server.url, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Supabase Storage stand-in for tests")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default="service-role-key")
    parser.add_argument("--drip", type=float, default=0.0, help="seconds between body pieces")
    ns = parser.parse_args()
    try:
        asyncio.run(_serve_forever(ns.port, ns.key, ns.drip))
    except KeyboardInterrupt:
        sys.exit(0)
