"""Workload manifests and the registry: validation, version resolution, clear refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from asr_assets.platform.workloads import (
    RegistryError,
    UnknownWorkloadError,
    WorkloadRegistry,
)
from asr_assets.platform.workloads.models import parse_arrow_type

BASE = """
name: {name}
version: {version}
description: d
owner_team: t
command: [python, main.py]
input: {{kinds: [prefix]}}
output:
  - {{name: key, type: string}}
  - {{name: status, type: string}}
  - {{name: reason_code, type: string}}
"""


def _write(folder: Path, sub: str, text: str) -> Path:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    path = folder / sub / "workload.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("string", pa.string()),
        ("float32", pa.float32()),
        ("list<int32>", pa.list_(pa.int32())),
        (
            "list<struct<a: string, b: list<float64>>>",
            pa.list_(pa.struct([("a", pa.string()), ("b", pa.list_(pa.float64()))])),
        ),
    ],
)
def test_arrow_types_parse(text: str, expected: pa.DataType) -> None:
    assert parse_arrow_type(text) == expected


@pytest.mark.parametrize("text", ["strin", "list<int32", "struct<a string>", "int32 extra"])
def test_bad_arrow_types_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_arrow_type(text)


def test_shipped_workloads_load_and_resolve() -> None:
    registry = WorkloadRegistry.from_environment({})
    letters = registry.resolve("letter-scoring:1")
    assert letters.ref == "letter-scoring:1.1.0"
    assert letters.field_types() == {"expected_text": pa.string()}
    assert (
        registry.resolve("transcribe").output_schema().field("words").type.value_type.num_fields
        == 4
    )


def test_resolve_picks_the_newest_matching_version(tmp_path: Path) -> None:
    for version in ("1.0.0", "1.10.0", "1.2.5", "2.0.0"):
        _write(tmp_path, version, BASE.format(name="asr-x", version=version))
    registry = WorkloadRegistry.from_folders([tmp_path])
    assert registry.resolve("asr-x:1").version == "1.10.0"
    assert registry.resolve("asr-x:1.2").version == "1.2.5"
    assert registry.resolve("asr-x").version == "2.0.0"
    assert registry.resolve("asr-x:1.0.0").version == "1.0.0"
    with pytest.raises(UnknownWorkloadError, match=r"have 1\.0\.0, 1\.2\.5, 1\.10\.0, 2\.0\.0"):
        registry.resolve("asr-x:3")
    with pytest.raises(UnknownWorkloadError, match="no workload named 'nope'"):
        registry.resolve("nope:1")


def test_duplicates_and_invalid_manifests_each_get_one_message(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", "w", BASE.format(name="dup", version="1.0.0"))
    second = _write(tmp_path / "b", "w", BASE.format(name="dup", version="1.0.0"))
    bad_version = _write(tmp_path / "a", "v", BASE.format(name="ok", version="1.0.beta"))
    no_key = _write(
        tmp_path / "a",
        "k",
        BASE.format(name="nokey", version="1.0.0").replace("name: key", "name: id"),
    )
    not_yaml = tmp_path / "a" / "y" / "workload.yaml"
    not_yaml.parent.mkdir()
    not_yaml.write_text("name: [unclosed")
    with pytest.raises(RegistryError) as caught:
        WorkloadRegistry.from_folders([tmp_path / "a", tmp_path / "b"])
    problems = caught.value.problems
    assert len(problems) == 4
    assert any(
        str(first) in p and str(second) in p and "duplicate workload dup:1.0.0" in p
        for p in problems
    )
    assert any(str(bad_version) in p and "semantic" in p for p in problems)
    assert any(str(no_key) in p and "column `key`" in p for p in problems)
    assert any(str(not_yaml) in p and "cannot read YAML" in p for p in problems)


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "w", BASE.format(name="extra", version="1.0.0") + "gpus: 2\n")
    with pytest.raises(RegistryError, match="gpus: Extra inputs are not permitted"):
        WorkloadRegistry.from_folders([tmp_path])


def test_pinned_model_hash_matches_the_shipped_model_and_is_enforced() -> None:
    from asr_assets.inference.model_dir import verify_checksums
    from asr_assets.platform.workloads.registry import REPO_ROOT
    from asr_assets.platform.workloads.runtime import (
        ModelMismatchError,
        ShardSpec,
        check_model,
        model_dir_for,
    )

    manifest = WorkloadRegistry.from_environment({}).resolve("letter-scoring:1")
    model_dir = manifest.model_path(REPO_ROOT)
    assert verify_checksums(Path(model_dir)) == manifest.model.sha256
    spec = ShardSpec("j", 0, "i", "o", {}, model=model_dir, model_sha256=manifest.model.sha256)
    assert model_dir_for(spec) == (model_dir, manifest.model.sha256)
    own = ShardSpec("j", 0, "i", "o", {}, params={"model_dir": "/m"}, model=model_dir)
    assert model_dir_for(own) == ("/m", None)  # a job's own model is checked by its checksums
    check_model(manifest.model.sha256, manifest.model.sha256)
    with pytest.raises(ModelMismatchError, match="not the pinned"):
        check_model(manifest.model.sha256, "0" * 64)
