"""Downloads stream to a file on both backends: memory stays one chunk whatever the size, the
size limit holds while the bytes arrive (not only against metadata), the service key never
follows a redirect to another origin, and a plain-http storage URL is refused off loopback."""

from __future__ import annotations

import hashlib
import os

import pytest

from daemon.settings import SettingsError, load_settings
from daemon.storage import (
    LocalStorage,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    SupabaseStorage,
    check_storage_url,
)
from tests.storage_server import start_storage_server

KEY = "test-service-role-key"
BUCKET = "c3d-examples"
MB = 1_000_000


@pytest.fixture
async def server():
    srv = await start_storage_server(key=KEY)
    yield srv
    await srv.stop()


async def test_supabase_streams_to_a_file_with_size_and_sha256(server, tmp_path):
    data = os.urandom(5 * MB + 17)  # several chunks, a ragged tail
    server.objects[(BUCKET, "p/big.c3d")] = data
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        got = await store.download_to(BUCKET, "p/big.c3d", tmp_path / "obj")
    finally:
        await store.aclose()
    assert got.path == tmp_path / "obj" and got.path.read_bytes() == data
    assert (got.size, got.sha256) == (len(data), hashlib.sha256(data).hexdigest())


async def test_local_streams_to_a_file_with_size_and_sha256(tmp_path):
    data = os.urandom(3 * MB + 5)
    store = LocalStorage(tmp_path / "root")
    await store.upload(BUCKET, "p/big.c3d", data)
    got = await store.download_to(BUCKET, "p/big.c3d", tmp_path / "obj")
    assert got.path.read_bytes() == data
    assert (got.size, got.sha256) == (len(data), hashlib.sha256(data).hexdigest())


async def test_a_declared_size_above_the_limit_is_refused_before_reading(server, tmp_path):
    server.objects[(BUCKET, "p/huge.c3d")] = b"x" * (3 * MB)
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3, max_bytes=1 * MB)
    try:
        with pytest.raises(ObjectTooLarge, match=r"3\.0 MB, above the 1 MB limit"):
            await store.download_to(BUCKET, "p/huge.c3d", tmp_path / "obj")
    finally:
        await store.aclose()
    assert len(server.requests) == 1  # permanent: not retried
    assert not isinstance(ObjectTooLarge("x"), StorageUnavailable)
    assert (tmp_path / "obj").stat().st_size == 0


async def test_a_body_without_a_size_is_cut_at_the_limit_not_read_whole(server, tmp_path):
    """No Content-Length (chunked): the 64 MiB body is refused once 1 MB has arrived."""
    server.objects[(BUCKET, "p/endless.c3d")] = b"\x01" * (64 << 20)
    server.chunked = True
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3, max_bytes=1 * MB)
    try:
        with pytest.raises(ObjectTooLarge, match=r"passed 1\.\d MB, above the 1 MB limit"):
            await store.download_to(BUCKET, "p/endless.c3d", tmp_path / "obj")
    finally:
        await store.aclose()
    assert len(server.requests) == 1
    assert (tmp_path / "obj").stat().st_size <= 1 * MB
    # what crossed the socket before the client hung up is a few buffers, not the body
    assert server.sent < 32 << 20, server.sent


async def test_the_limit_holds_for_the_local_backend(tmp_path):
    store = LocalStorage(tmp_path / "root", max_bytes=1 * MB)
    await store.upload(BUCKET, "p/ok.c3d", b"y" * MB)
    await store.upload(BUCKET, "p/big.c3d", b"y" * (MB + 1))
    assert (await store.download_to(BUCKET, "p/ok.c3d", tmp_path / "a")).size == MB
    with pytest.raises(ObjectTooLarge, match="above the 1 MB limit"):
        await store.download_to(BUCKET, "p/big.c3d", tmp_path / "b")
    assert (tmp_path / "b").stat().st_size == 0  # refused on its size, before reading


async def test_the_daemon_settings_pass_the_limit_to_both_backends(server, tmp_path):
    common = {"database_url": "postgresql://x/y", "max_file_mb": 0.5}
    from daemon.storage import make_storage

    local = make_storage(load_settings(local_storage_dir=tmp_path, **common))
    remote = make_storage(
        load_settings(
            storage_backend="supabase",
            supabase_url=server.url,
            supabase_service_role_key=KEY,
            **common,
        )
    )
    try:
        assert local.max_bytes == remote.max_bytes == 500_000
    finally:
        await remote.aclose()


async def test_a_redirect_to_another_origin_is_not_followed(server, tmp_path):
    other = await start_storage_server(key=KEY, objects={(BUCKET, "p/a.c3d"): b"elsewhere"})
    server.redirects[(BUCKET, "p/a.c3d")] = f"{other.url}/storage/v1/object/{BUCKET}/p/a.c3d"
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=1)
    try:
        with pytest.raises(StorageUnavailable, match=r"another origin \(127\.0\.0\.1\)"):
            await store.download_to(BUCKET, "p/a.c3d", tmp_path / "obj")
    finally:
        await store.aclose()
        await other.stop()
    assert other.requests == [] and other.seen_headers == []  # the key never reached it


async def test_a_redirect_on_the_same_origin_is_followed(server, tmp_path):
    server.objects[(BUCKET, "p/moved.c3d")] = b"here"
    server.redirects[(BUCKET, "p/a.c3d")] = f"/storage/v1/object/{BUCKET}/p/moved.c3d"
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=1)
    try:
        got = await store.download_to(BUCKET, "p/a.c3d", tmp_path / "obj")
    finally:
        await store.aclose()
    assert got.path.read_bytes() == b"here"
    assert [r[2] for r in server.requests] == ["p/a.c3d", "p/moved.c3d"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://abc.supabase.co", True),
        ("http://127.0.0.1:54321", True),
        ("http://localhost:54321", True),
        ("http://[::1]:54321", True),
        ("http://abc.supabase.co", False),
        ("http://10.0.0.5:8000", False),
    ],
)
def test_plain_http_only_on_loopback(url, allowed):
    if allowed:
        check_storage_url(url)
    else:
        with pytest.raises(StorageError, match="EMGD_ALLOW_INSECURE_HTTP"):
            check_storage_url(url)
        with pytest.raises(StorageError):
            SupabaseStorage(url, KEY)
        check_storage_url(url, allow_insecure_http=True)


def test_the_settings_refuse_plain_http_unless_opted_in():
    common = {
        "database_url": "postgresql://x/y",
        "storage_backend": "supabase",
        "supabase_url": "http://storage.example.org",
        "supabase_service_role_key": KEY,
    }
    with pytest.raises(SettingsError, match=r"SUPABASE_URL.*not https"):
        load_settings(**common)
    assert load_settings(allow_insecure_http=True, **common).allow_insecure_http
