import shutil
from pathlib import Path

import pytest

from asr_assets.inference.model_dir import (
    ModelIntegrityError,
    model_info,
    read_vocabulary,
    verify_checksums,
)


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_verified_model_has_a_stable_hash(model_copy: Path) -> None:
    first = verify_checksums(model_copy)
    assert first == verify_checksums(model_copy)
    info = model_info(model_copy, first)
    assert (info.name, info.version, info.sha256) == ("tiny-random", "test", first)


def test_tampered_weights_are_refused(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelIntegrityError, match="mismatch"):
        verify_checksums(model_copy)


def test_unlisted_file_is_refused(model_copy: Path) -> None:
    (model_copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelIntegrityError, match="not covered"):
        verify_checksums(model_copy)


def test_missing_checksum_file_is_refused(model_copy: Path) -> None:
    (model_copy / "SHA256SUMS").unlink()
    with pytest.raises(ModelIntegrityError, match="no SHA256SUMS"):
        verify_checksums(model_copy)


def test_model_card_is_not_part_of_the_hash(model_copy: Path) -> None:
    before = verify_checksums(model_copy)
    (model_copy / "MODEL_CARD.md").write_text("edited card")
    assert verify_checksums(model_copy) == before


def test_vocabulary_blank_and_separator(model_copy: Path) -> None:
    vocabulary = read_vocabulary(model_copy)
    assert vocabulary.blank_id == 0 and vocabulary.separator_id == 1
    assert vocabulary.letter_ids(["a", "z"]) == [2, 27]
