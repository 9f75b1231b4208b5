"""Storage backends: the local folder (hostile names) and Supabase Storage over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from daemon.settings import load_settings
from daemon.storage import (
    InvalidObjectName,
    LocalStorage,
    ObjectNotFound,
    StorageBackend,
    StorageError,
    StorageNotConfigured,
    StorageUnavailable,
    SupabaseStorage,
    make_storage,
)
from tests.storage_server import start_storage_server

BUCKET = "c3d-examples"
KEY = "test-service-role-key"


# ---------------------------------------------------------------- local folder


async def test_local_round_trip_and_metadata(tmp_path):
    store = LocalStorage(tmp_path / "s")
    assert isinstance(store, StorageBackend)
    meta = await store.upload(BUCKET, "p1/session 1.c3d", b"abc", content_type="application/x")
    assert (tmp_path / "s" / BUCKET / "p1" / "session 1.c3d").read_bytes() == b"abc"
    assert meta["size"] == meta["contentLength"] == 3
    assert meta["mimetype"] == "application/x"
    assert meta["eTag"] == f'"{hashlib.md5(b"abc").hexdigest()}"'
    assert await store.download(BUCKET, "p1/session 1.c3d") == b"abc"
    # overwrite replaces atomically and leaves no temporary files behind
    await store.upload(BUCKET, "p1/session 1.c3d", b"second")
    assert await store.download(BUCKET, "p1/session 1.c3d") == b"second"
    assert sorted(p.name for p in (tmp_path / "s" / BUCKET / "p1").iterdir()) == ["session 1.c3d"]
    await store.aclose()


async def test_local_missing_object_is_not_found(tmp_path):
    store = LocalStorage(tmp_path)
    with pytest.raises(ObjectNotFound, match=r"c3d-examples/nope\.c3d"):
        await store.download(BUCKET, "nope.c3d")
    (tmp_path / BUCKET / "dir").mkdir(parents=True)
    with pytest.raises(ObjectNotFound):
        await store.download(BUCKET, "dir")


HOSTILE = [
    "../outside.c3d",
    "p1/../../outside.c3d",
    "/etc/passwd",
    "p1\\..\\..\\x.c3d",
    "p1/\x00.c3d",
    "p1//x.c3d",
    "./x.c3d",
    "p1/.",
    "p1/",
    "",
    "a" * 2000,
]


@pytest.mark.parametrize("name", HOSTILE)
async def test_local_rejects_hostile_names(tmp_path, name):
    root = tmp_path / "root"
    store = LocalStorage(root)
    with pytest.raises(InvalidObjectName):
        await store.upload(BUCKET, name, b"x")
    with pytest.raises(InvalidObjectName):
        await store.download(BUCKET, name)
    assert not (tmp_path / "outside.c3d").exists()


@pytest.mark.parametrize("bucket", ["..", "a/b", "", "/tmp", "."])
async def test_local_rejects_hostile_buckets(tmp_path, bucket):
    with pytest.raises(InvalidObjectName):
        await LocalStorage(tmp_path / "root").upload(bucket, "x.c3d", b"x")


async def test_local_symlink_cannot_lead_out_of_the_root(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.c3d").write_bytes(b"private")
    root = tmp_path / "root"
    (root / BUCKET).mkdir(parents=True)
    (root / BUCKET / "link").symlink_to(secret)
    store = LocalStorage(root)
    with pytest.raises(InvalidObjectName):
        await store.download(BUCKET, "link/key.c3d")
    with pytest.raises(InvalidObjectName):
        await store.upload(BUCKET, "link/new.c3d", b"x")
    assert not (secret / "new.c3d").exists()


async def test_local_object_that_is_a_symlink_out_is_refused_and_one_within_is_read(tmp_path):
    secret = tmp_path / "secret.c3d"
    secret.write_bytes(b"private")
    root = tmp_path / "root"
    (root / BUCKET / "p").mkdir(parents=True)
    (root / BUCKET / "p" / "out.c3d").symlink_to(secret)
    (root / BUCKET / "p" / "real.c3d").write_bytes(b"mine")
    (root / BUCKET / "p" / "alias.c3d").symlink_to(root / BUCKET / "p" / "real.c3d")
    store = LocalStorage(root)
    with pytest.raises(InvalidObjectName):
        await store.download(BUCKET, "p/out.c3d")
    assert await store.download(BUCKET, "p/alias.c3d") == b"mine"


async def test_local_overlong_segment_is_an_invalid_name(tmp_path):
    with pytest.raises(InvalidObjectName):
        await LocalStorage(tmp_path).upload(BUCKET, "p/" + "x" * 300 + ".c3d", b"x")


# ---------------------------------------------------------------- Supabase over real HTTP


@pytest.fixture
async def server():
    srv = await start_storage_server(key=KEY, objects={(BUCKET, "p1/a b.c3d"): b"\x02\x50data"})
    yield srv
    await srv.stop()


async def test_supabase_download_bytes(server):
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        assert await store.download(BUCKET, "p1/a b.c3d") == b"\x02\x50data"
        assert server.requests == [("GET", BUCKET, "p1/a b.c3d")]
    finally:
        await store.aclose()


async def test_supabase_missing_object_is_permanent_and_not_retried(server):
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3)
    try:
        with pytest.raises(ObjectNotFound, match=r"c3d-examples/p1/gone\.c3d"):
            await store.download(BUCKET, "p1/gone.c3d")
        assert len(server.requests) == 1
    finally:
        await store.aclose()


async def test_supabase_plain_http_404_is_also_not_found(server):
    server.fail_next(1, status=404)  # newer Storage versions answer 404 directly
    server.fail_next(1, status=404, body="Not Found")  # a proxy in front of it
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3)
    try:
        for _ in range(2):
            with pytest.raises(ObjectNotFound):
                await store.download(BUCKET, "p1/a b.c3d")
        assert len(server.requests) == 2
    finally:
        await store.aclose()


async def test_supabase_503_is_retried_then_succeeds(server):
    server.fail_next(2)
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3)
    try:
        assert await store.download(BUCKET, "p1/a b.c3d") == b"\x02\x50data"
        assert len(server.requests) == 3
    finally:
        await store.aclose()


async def test_supabase_persistent_5xx_is_unavailable(server):
    server.fail_next(3)
    server.fail_next(3, status=502, body="<html>bad gateway</html>")
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3)
    try:
        with pytest.raises(StorageUnavailable, match="503"):
            await store.download(BUCKET, "p1/a b.c3d")
        with pytest.raises(StorageUnavailable, match="502"):
            await store.download(BUCKET, "p1/a b.c3d")
        assert len(server.requests) == 6
    finally:
        await store.aclose()


async def test_supabase_timeout_and_refused_connection_are_unavailable(server):
    server.delay = 6.0
    store = SupabaseStorage(server.url, KEY, timeout=0.2, retries=1)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="timed out"):
            await store.download(BUCKET, "p1/a b.c3d")
        # gave up at the 0.2 s timeout, not after the 6 s answer (a loaded machine adds seconds)
        assert time.monotonic() - started < 4.0
    finally:
        await store.aclose()
    url = server.url
    await server.stop()
    store = SupabaseStorage(url, KEY, timeout=1, retries=2)
    try:
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await store.download(BUCKET, "p1/a b.c3d")
    finally:
        await store.aclose()


@pytest.mark.parametrize("key", ["wrong", "eyJhbGciOiJIUzI1NiJ9.e30.garbage"])
async def test_a_rejected_key_is_a_configuration_error_not_a_missing_object(server, key):
    """Real Storage serves a bad key as anon: "Bucket not found" (HTTP 400, statusCode 404).
    That must never read as "object not found", which fails a job for good."""
    store = SupabaseStorage(server.url, key, timeout=5, retries=1)
    try:
        with pytest.raises(StorageNotConfigured, match="SUPABASE_SERVICE_ROLE_KEY") as caught:
            await store.download(BUCKET, "p1/a b.c3d")
        assert isinstance(caught.value, StorageUnavailable)
        assert key not in str(caught.value)
        with pytest.raises(StorageNotConfigured, match="rejects SUPABASE_SERVICE_ROLE_KEY"):
            await store.check_credentials(BUCKET)
    finally:
        await store.aclose()


async def test_the_credential_check_passes_a_good_key_and_names_a_missing_bucket(server):
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=1)
    try:
        assert await store.check_credentials(BUCKET) is None
        with pytest.raises(StorageNotConfigured, match="no bucket 'elsewhere'"):
            await store.check_credentials("elsewhere")
        with pytest.raises(StorageNotConfigured):
            await store.download("elsewhere", "p1/a b.c3d")
    finally:
        await store.aclose()


async def test_supabase_upload_then_download(server):
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        meta = await store.upload(BUCKET, "p2/new.c3d", b"payload", content_type="application/x")
        assert server.objects[(BUCKET, "p2/new.c3d")] == b"payload"
        assert meta["size"] == 7 and meta["mimetype"] == "application/x"
        await store.upload(BUCKET, "p2/new.c3d", b"v2")  # overwrite is an upsert
        assert await store.download(BUCKET, "p2/new.c3d") == b"v2"
    finally:
        await store.aclose()


@pytest.mark.parametrize("name", ["../x.c3d", "p1/../../x.c3d", "/abs.c3d", "a\x00b"])
async def test_supabase_rejects_hostile_names_before_any_request(server, name):
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        with pytest.raises(InvalidObjectName):
            await store.download(BUCKET, name)
        assert server.requests == []
    finally:
        await store.aclose()


async def test_concurrent_downloads_share_one_client(server):
    for i in range(20):
        server.objects[(BUCKET, f"p/{i}.c3d")] = bytes([i]) * 1000
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        got = await asyncio.gather(*(store.download(BUCKET, f"p/{i}.c3d") for i in range(20)))
        assert [g[0] for g in got] == list(range(20))
    finally:
        await store.aclose()


async def test_make_storage_picks_the_backend(tmp_path, server, monkeypatch):
    monkeypatch.delenv("EMGD_STORAGE_BACKEND", raising=False)
    local = make_storage(load_settings(database_url="postgresql://x/y", local_storage_dir=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == tmp_path.resolve()
    remote = make_storage(
        load_settings(
            database_url="postgresql://x/y",
            storage_backend="supabase",
            supabase_url=server.url,
            supabase_service_role_key=KEY,
        )
    )
    try:
        assert isinstance(remote, SupabaseStorage)
        assert await remote.download(BUCKET, "p1/a b.c3d") == b"\x02\x50data"
    finally:
        await remote.aclose()
    assert issubclass(ObjectNotFound, StorageError) and issubclass(StorageUnavailable, StorageError)


async def test_supabase_names_with_storage_s_special_characters_mean_themselves(server):
    # Every character real Storage accepts in a key beyond letters and digits, "?" included
    # (which must not start a query string) and "+" (which must not become a space).
    name = "p1/a b+c&d=e$f@g;h:i,j?k!l'm(n)o*p_q-r.c3d"
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        await store.upload(BUCKET, name, b"odd")
        assert server.objects[(BUCKET, name)] == b"odd"
        assert await store.download(BUCKET, name) == b"odd"
    finally:
        await store.aclose()


@pytest.mark.parametrize("name", ["p1/100%41.c3d", "p1/é.c3d", "p1/tab\t.c3d", 'p1/"q".c3d'])
async def test_keys_real_storage_refuses_are_invalid_names(server, name):
    store = SupabaseStorage(server.url, KEY, timeout=5)
    try:
        with pytest.raises(InvalidObjectName, match="Invalid key"):
            await store.upload(BUCKET, name, b"odd")
        assert server.objects.keys() == {(BUCKET, "p1/a b.c3d")}
    finally:
        await store.aclose()


async def test_server_runs_as_a_separate_process_for_e2e_daemons():
    import sys
    from pathlib import Path

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.storage_server",
        "--port",
        "0",
        "--key",
        KEY,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[1],
    )
    try:
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        store = SupabaseStorage(url, KEY, timeout=5)
        try:
            await store.upload(BUCKET, "p/x.c3d", b"over the wire")
            assert await store.download(BUCKET, "p/x.c3d") == b"over the wire"
            with pytest.raises(ObjectNotFound):
                await store.download(BUCKET, "p/y.c3d")
        finally:
            await store.aclose()
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_api_gateway_s_invalid_api_key_answer_is_a_configuration_error(server):
    # What Supabase's API gateway answers for an apikey it does not know, before Storage sees
    # the request (as reported by users of the hosted platform).
    gateway = (
        '{"message":"Invalid API key",'
        '"hint":"Double check your Supabase `anon` or `service_role` API key."}'
    )
    server.fail_next(2, status=401, body=gateway)
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=1)
    try:
        with pytest.raises(StorageNotConfigured, match="SUPABASE_SERVICE_ROLE_KEY"):
            await store.download(BUCKET, "p1/a b.c3d")
        with pytest.raises(StorageNotConfigured, match="rejects SUPABASE_SERVICE_ROLE_KEY"):
            await store.check_credentials(BUCKET)
    finally:
        await store.aclose()
