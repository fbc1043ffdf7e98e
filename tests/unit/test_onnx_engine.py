"""The local ONNX Runtime engine: same emissions as torch, int8 option, cached and checked exports."""

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from asr_assets.core.decoding import greedy_decode
from asr_assets.inference.local import LocalTorchEngine
from asr_assets.inference.model_dir import ModelIntegrityError
from asr_assets.inference.onnx import (
    LocalOnnxEngine,
    ensure_onnx_model,
    export_onnx,
    max_abs_difference,
    parity_clips,
)
from asr_assets.resources.inference import LocalInferenceResource
from tests.support.data import standard_day, tone
from tests.support.models import build_tiny_model
from tools.export.accuracy import compare_engines, format_report, load_evaluation_set

CLIPS = [tone(0.6, freq=250), tone(2.0, freq=180), tone(1.3, freq=300), tone(0.35, freq=220)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def torch_engine(tiny_model_dir: Path) -> LocalTorchEngine:
    return LocalTorchEngine(tiny_model_dir, num_threads=1)


@pytest.fixture(scope="module")
def onnx_engine(tiny_model_dir: Path, cache_dir: Path) -> LocalOnnxEngine:
    return LocalOnnxEngine(tiny_model_dir, cache_dir=cache_dir, num_threads=1)


@pytest.fixture(scope="module")
def int8_engine(tiny_model_dir: Path, cache_dir: Path) -> LocalOnnxEngine:
    return LocalOnnxEngine(tiny_model_dir, cache_dir=cache_dir, int8=True, num_threads=1)


def test_onnx_matches_torch_batched_and_alone(
    torch_engine: LocalTorchEngine, onnx_engine: LocalOnnxEngine
) -> None:
    reference = torch_engine.infer(CLIPS)
    batched = onnx_engine.infer(CLIPS)
    alone = [onnx_engine.infer([clip])[0] for clip in CLIPS]
    for candidate in (batched, alone):
        difference, mismatched = max_abs_difference(reference, candidate)
        assert mismatched == 0 and difference < 1e-4
    assert [e.frame_duration_s for e in batched] == [e.frame_duration_s for e in reference]
    vocabulary = torch_engine.vocabulary
    assert [greedy_decode(e.log_probs, vocabulary).letters for e in batched] == [
        greedy_decode(e.log_probs, vocabulary).letters for e in reference
    ]
    assert onnx_engine.name == "local-onnx" and onnx_engine.model == torch_engine.model


def test_int8_runs_close_to_fp32_and_says_so(
    torch_engine: LocalTorchEngine, int8_engine: LocalOnnxEngine
) -> None:
    reference = torch_engine.infer(CLIPS)
    quantized = int8_engine.infer(CLIPS)
    difference, mismatched = max_abs_difference(reference, quantized)
    assert mismatched == 0
    # Random tiny weights quantize badly compared with a trained model; the bound only says
    # the graph is the same model, the accuracy change is measured by tools/export/accuracy.py.
    assert 0.0 < difference < 0.5
    assert int8_engine.name == "local-onnx-int8"
    assert int8_engine.spec.quantization == "int8-dynamic"
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_engine.spec.path)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops


def test_exports_are_cached_per_model_hash(tiny_model_dir: Path, cache_dir: Path) -> None:
    first = ensure_onnx_model(tiny_model_dir, cache_dir=cache_dir)
    stamp = first.stat().st_mtime_ns
    assert ensure_onnx_model(tiny_model_dir, cache_dir=cache_dir) == first
    assert first.stat().st_mtime_ns == stamp


def test_refuses_an_export_of_another_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    foreign = export_onnx(other, tmp_path / "other.onnx")
    with pytest.raises(ModelIntegrityError, match="re-export"):
        LocalOnnxEngine(tiny_model_dir, onnx_path=foreign.path)


def test_resource_selects_the_backend(tiny_model_dir: Path, cache_dir: Path) -> None:
    resource = LocalInferenceResource(
        model_dir=str(tiny_model_dir), backend="onnx", onnx_cache_dir=str(cache_dir)
    )
    with resource.open_engine() as engine:
        assert engine.name == "local-onnx"
        (emissions,) = engine.infer([tone(1.0)])
        assert emissions.num_frames == 49
    quantized = LocalInferenceResource(
        model_dir=str(tiny_model_dir),
        backend="onnx",
        quantize_int8=True,
        onnx_cache_dir=str(cache_dir),
    )
    with quantized.open_engine() as engine:
        assert engine.name == "local-onnx-int8"
    with LocalInferenceResource(model_dir=str(tiny_model_dir)).open_engine() as engine:
        assert engine.name == "local-torch"


def test_int8_needs_the_onnx_backend(tiny_model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="onnx"):
        LocalInferenceResource(model_dir=str(tiny_model_dir), quantize_int8=True)


def test_accuracy_report_compares_engines_on_a_store(
    tmp_path: Path,
    torch_engine: LocalTorchEngine,
    onnx_engine: LocalOnnxEngine,
    int8_engine: LocalOnnxEngine,
) -> None:
    standard_day(tmp_path, date(2026, 11, 27))
    evaluation = load_evaluation_set(tmp_path)
    assert evaluation.reference_kind == "expected"
    assert len(evaluation.phrases) == 6 and evaluation.skipped == 4
    engines = {
        "local-torch": torch_engine,
        "local-onnx": onnx_engine,
        "local-onnx-int8": int8_engine,
    }
    report = compare_engines(engines, evaluation, reference="local-torch")
    by_engine = {row.engine: row for row in report}
    assert by_engine["local-onnx"].agreement == 1.0
    assert by_engine["local-onnx"].letter_errors == by_engine["local-torch"].letter_errors
    assert by_engine["local-torch"].max_abs_log_prob_diff == 0.0
    assert 0.0 <= by_engine["local-onnx-int8"].letter_accuracy <= 1.0
    assert by_engine["local-torch"].letters == sum(len(p.reference) for p in evaluation.phrases)
    text = format_report(report, evaluation)
    assert "local-onnx-int8" in text and "letter acc" in text


def test_parity_clips_are_deterministic() -> None:
    a, b = parity_clips(), parity_clips()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_export_runs_every_convolution_as_2d(tiny_model_dir: Path, cache_dir: Path) -> None:
    """ORT's CPU layout transformer gives its blocked NCHWc kernels to 4-D Convs only."""
    import onnx

    graph = onnx.load(str(ensure_onnx_model(tiny_model_dir, cache_dir=cache_dir)))
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    assert convs
    for node in convs:
        kernel = next(a for a in node.attribute if a.name == "kernel_shape")
        assert len(kernel.ints) == 2 and kernel.ints[0] == 1


def test_exports_cached_by_an_older_export_format_are_made_again(
    tiny_model_dir: Path, cache_dir: Path
) -> None:
    from asr_assets.inference.model_dir import verify_checksums

    stale = cache_dir / verify_checksums(tiny_model_dir) / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an export of the 1-D layout")
    fresh = ensure_onnx_model(tiny_model_dir, cache_dir=cache_dir)
    assert fresh != stale and fresh.stat().st_size > 1000
