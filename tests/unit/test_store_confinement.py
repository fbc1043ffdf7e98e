"""The local store's confinement walks only the key's components; it must refuse exactly what a
full `Path.resolve` of root/key would place outside the root, symlinks of every shape included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asr_assets.core.storage import UnsafeKeyError
from asr_assets.resources.object_store import LocalObjectStore


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    (root / "a" / "link").symlink_to(outside)
    (root / "a" / "b" / "up").symlink_to("../../..")
    (root / "inner").symlink_to(root / "a" / "b")
    (root / "a" / "filelink").symlink_to(outside / "secret")
    (root / "dangling").symlink_to("/nonexistent/x")
    (root / "chain").symlink_to("inner")
    (root / "a" / "b" / "back").symlink_to("../../a")
    (root / "loop").symlink_to("loop")
    # The root itself reached through a symlink: keys are judged against its real location.
    (tmp_path / "root-alias").symlink_to(root)
    return tmp_path


CASES = {
    "a/link/secret": False,
    "a/b/up/outside/secret": False,
    "inner/x": True,
    "chain/new.wav": True,
    "a/b/back/b/file": True,
    "a/filelink": False,
    "dangling": False,
    "a/b/new/file": True,
    "not/yet/there.wav": True,
}


def _resolve_oracle(root: Path, key: str) -> bool:
    real = root.resolve()
    resolved = (real / key).resolve()
    return resolved == real or resolved.is_relative_to(real)


@pytest.mark.parametrize("alias", [False, True])
@pytest.mark.parametrize("key", sorted(CASES))
def test_confinement_matches_a_full_resolve(tree: Path, key: str, alias: bool) -> None:
    root = tree / ("root-alias" if alias else "root")
    store = LocalObjectStore(root=str(root))
    try:
        path = store._path(key)
        allowed = True
    except UnsafeKeyError:
        allowed = False
    assert allowed == CASES[key] == _resolve_oracle(root, key)
    if allowed:
        assert os.path.realpath(path).startswith(os.path.realpath(root))


def test_a_symlink_loop_is_refused_or_stays_inside(tree: Path) -> None:
    store = LocalObjectStore(root=str(tree / "root"))
    try:
        path = store._path("loop")
    except (UnsafeKeyError, OSError):
        return
    assert str(path).startswith(os.path.realpath(tree / "root"))
