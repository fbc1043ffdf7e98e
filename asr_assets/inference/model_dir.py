"""The model contract: a Hugging Face CTC directory with a checksum file and a model card.

Weights are verified before they are loaded, so a half-copied or tampered model never scores a
single phrase, and every result row can name the exact model bytes that produced it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from asr_assets.core.decoding import CtcVocabulary
from asr_assets.core.models import ModelInfo
from asr_assets.core.scoring import Calibration

CHECKSUM_FILE = "SHA256SUMS"
MODEL_CARD = "MODEL_CARD.md"
REQUIRED_FILES = ("config.json", "vocab.json", "preprocessor_config.json")
_UNCHECKED = {CHECKSUM_FILE, MODEL_CARD}


class ModelIntegrityError(RuntimeError):
    """The model directory is incomplete or does not match its checksums."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(model_dir: Path) -> Path:
    """Write `SHA256SUMS` (sha256sum format) over every file but itself and the model card."""
    lines = [
        f"{_sha256_file(path)}  {path.name}"
        for path in sorted(model_dir.iterdir())
        if path.is_file() and path.name not in _UNCHECKED
    ]
    target = model_dir / CHECKSUM_FILE
    target.write_text("\n".join(lines) + "\n")
    return target


def verify_checksums(model_dir: Path) -> str:
    """Check every listed file and that no weight file is unlisted; return the model hash.

    The model hash is the sha256 of the checksum file itself: it changes when any listed file does.
    """
    checksum_path = model_dir / CHECKSUM_FILE
    if not model_dir.is_dir():
        raise ModelIntegrityError(f"model directory {model_dir} does not exist")
    if not checksum_path.is_file():
        raise ModelIntegrityError(f"{model_dir} has no {CHECKSUM_FILE}")
    listed: dict[str, str] = {}
    for line in checksum_path.read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")
        if len(digest) != 64 or not name or "/" in name:
            raise ModelIntegrityError(f"malformed line in {CHECKSUM_FILE}: {line!r}")
        listed[name] = digest
    for required in REQUIRED_FILES:
        if required not in listed:
            raise ModelIntegrityError(f"{CHECKSUM_FILE} does not cover {required}")
    present = {p.name for p in model_dir.iterdir() if p.is_file() and p.name not in _UNCHECKED}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise ModelIntegrityError(f"files not covered by {CHECKSUM_FILE}: {unlisted}")
    for name, digest in listed.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelIntegrityError(f"{name} is listed in {CHECKSUM_FILE} but missing")
        if _sha256_file(path) != digest:
            raise ModelIntegrityError(f"checksum mismatch for {name}")
    return hashlib.sha256(checksum_path.read_bytes()).hexdigest()


def read_vocabulary(model_dir: Path) -> CtcVocabulary:
    vocab = json.loads((model_dir / "vocab.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    blank_id = config.get("pad_token_id", vocab.get("<pad>"))
    blank_token = next((token for token, index in vocab.items() if index == blank_id), "<pad>")
    return CtcVocabulary.from_vocab(vocab, blank_token=blank_token)


def model_info(model_dir: Path, sha256: str) -> ModelInfo:
    """Name and version come from config.json (`asr_model_name`/`asr_model_version`) if set."""
    config = json.loads((model_dir / "config.json").read_text())
    name = str(config.get("asr_model_name") or model_dir.resolve().name)
    version = str(config.get("asr_model_version") or f"sha-{sha256[:12]}")
    return ModelInfo(name=name, version=version, sha256=sha256)


#: Optional: the model's own calibration of the `calibrated` judgement (written by
#: `python -m tools.evaluate --fit-calibration` on training-voice data, shipped by the export).
CALIBRATION_FILE = "calibration.json"


class CalibrationError(ValueError):
    """`calibration.json` exists but is not a calibration (refused, never half-used)."""


def read_calibration(model_dir: Path) -> tuple[Calibration, Calibration] | None:
    """(letter, insertion) Platt calibrations of this model, or None when it ships none.

    Why in the model directory: a calibration belongs to the weights it was fitted on. Kept in
    code, a new model would be judged with another model's coefficients, and a team bringing
    its own model could not bring its calibration. The file is covered by `SHA256SUMS` like the
    weights, so it cannot change under a verified model's name.
    """
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        letter = payload["letter"]
        insertion = payload["insertion"]
        return (
            Calibration(
                bias=float(letter["bias"]),
                weight=float(letter["weight"]),
                flag_weight=float(letter.get("flag_weight", 0.0)),
            ),
            Calibration(bias=float(insertion["bias"]), weight=float(insertion["weight"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{path}: not a calibration ({type(exc).__name__}: {exc})") from exc
