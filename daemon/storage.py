"""Where the C3D bytes live: Supabase Storage over HTTP, or a local folder.

Public API
----------
``StorageBackend`` (Protocol)
    ``async download_to(bucket, name, dest) -> Downloaded``: streams the object into the file
        ``dest`` (created or truncated), hashing as it goes; ``Downloaded`` has ``path``, ``size``
        and ``sha256``. Memory stays one chunk whatever the object's size.
    ``async download(bucket, name) -> bytes``: the same, read back whole (small objects, tools).
    ``async upload(bucket, name, data, *, content_type='application/octet-stream') -> dict``
        returns Supabase-like object metadata: ``eTag`` (quoted md5), ``size``, ``mimetype``,
        ``cacheControl``, ``lastModified``, ``contentLength``, ``httpStatusCode`` — the shape
        Supabase writes to ``storage.objects.metadata``.
    ``async aclose()``
Errors: ``StorageError`` (base; a plain one is permanent), ``ObjectNotFound`` (permanent: the
object is gone), ``InvalidObjectName`` (permanent: the name is unusable or hostile),
``StorageUnavailable`` (transient: 5xx, 429, timeouts, connection errors, a redirect to another
origin — retry later), ``StorageNotConfigured`` (a ``StorageUnavailable``: Storage answered as it
answers a wrong key or a missing bucket — a configuration error, not the object's fault),
``ObjectTooLarge`` (permanent: more than ``max_bytes``). Every error's ``str`` is a readable
reason fit for ``sessions.error``.
``LocalStorage(root, *, download_timeout=120.0, max_bytes=None)``: files at
``<root>/<bucket>/<name>``; a name can never leave ``root``; only regular files are read (a named
pipe, socket or device is refused at once: ``StorageError``, permanent).
``SupabaseStorage(url, service_role_key, *, timeout=30.0, retries=3, download_timeout=120.0,
max_bytes=None, allow_insecure_http=False)``: downloads stream over httpx, uploads go through
storage3's async client; ``timeout`` bounds each request phase (connect, each read). A plain
``http://`` URL is refused (``StorageError``) unless its host is loopback or
``allow_insecure_http`` is given: the service key would cross the network in clear.
``async check_credentials(bucket)``: ``None`` when the key is accepted and the bucket exists,
else ``StorageNotConfigured`` saying which (``LocalStorage``: always ``None``).
``make_storage(settings) -> StorageBackend``.

Credentials: real Storage serves a request whose key does not verify as anon, and a download from
a private bucket as anon answers "Bucket not found" (HTTP 400, statusCode 404, code NoSuchBucket),
the same as a missing bucket; a valid key of another role (anon) does too. Such an answer is
``StorageNotConfigured``, never "object not found". ``check_credentials`` asks the bucket route,
which refuses a bad key outright (statusCode 403, AccessDenied), to tell a rejected key from a
missing bucket.

Size: ``max_bytes`` (``EMGD_MAX_FILE_MB``) is enforced while the bytes arrive, on both backends: a
declared size (file size, ``Content-Length``) above it is refused before reading, and a body that
declares nothing or lies is cut as soon as it passes the limit. Storage metadata can be missing or
stale, so it is never the only check.

Redirects: the service key goes only to ``SUPABASE_URL``'s origin. A redirect on the same origin
is followed (a few hops at most); one to another scheme, host or port is not followed and is
``StorageUnavailable`` naming the target's host.

Deadline: every ``download`` ends within ``download_timeout`` seconds in all (connection, body,
in-process retries), on both backends, with ``StorageUnavailable`` naming the deadline when it
runs out: a hung mount or a server that sends one byte a second cannot hold a job, its lease and
a concurrency slot forever. The local backend reads in a daemon thread of its own (never the
loop's executor, whose threads the interpreter joins at exit): a ``read()`` stuck in the kernel
is abandoned at the deadline and cannot keep the process alive after it has stopped.

Retries: ``SupabaseStorage`` retries ``StorageUnavailable`` in-process (``retries`` attempts in
all, exponential backoff with jitter, at most a few seconds) because a blip should not cost a job
attempt; when it still fails it raises ``StorageUnavailable`` and the caller reschedules the job
(``run_after``). ``LocalStorage`` does not retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import queue
import stat
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, runtime_checkable
from urllib.parse import quote

if TYPE_CHECKING:
    from storage3.types import FileOptions

    from daemon.settings import Settings

_T = TypeVar("_T")

__all__ = [
    "Downloaded",
    "InvalidObjectName",
    "LocalStorage",
    "ObjectNotFound",
    "ObjectTooLarge",
    "StorageBackend",
    "StorageError",
    "StorageNotConfigured",
    "StorageUnavailable",
    "SupabaseStorage",
    "make_storage",
    "object_metadata",
]


class StorageError(Exception):
    """Storage failed; a plain StorageError is permanent."""


class ObjectNotFound(StorageError):
    """The object does not exist (permanent)."""


class InvalidObjectName(StorageError):
    """The bucket or object name is unusable or tries to escape (permanent)."""


class StorageUnavailable(StorageError):
    """Storage could not answer now (transient): retry later."""


class StorageNotConfigured(StorageUnavailable):
    """Storage rejects our credentials, or the bucket does not exist: nothing any one job can fix,
    so jobs wait until ``check_credentials`` passes again."""


class ObjectTooLarge(StorageError):
    """The object is larger than the daemon accepts (permanent)."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    """An object streamed to a file: where, how many bytes, and their sha256 (hex)."""

    path: Path
    size: int
    sha256: str


def _too_large(what: str, size: int, max_bytes: int, *, declared: bool) -> ObjectTooLarge:
    seen = "is" if declared else "passed"
    return ObjectTooLarge(
        f"the file {seen} {size / 1e6:.1f} MB, above the {max_bytes / 1e6:.0f} MB limit"
        f" (EMGD_MAX_FILE_MB); a recording this large is not a GHOSTLY session ({what})"
    )


class _Sink:
    """The destination file of one download: writes, hashes and counts, refusing past the limit."""

    def __init__(self, dest: Path, what: str, max_bytes: int | None):
        self.dest, self.what, self.max_bytes = Path(dest), what, max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        try:
            self._fh = open(self.dest, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise _local_disk(self.dest, exc) from exc

    def check_declared(self, size: int | None) -> None:
        if size is not None and self.max_bytes is not None and size > self.max_bytes:
            raise _too_large(self.what, size, self.max_bytes, declared=True)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise _too_large(self.what, self.size, self.max_bytes, declared=False)
        self._hash.update(chunk)
        try:
            self._fh.write(chunk)
        except OSError as exc:
            raise _local_disk(self.dest, exc) from exc

    def close(self) -> Downloaded:
        try:
            self._fh.close()
        except OSError as exc:
            raise _local_disk(self.dest, exc) from exc
        return Downloaded(self.dest, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


def _local_disk(dest: Path, exc: OSError) -> StorageUnavailable:
    # The daemon's own disk (its download folder), not the object: full disks get freed.
    return StorageUnavailable(f"cannot write the download to {dest.parent}: {exc.strerror}")


async def _read_back(backend: StorageBackend, bucket: str, name: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="emgd-download-") as folder:
        got = await backend.download_to(bucket, name, Path(folder) / "object")
        return await asyncio.to_thread(got.path.read_bytes)


DEFAULT_DOWNLOAD_TIMEOUT = 120.0
_CHUNK = 1 << 20
_MAX_REDIRECTS = 5


def _deadline_passed(what: str, seconds: float) -> StorageUnavailable:
    return StorageUnavailable(
        f"downloading {what} did not finish within {seconds:g} s (EMGD_DOWNLOAD_TIMEOUT);"
        " storage is hanging or too slow"
    )


@runtime_checkable
class StorageBackend(Protocol):
    async def download_to(self, bucket: str, name: str, dest: Path) -> Downloaded: ...

    async def download(self, bucket: str, name: str) -> bytes: ...

    async def upload(
        self, bucket: str, name: str, data: bytes, *, content_type: str = ...
    ) -> dict[str, Any]: ...

    async def check_credentials(self, bucket: str) -> None: ...

    async def aclose(self) -> None: ...


def object_metadata(data: bytes, content_type: str) -> dict[str, Any]:
    """The metadata Supabase Storage records for an object."""
    return {
        "eTag": f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"',
        "size": len(data),
        "mimetype": content_type,
        "cacheControl": "max-age=3600",
        "lastModified": datetime.now(UTC).isoformat(),
        "contentLength": len(data),
        "httpStatusCode": 200,
    }


def _check_name(bucket: str, name: str) -> list[str]:
    """Path segments of a safe ``bucket/name``; rejects anything that could mean another place."""
    for label, value in (("bucket", bucket), ("object name", name)):
        if not isinstance(value, str) or not value:
            raise InvalidObjectName(f"empty {label}")
        if "\x00" in value or "\\" in value:
            raise InvalidObjectName(f"{label} contains NUL or backslash: {value!r}")
        if value.startswith("/"):
            raise InvalidObjectName(f"{label} is an absolute path: {value!r}")
        if len(value.encode("utf-8", "surrogatepass")) > 1024:
            raise InvalidObjectName(f"{label} is longer than 1024 bytes")
    if "/" in bucket:
        raise InvalidObjectName(f"bucket contains '/': {bucket!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in [bucket, *parts]):
        raise InvalidObjectName(f"object name has an empty, '.' or '..' segment: {name!r}")
    return [bucket, *parts]


class LocalStorage:
    """A folder laid out like a bucket store: ``<root>/<bucket>/<name>``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        max_bytes: int | None = None,
    ):
        self.root = Path(root).resolve()
        self.download_timeout = download_timeout
        self.max_bytes = max_bytes

    def path_for(self, bucket: str, name: str) -> Path:
        path = self.root.joinpath(*_check_name(bucket, name)).resolve()
        # resolve() follows symlinks, so a link planted inside the root cannot point out of it.
        if not _below(path, self.root):
            raise _leaves_root(name)
        return path

    async def download(self, bucket: str, name: str) -> bytes:
        return await _read_back(self, bucket, name)

    async def download_to(self, bucket: str, name: str, dest: Path) -> Downloaded:
        # Not path_for: resolving every segment costs more than reading a small file. The name
        # has no '.' or '..' segment, so only a symlink could lead out of the root, and the reader
        # checks where the file it opened really is (no race between a check and the open).
        path = self.root.joinpath(*_check_name(bucket, name))
        what = f"{bucket}/{name}"
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Downloaded] = loop.create_future()
        stop = threading.Event()
        deadline = time.monotonic() + self.download_timeout

        def settle(result: Downloaded | None, error: BaseException | None) -> None:
            if done.done():
                return  # the caller gave up (deadline, cancellation) already
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(cast(Downloaded, result))  # read() sets one of the two

        def read() -> None:
            result, error = None, None
            try:
                result = _read_regular_file(
                    path, what, deadline, stop, dest, self.max_bytes, inside=self.root
                )
            except BaseException as exc:  # handed to the waiting coroutine
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        # Not asyncio.to_thread: a read stuck in the kernel (a hung mount) is abandoned at the
        # deadline, keeps only its own thread, and the interpreter does not wait for it at exit.
        _READERS.submit(read)
        try:
            return await asyncio.wait_for(done, self.download_timeout)
        except TimeoutError:
            raise _deadline_passed(what, self.download_timeout) from None
        finally:
            stop.set()

    async def upload(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        path = self.path_for(bucket, name)
        try:
            await asyncio.to_thread(_atomic_write, path, data)
        except OSError as exc:
            if exc.errno in (36, 20, 21):  # ENAMETOOLONG, ENOTDIR, EISDIR: the name's fault
                raise InvalidObjectName(f"cannot store {name!r}: {exc.strerror}") from None
            raise StorageUnavailable(f"cannot write {bucket}/{name}: {exc.strerror}") from exc
        return object_metadata(data, content_type)

    async def check_credentials(self, bucket: str) -> None:
        return None  # a folder has no credentials; a missing bucket folder is a missing object

    async def aclose(self) -> None:
        return None


class _DaemonThreads:
    """Daemon threads for blocking reads, kept for reuse: starting a thread per download cost
    more than a small file's whole read. A thread stuck in a read holds only itself: a new one
    starts whenever none is idle, and idle ones end after ``idle_s``."""

    def __init__(self, idle_s: float = 30.0) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a task and not yet promised to one
        self._idle_s = idle_s

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
        self._tasks.put(task)
        if not spare:
            threading.Thread(target=self._serve, name="emgd-read", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counts on this thread: end it
                        self._idle -= 1
                        return
                continue  # a task was promised to an idle thread: this one takes it
            task()  # catches its own errors
            with self._lock:
                self._idle += 1


_READERS = _DaemonThreads()

_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _below(real: str | os.PathLike[str], root: Path) -> bool:
    """Whether the real (symlink-free) path ``real`` lies strictly below ``root``."""
    path = Path(real)
    return path.is_relative_to(root) and path != root


def _leaves_root(name: str) -> InvalidObjectName:
    return InvalidObjectName(f"object name leaves the storage folder: {name!r}")


def _opened_below(fd: int, path: Path, root: Path) -> bool:
    """Whether the file open as ``fd`` lies below ``root``: where the kernel says it opened it
    (``/proc``), else where ``path`` resolves to now."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(path)
    return _below(real, root)


def _read_regular_file(
    path: Path,
    what: str,
    deadline: float,
    stop: threading.Event,
    dest: Path,
    max_bytes: int | None,
    *,
    inside: Path,
) -> Downloaded:
    """A regular file copied to ``dest`` in chunks until ``deadline``; anything else refused.

    Opened with O_NONBLOCK so that opening a named pipe returns at once instead of waiting for a
    writer; the type is then checked on the open descriptor (no race with a rename). A file
    that is not really below ``inside`` (a symlink led out) is refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ObjectNotFound(f"object not found: {what}") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device without a driver)
            raise StorageError(f"{what} is not a regular file; refusing to read it") from None
        raise StorageUnavailable(f"cannot read {what}: {exc.strerror}") from exc
    try:
        if not _opened_below(fd, path, inside):
            raise _leaves_root(what)
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ObjectNotFound(f"object not found: {what} (a folder has that name)")
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise StorageError(
                f"{what} is {kind}, not a regular file; refusing to read it (a stored object is"
                " always a plain file)"
            )
        os.set_blocking(fd, True)
        sink = _Sink(dest, what, max_bytes)
        try:
            sink.check_declared(os.fstat(fd).st_size)
            # The size is checked again as the bytes come: the file may grow while it is read.
            while chunk := os.read(fd, _CHUNK):
                sink.write(chunk)
                if stop.is_set() or time.monotonic() > deadline:
                    raise StorageUnavailable(f"reading {what} stopped at its deadline")
            return sink.close()
        except BaseException:
            sink.abort()
            raise
    except OSError as exc:
        raise StorageUnavailable(f"cannot read {what}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    # Readers (the daemon) must never see half a file: write aside, then rename into place.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SupabaseStorage:
    """Supabase Storage through storage3's async client, authenticated with the service role."""

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        max_bytes: int | None = None,
        allow_insecure_http: bool = False,
    ):
        import httpx
        from storage3 import AsyncStorageClient

        check_storage_url(url, allow_insecure_http=allow_insecure_http)
        headers = {"apikey": service_role_key, "Authorization": f"Bearer {service_role_key}"}
        # Redirects are never followed by the client: the key must not go to another origin,
        # so download_to follows same-origin ones itself.
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
        )
        self._base = url.rstrip("/") + "/storage/v1/"
        self._client = AsyncStorageClient(self._base, headers, http_client=self._http)
        self._retries = max(1, retries)
        self.download_timeout = download_timeout
        self.max_bytes = max_bytes

    async def _retrying(self, op: Callable[[], Awaitable[_T]], what: str) -> _T:
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._retries),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.2),
            retry=retry_if_exception_type(StorageUnavailable),
            reraise=True,
        ):
            with attempt:
                return await _translate(op, what)
        raise AssertionError("unreachable")

    async def download(self, bucket: str, name: str) -> bytes:
        return await _read_back(self, bucket, name)

    async def download_to(self, bucket: str, name: str, dest: Path) -> Downloaded:
        import yarl

        parts = _check_name(bucket, name)
        what = f"{bucket}/{name}"
        url = str(yarl.URL(self._base).joinpath("object", *parts))
        # httpx's timeout is per phase (each read may take that long): a server that sends a few
        # bytes a second never trips it. This bounds the whole download, retries included.
        try:
            async with asyncio.timeout(self.download_timeout):
                return await self._retrying(lambda: self._stream(url, what, Path(dest)), what)
        except TimeoutError:
            raise _deadline_passed(what, self.download_timeout) from None

    async def _stream(self, url: str, what: str, dest: Path) -> Downloaded:
        import httpx

        origin = httpx.URL(url)
        for _hop in range(_MAX_REDIRECTS + 1):
            async with self._http.stream("GET", url) as response:
                if response.is_redirect:
                    target = origin.join(response.headers.get("location", ""))
                    if (target.scheme, target.host, target.port) != (
                        origin.scheme,
                        origin.host,
                        origin.port,
                    ):
                        raise StorageUnavailable(
                            f"storage redirected {what} to another origin ({target.host});"
                            " not followed: the service key is sent only to SUPABASE_URL"
                        )
                    url = str(target)
                    continue
                if response.status_code >= 400:
                    raise _classify(await _api_error(response), what)
                sink = _Sink(dest, what, self.max_bytes)
                try:
                    declared = response.headers.get("content-length", "")
                    sink.check_declared(int(declared) if declared.isdigit() else None)
                    pending = bytearray()
                    async for chunk in response.aiter_bytes():
                        pending += chunk
                        if len(pending) >= _CHUNK:
                            # A big object is written and hashed off the loop, a chunk at a time.
                            await asyncio.to_thread(sink.write, bytes(pending))
                            pending.clear()
                    if pending:
                        sink.write(bytes(pending))
                    return sink.close()
                except BaseException:
                    sink.abort()
                    raise
        raise StorageUnavailable(f"storage redirected {what} more than {_MAX_REDIRECTS} times")

    async def upload(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        _check_name(bucket, name)
        options: FileOptions = {"content-type": content_type, "upsert": "true"}
        await self._retrying(
            lambda: self._client.from_(bucket).upload(_escape(name), data, options),
            f"{bucket}/{name}",
        )
        return object_metadata(data, content_type)

    async def check_credentials(self, bucket: str) -> None:
        """Does Storage accept the service key, and does ``bucket`` exist? ``StorageNotConfigured``
        names SUPABASE_SERVICE_ROLE_KEY or the bucket when not; ``StorageUnavailable`` when
        Storage cannot answer at all."""
        import httpx

        try:
            response = await self._http.get(self._base + "bucket/" + quote(bucket, safe=""))
        except httpx.TimeoutException as exc:
            raise StorageUnavailable("storage timed out checking the credentials") from exc
        except httpx.HTTPError as exc:
            raise StorageUnavailable(
                f"storage unreachable checking the credentials: {exc!r}"
            ) from exc
        if response.status_code == 200:
            return None
        error = await _api_error(response)
        status = _status_of(error)
        if status in (401, 403):
            raise StorageNotConfigured(
                "Supabase Storage rejects SUPABASE_SERVICE_ROLE_KEY"
                f" (statusCode {status}: {_message_of(error)}); set the project's service-role key"
            )
        if status == 404:
            raise StorageNotConfigured(
                f"Supabase Storage has no bucket {bucket!r} visible to SUPABASE_SERVICE_ROLE_KEY:"
                " the bucket is missing, or the key is not the service-role key"
            )
        raise _classify(error, f"bucket {bucket}")

    async def aclose(self) -> None:
        await self._http.aclose()


def _escape(name: str) -> str:
    # storage3 percent-decodes object paths; escape '%' so a literal "%41" stays "%41".
    return name.replace("%", "%25")


async def _translate(op: Callable[[], Awaitable[_T]], what: str) -> _T:
    """Run one storage3 call, turning its errors into ours."""
    import httpx
    from storage3.exceptions import StorageApiError

    try:
        return await op()
    except StorageApiError as exc:
        raise _classify(exc, what) from exc
    except StorageError:
        raise
    except ValueError as exc:  # storage3 refuses dot segments itself
        raise InvalidObjectName(f"{what}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise StorageUnavailable(f"storage timed out on {what}") from exc
    except httpx.HTTPError as exc:
        raise StorageUnavailable(f"storage unreachable for {what}: {exc!r}") from exc


async def _api_error(response: Any) -> Any:
    """The StorageApiError storage3 would raise for this error response (body read bounded)."""
    from storage3.exceptions import StorageApiError

    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > 64 << 10:
            break
    try:
        parsed = json.loads(bytes(body))
        return StorageApiError(parsed["message"], parsed["error"], parsed["statusCode"])
    except (KeyError, TypeError, ValueError):
        text = bytes(body[:500]).decode("utf-8", "replace")
        return StorageApiError(
            f"Unable to parse error message: {text}", "InternalError", response.status_code
        )


def check_storage_url(url: str, *, allow_insecure_http: bool = False) -> None:
    """Refuse a plain-http storage URL unless it is loopback or explicitly allowed."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" or allow_insecure_http:
        return
    host = (parts.hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if parts.scheme == "http" and loopback:
        return
    raise StorageError(
        f"SUPABASE_URL {parts.scheme}://{host} is not https: the service key would cross the"
        " network in clear (plain http is accepted for loopback, or with"
        " EMGD_ALLOW_INSECURE_HTTP=true)"
    )


def _status_of(exc: Any) -> int:
    # Supabase reports most failures as HTTP 400 with the real status in the body's statusCode.
    try:
        return int(str(exc.status))
    except ValueError:
        return 0


def _message_of(exc: Any) -> str:
    return str(getattr(exc, "message", "") or exc)


def _classify(exc: Any, what: str) -> StorageError:
    status = _status_of(exc)
    code = str(getattr(exc, "code", "") or "")
    message = _message_of(exc)
    if code.lower() in ("bucket not found", "nosuchbucket") or status in (401, 403):
        # Also what a rejected key gets (served as anon): never blame the object for it.
        return StorageNotConfigured(
            f"storage answered {message!r} for {what}: SUPABASE_SERVICE_ROLE_KEY is rejected or"
            " the bucket does not exist"
        )
    if status == 404 or code.lower() in ("not_found", "nosuchkey"):
        return ObjectNotFound(f"object not found: {what}")
    if status == 400 and code.lower() == "invalidkey":
        return InvalidObjectName(f"storage refuses the object name of {what}: {message}")
    if status >= 500 or status in (401, 403, 408, 429) or status == 0:
        return StorageUnavailable(f"storage error {status} on {what}: {message}")
    return StorageError(f"storage refused {what} (HTTP {status} {code}): {message}")


def make_storage(settings: Settings) -> StorageBackend:
    max_bytes = int(settings.max_file_mb * 1_000_000)
    if settings.storage_backend == "local":
        return LocalStorage(
            settings.local_storage_dir,
            download_timeout=settings.download_timeout,
            max_bytes=max_bytes,
        )
    if not settings.supabase_url or settings.supabase_service_role_key is None:
        raise StorageError("supabase storage needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    return SupabaseStorage(
        settings.supabase_url,
        settings.supabase_service_role_key.get_secret_value(),
        timeout=settings.storage_timeout,
        download_timeout=settings.download_timeout,
        max_bytes=max_bytes,
        allow_insecure_http=settings.allow_insecure_http,
    )
