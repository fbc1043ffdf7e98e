"""The local store's ordered, pruned listing returns exactly what a full sort would, page by page."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from asr_assets.resources.object_store import LocalObjectStore

# Names chosen to trip a naive directory walk: '-', '.', ' ' and '0' sort around '/'.
TRICKY_KEYS = [
    "a-b/x",
    "a.b",
    "a/b-c/d",
    "a/b/c",
    "a/b/c0",
    "a/b0",
    "a0/z",
    "ab/c",
    "audio/2026-11-27/act 1/0.wav",
    "audio/2026-11-27/act-1/0.wav",
    "audio/2026-11-27/act/0.wav",
    "audio/2026-11-270/x.wav",
    "audio/2026-11-28/été.wav",
    "audio/2026-11-28/z.wav",
    "b",
]


def reference(keys: list[str], prefix: str, start_after: str | None) -> list[str]:
    return sorted(
        k for k in keys if k.startswith(prefix) and (start_after is None or k > start_after)
    )


@pytest.fixture
def tricky_store(tmp_path: Path) -> LocalObjectStore:
    for key in TRICKY_KEYS:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    (tmp_path / "a" / ".tmp-partial").write_bytes(b"in flight")  # never listed
    return LocalObjectStore(root=str(tmp_path))


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "audio/", "audio/2026-11-27", "zzz/"])
@pytest.mark.parametrize(
    "start_after", [None, "a", "a/", "a/b", "a/b/c", "a-", "audio/2026-11-27/act", "aa", "zz"]
)
def test_listing_matches_a_full_sort(
    tricky_store: LocalObjectStore, prefix: str, start_after: str | None
) -> None:
    expected = reference(TRICKY_KEYS, prefix, start_after)
    for page_size in (1, 3, 1000):
        listed: list[str] = []
        token = start_after
        while True:
            page = tricky_store.list_page(prefix, start_after=token, max_keys=page_size)
            listed.extend(o.key for o in page.objects)
            assert len(page.objects) <= page_size
            if page.next_token is None:
                break
            token = page.next_token
        assert listed == expected, (prefix, start_after, page_size)


def test_random_trees_page_like_a_full_sort(tmp_path: Path) -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", "-", ".", "0", "z", " "]
    keys: set[str] = set()
    while len(keys) < 300:
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(3)]
        key = "/".join(parts[: rng.randint(1, 3)])
        if key.strip(". ") != key or any(
            p in (".", "..") or p.strip() != p for p in key.split("/")
        ):
            continue
        # a key cannot be both a file and a directory
        if any(k.startswith(key + "/") or key.startswith(k + "/") for k in keys):
            continue
        keys.add(key)
    for key in keys:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"1")
    store = LocalObjectStore(root=str(tmp_path))
    for prefix in ["", "a", "a/", "-", "b/z"]:
        listed = [o.key for o in store.iter_objects(prefix)]
        assert listed == reference(sorted(keys), prefix, None)


def test_an_object_deleted_while_listing_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process may delete a key between the directory scan and its stat.

    Seen under load: two runs racing to commit one partition, one sweeping stale copies while
    the other removed its staging files; the listing raised FileNotFoundError and the sweeping
    run crashed instead of finishing its commit.
    """
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    for key in ("p/a", "p/b", "p/c"):
        store.write_bytes(key, b"x")
    real_scandir = os.scandir

    def scandir_then_delete(path: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
        entries = list(real_scandir(path))
        victim = Path(path) / "b"
        if victim.is_file():
            victim.unlink()  # gone after the scan, before the stat
        return entries

    monkeypatch.setattr("asr_assets.resources.object_store.os.scandir", scandir_then_delete)
    page = store.list_page("p/")
    assert [info.key for info in page.objects] == ["p/a", "p/c"]
