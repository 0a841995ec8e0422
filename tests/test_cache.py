"""AssetCache: keys, TTL, two users at once, and no key on disk."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import ROOT

from nvmedia.cache import CACHE_FILE, AssetCache, default_cache_path, key_fingerprint

KEY = "nvapi-CACHE-SECRET-KEY-DO-NOT-STORE-31337"
URL = "https://api.nvcf.nvidia.com/v2/nvcf/assets"
DIGEST = "ab" * 32
ASSET = "b5b841c3-11c2-4c34-b057-9475e82c5369"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_put_then_get_returns_the_asset_id(tmp_path: Path) -> None:
    with AssetCache(tmp_path / "c.sqlite3") as cache:
        assert cache.get(DIGEST, "image/png", URL, KEY) is None
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        assert cache.get(DIGEST, "image/png", URL, KEY) == ASSET


@pytest.mark.parametrize(
    ("digest", "content_type", "url", "key"),
    [
        ("cd" * 32, "image/png", URL, KEY),
        (DIGEST, "image/jpeg", URL, KEY),
        (DIGEST, "image/png", "http://127.0.0.1:9/v2/nvcf/assets", KEY),
        (DIGEST, "image/png", URL, "nvapi-another-key"),
        (DIGEST, "image/png", URL, None),
    ],
)
def test_a_different_content_type_service_or_key_misses(
    tmp_path: Path, digest: str, content_type: str, url: str, key: str | None
) -> None:
    with AssetCache(tmp_path / "c.sqlite3") as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        assert cache.get(digest, content_type, url, key) is None


def test_a_trailing_slash_names_the_same_service(tmp_path: Path) -> None:
    with AssetCache(tmp_path / "c.sqlite3") as cache:
        cache.put(DIGEST, "image/png", URL + "/", KEY, ASSET)
        assert cache.get(DIGEST, "image/png", URL, KEY) == ASSET


def test_rows_expire_after_the_ttl(tmp_path: Path) -> None:
    clock = Clock()
    with AssetCache(tmp_path / "c.sqlite3", clock=clock) as cache:
        assert cache.ttl_s == 12 * 3600
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        clock.now += 12 * 3600 - 1
        assert cache.get(DIGEST, "image/png", URL, KEY) == ASSET
        clock.now += 2
        assert cache.get(DIGEST, "image/png", URL, KEY) is None


def test_a_shorter_ttl_applies_to_rows_written_earlier(tmp_path: Path) -> None:
    clock = Clock()
    with AssetCache(tmp_path / "c.sqlite3", clock=clock) as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
    clock.now += 120
    with AssetCache(tmp_path / "c.sqlite3", ttl_s=60, clock=clock) as strict:
        assert strict.get(DIGEST, "image/png", URL, KEY) is None


def test_expired_rows_are_purged_on_write(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "c.sqlite3"
    with AssetCache(path, ttl_s=10, clock=clock) as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        clock.now += 11
        cache.put("cd" * 32, "image/png", URL, KEY, "c0ffee00-0000-4000-8000-000000000000")
    rows = sqlite3.connect(path).execute("SELECT asset_id FROM assets").fetchall()
    assert rows == [("c0ffee00-0000-4000-8000-000000000000",)]


def test_put_replaces_the_older_row(tmp_path: Path) -> None:
    newer = "c0ffee00-0000-4000-8000-000000000000"
    with AssetCache(tmp_path / "c.sqlite3") as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        cache.put(DIGEST, "image/png", URL, KEY, newer)
        assert cache.get(DIGEST, "image/png", URL, KEY) == newer


def test_forget_drops_every_row_of_an_asset_and_clear_drops_all(tmp_path: Path) -> None:
    with AssetCache(tmp_path / "c.sqlite3") as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        cache.put(DIGEST, "image/png", URL, "nvapi-other", ASSET)
        cache.put("cd" * 32, "audio/wav", URL, KEY, "c0ffee00-0000-4000-8000-000000000000")
        assert cache.forget(ASSET) == 2
        assert cache.get(DIGEST, "image/png", URL, KEY) is None
        assert cache.clear() == 1
        assert cache.get("cd" * 32, "audio/wav", URL, KEY) is None


def test_the_key_is_never_written_only_its_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cache = AssetCache(path)
    cache.put(DIGEST, "image/png", URL, KEY, ASSET)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database, its WAL and shared memory
    assert KEY.encode() not in on_disk
    assert key_fingerprint(KEY).encode() in on_disk
    cache.close()
    assert KEY.encode() not in path.read_bytes()
    assert KEY not in repr(cache)


def test_key_fingerprint_is_short_stable_and_one_way() -> None:
    fingerprint = key_fingerprint(KEY)
    assert fingerprint == key_fingerprint(KEY) and len(fingerprint) == 16
    assert fingerprint not in KEY and fingerprint != key_fingerprint(KEY + "x")
    assert key_fingerprint(None) == key_fingerprint("") == "-"


def test_database_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with AssetCache(path) as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_two_connections_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with AssetCache(path) as first, AssetCache(path) as second:
        first.put(DIGEST, "image/png", URL, KEY, ASSET)
        assert second.get(DIGEST, "image/png", URL, KEY) == ASSET
        second.forget(ASSET)
        assert first.get(DIGEST, "image/png", URL, KEY) is None


def test_a_reader_is_not_blocked_by_an_open_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with AssetCache(path) as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM assets")
        assert cache.get(DIGEST, "image/png", URL, KEY) == ASSET  # WAL: readers see the last commit
        writer.execute("COMMIT")
        writer.close()
        assert cache.get(DIGEST, "image/png", URL, KEY) is None


def test_two_processes_can_write_at_the_same_time(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from nvmedia.cache import AssetCache
        tag, path = sys.argv[1], Path(sys.argv[2])
        sys.stdin.readline()  # both start together
        with AssetCache(path) as cache:
            for i in range(150):
                cache.put(f"{tag}{i:062d}", "image/png", "http://x/v2/nvcf/assets", "k", f"{tag}-{i}")
                assert cache.get(f"{tag}{i:062d}", "image/png", "http://x/v2/nvcf/assets", "k") == f"{tag}-{i}"
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, tag, str(path)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag in ("aa", "bb")
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    with AssetCache(path) as cache:
        assert cache.get(f"aa{149:062d}", "image/png", "http://x/v2/nvcf/assets", "k") == "aa-149"
        count = sqlite3.connect(path).execute("SELECT COUNT(*) FROM assets").fetchone()
    assert count == (300,)


def test_default_path_follows_nvmedia_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVMEDIA_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_path() == tmp_path / "cache" / CACHE_FILE
    with AssetCache() as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
    assert (tmp_path / "cache" / CACHE_FILE).is_file()


def test_default_path_without_the_variable_is_the_user_cache_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("NVMEDIA_CACHE_DIR", raising=False)
    assert default_cache_path() == Path(platformdirs.user_cache_dir("nvmedia")) / CACHE_FILE


def test_an_unusable_database_behaves_as_an_empty_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="nvmedia.cache"), AssetCache(path) as cache:
        cache.put(DIGEST, "image/png", URL, KEY, ASSET)
        assert cache.get(DIGEST, "image/png", URL, KEY) is None
        assert cache.forget(ASSET) == 0
    assert path.read_bytes() == b"this is not a database" * 100
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 1


def test_a_negative_ttl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        AssetCache(tmp_path / "c.sqlite3", ttl_s=-1)
