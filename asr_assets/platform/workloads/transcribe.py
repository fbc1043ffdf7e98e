"""`transcribe:1`: plain transcription with any Hugging Face CTC model directory.

Output, one row per file (the schema is in `workloads/transcribe/workload.yaml`): `text` (words
joined by single spaces), `chars` and `words` as lists of `{text, start_s, end_s, confidence}`
(seconds from the start of the file; confidence is the mean posterior of the greedy path over
the token's frames), `duration_s`, and the model's name, version and sha256.

The model directory is the manifest's model, or `params.model_dir`. A directory with a
`SHA256SUMS` file is verified before loading, as in the daily graph.

Run by the platform as `python -m asr_assets.platform.workloads.transcribe`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from dagster_pipes import PipesContext

from asr_assets.core.audio import TARGET_SAMPLE_RATE
from asr_assets.core.errors import PhraseError, ReasonCode
from asr_assets.core.models import ModelInfo
from asr_assets.core.transcription import ctc_transcribe
from asr_assets.inference.local import frame_stride_samples
from asr_assets.inference.model_dir import CHECKSUM_FILE, model_info, verify_checksums
from asr_assets.platform.workloads.runtime import (
    ShardSpec,
    ShardTally,
    check_model,
    load_audio,
    model_dir_for,
    serve,
)
from asr_assets.resources.object_store import ObjectStore


class CtcTranscriber:
    """One clip at a time: general models vary in padding behaviour, and shards are small."""

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForCTC

        if (model_dir / CHECKSUM_FILE).is_file():
            sha256 = verify_checksums(model_dir)
        else:
            sha256 = hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest()
        self.model: ModelInfo = model_info(model_dir, sha256)
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self._network = AutoModelForCTC.from_pretrained(str(model_dir), local_files_only=True)
        self._network.eval()
        self._features = AutoFeatureExtractor.from_pretrained(str(model_dir), local_files_only=True)
        self._stride = frame_stride_samples(self._network.config, self._features)
        vocab: dict[str, int] = json.loads((model_dir / "vocab.json").read_text())
        self.id_to_token = {index: token for token, index in vocab.items()}
        config = self._network.config
        pad_id = getattr(config, "pad_token_id", None)
        self.blank_id = int(pad_id if pad_id is not None else vocab.get("<pad>", 0))
        tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
        delimiter = str(tokenizer_config.get("word_delimiter_token") or "|")
        self.delimiter_id = vocab.get(delimiter)
        specials = ("<s>", "</s>", "<unk>", "[UNK]", "[PAD]")
        self.skip_ids = frozenset(vocab[t] for t in specials if t in vocab)

    def log_probs(self, samples: np.ndarray) -> tuple[np.ndarray, float]:
        torch = self._torch
        inputs = self._features(
            [samples], sampling_rate=TARGET_SAMPLE_RATE, return_tensors="pt", padding=False
        )
        with torch.inference_mode():
            logits = self._network(**inputs).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)[0].numpy()
        frames = max(1, log_probs.shape[0])
        frame_s = (self._stride or samples.size / frames) / TARGET_SAMPLE_RATE
        return log_probs, frame_s


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def process(
    spec: ShardSpec,
    store: ObjectStore,
    rows: Iterable[dict[str, object]],
    tally: ShardTally,
    pipes: PipesContext,
) -> Iterator[dict[str, object]]:
    model_dir, pinned = model_dir_for(spec)
    threads = int(spec.params["threads"]) if spec.params.get("threads") else None
    transcriber = CtcTranscriber(Path(model_dir), threads)
    model = transcriber.model
    check_model(pinned, model.sha256)
    pipes.log.info(f"model {model.name}@{model.version}")
    for row in rows:
        key = str(row["key"])
        try:
            audio = load_audio(store, key, tally)
            log_probs, frame_s = transcriber.log_probs(audio.samples)
        except PhraseError as exc:
            yield {"key": key, "status": "error", "reason_code": exc.reason, "message": exc.message}
            continue
        except (RuntimeError, ValueError) as exc:
            yield {
                "key": key,
                "status": "error",
                "reason_code": ReasonCode.INFERENCE_FAILED,
                "message": str(exc)[:500],
            }
            continue
        tally.audio_seconds += audio.duration_s
        result = ctc_transcribe(
            log_probs,
            transcriber.id_to_token,
            transcriber.blank_id,
            frame_s,
            delimiter_id=transcriber.delimiter_id,
            skip_ids=transcriber.skip_ids,
        )
        yield {
            "key": key,
            "status": "ok",
            "reason_code": None,
            "message": None,
            "duration_s": audio.duration_s,
            "text": result.text,
            "chars": [asdict(c) for c in result.chars],
            "words": [asdict(w) for w in result.words],
            "model_name": model.name,
            "model_version": model.version,
            "model_sha256": model.sha256,
        }


def main() -> None:
    serve(process)


if __name__ == "__main__":
    main()
