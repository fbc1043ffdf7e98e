import json
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


def _with_calibration(src: Path, dst: Path, payload: object) -> Path:
    import shutil

    from asr_assets.inference.model_dir import CALIBRATION_FILE, write_checksums

    shutil.copytree(src, dst)
    (dst / CALIBRATION_FILE).write_text(json.dumps(payload))
    write_checksums(dst)
    return dst


CALIBRATION = {
    "letter": {"bias": 0.5, "weight": 0.2, "flag_weight": 1.5, "n": 10},
    "insertion": {"bias": -1.0, "weight": 0.7, "n": 3},
}


def test_a_model_carries_its_own_calibration(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A calibration belongs to the weights it was fitted on: the graph's alignments stage and a
    platform job both judge with the model's `calibration.json` when it ships one."""
    from asr_assets.assets.alignments import AlignmentsConfig
    from asr_assets.core.scoring import DEFAULT_POLICY
    from asr_assets.inference.model_dir import read_calibration, verify_checksums
    from asr_assets.platform.workloads.letter_scoring import judgement_policy
    from asr_assets.resources.inference import LocalInferenceResource

    assert read_calibration(tiny_model_dir) is None
    assert LocalInferenceResource(model_dir=str(tiny_model_dir)).calibration() is None
    assert AlignmentsConfig().policy(None) == DEFAULT_POLICY
    model = _with_calibration(tiny_model_dir, tmp_path / "calibrated", CALIBRATION)
    verify_checksums(model)  # covered by SHA256SUMS like the weights
    calibration = LocalInferenceResource(model_dir=str(model)).calibration()
    assert calibration is not None
    letter, insertion = calibration
    assert (letter.bias, letter.weight, letter.flag_weight) == (0.5, 0.2, 1.5)
    assert (insertion.bias, insertion.weight) == (-1.0, 0.7)
    policy = AlignmentsConfig().policy(calibration)
    assert policy is not None and policy.letter == letter and policy.insertion == insertion
    assert policy.review_high == DEFAULT_POLICY.review_high
    job_policy = judgement_policy("calibrated", calibration)
    assert job_policy is not None and job_policy.letter == letter
    assert judgement_policy("greedy", calibration) is None


def test_a_tampered_or_broken_calibration_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from asr_assets.inference.model_dir import (
        CALIBRATION_FILE,
        CalibrationError,
        ModelIntegrityError,
        read_calibration,
        verify_checksums,
    )

    model = _with_calibration(tiny_model_dir, tmp_path / "tampered", CALIBRATION)
    (model / CALIBRATION_FILE).write_text(
        json.dumps({**CALIBRATION, "letter": {"bias": 9, "weight": 9}})
    )
    with pytest.raises(ModelIntegrityError, match=r"checksum mismatch for calibration\.json"):
        verify_checksums(model)
    broken = _with_calibration(tiny_model_dir, tmp_path / "broken", {"letter": {"bias": "x"}})
    with pytest.raises(CalibrationError, match="not a calibration"):
        read_calibration(broken)
