"""tools/export: ONNX with dynamic axes, checked against torch, into a Triton model repository."""

import contextlib
import hashlib
import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from asr_assets.inference.model_dir import verify_checksums
from asr_assets.inference.onnx import (
    INPUT_LENGTHS,
    INPUT_VALUES,
    OUTPUT_LENGTHS,
    OUTPUT_LOG_PROBS,
    pad_batch,
    parity_clips,
    read_onnx_spec,
)
from tools.export.cli import main
from tools.export.repository import (
    TritonModelSettings,
    config_parameters,
    python_backend_variant,
    read_config,
    write_model_repository,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    repository = tmp_path_factory.mktemp("triton-repo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--model-dir", str(tiny_model_dir), "--out", str(repository)])
    return code, out.getvalue(), repository


def test_cli_reports_the_onnx_runtime_difference_and_writes_version_1(exported) -> None:
    code, output, repository = exported
    assert code == 0, output
    match = re.search(r"max abs difference ONNX Runtime vs torch: (\S+)", output)
    assert match is not None and float(match.group(1)) < 1e-3
    assert (repository / "tiny-random" / "1" / "model.onnx").is_file()
    assert (repository / "tiny-random" / "config.pbtxt").is_file()


def test_config_is_the_production_onnxruntime_config(exported, tiny_model_dir: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    _, _, repository = exported
    config = read_config(repository / "tiny-random")
    assert config.name == "tiny-random" and config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [8, 16, 32]
    assert batching.max_queue_delay_microseconds == 5000
    policy = batching.default_queue_policy
    assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == 30_000_000 and policy.allow_timeout_override
    assert policy.max_queue_size == 256
    (group,) = config.instance_group
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU and group.count == 1
    tensors = {t.name: (t.data_type, list(t.dims)) for t in [*config.input, *config.output]}
    assert tensors == {
        INPUT_VALUES: (pb.TYPE_FP32, [-1]),
        INPUT_LENGTHS: (pb.TYPE_INT64, [1]),
        OUTPUT_LOG_PROBS: (pb.TYPE_FP32, [-1, 28]),
        OUTPUT_LENGTHS: (pb.TYPE_INT64, [1]),
    }
    parameters = config_parameters(config)
    sums = (tiny_model_dir / "SHA256SUMS").read_bytes()
    assert parameters["model_sha256"] == hashlib.sha256(sums).hexdigest()
    assert parameters["model_sha256"] == verify_checksums(tiny_model_dir)
    assert parameters["frame_stride_samples"] == "320"


def test_graph_has_dynamic_batch_and_time_axes(exported) -> None:
    import onnxruntime

    _, _, repository = exported
    path = repository / "tiny-random" / "1" / "model.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert all(isinstance(dim, str) for dim in shapes[INPUT_VALUES])
    for batch, samples in ((1, 8000), (4, 40_000)):
        clips = [np.full(samples - 100 * i, 0.1, dtype=np.float32) for i in range(batch)]
        values, lengths = pad_batch(clips, samples)
        log_probs, frames = session.run(None, {INPUT_VALUES: values, INPUT_LENGTHS: lengths})
        assert log_probs.shape[0] == batch and frames.shape == (batch, 1)
        np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-4)
    assert read_onnx_spec(path).model.name == "tiny-random"


def test_versions_are_numbered_and_immutable(exported, tmp_path: Path) -> None:
    _, _, repository = exported
    spec = read_onnx_spec(repository / "tiny-random" / "1" / "model.onnx")
    target = tmp_path / "repo"
    settings = TritonModelSettings(model_name="letters")
    assert write_model_repository(spec, target, settings).version == 1
    second = write_model_repository(spec, target, settings)
    assert second.version == 2 and (target / "letters" / "1" / "model.onnx").is_file()
    with pytest.raises(FileExistsError):
        write_model_repository(spec, target, settings, version=2)
    gpu_pinned = write_model_repository(
        spec, target, replace(settings, gpus=(0, 1), instance_count=2)
    )
    group = read_config(gpu_pinned.model_root).instance_group[0]
    assert list(group.gpus) == [0, 1] and group.count == 2


def test_python_backend_twin_keeps_name_tensors_batching_and_parameters(exported) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    _, _, repository = exported
    production = read_config(repository / "tiny-random")
    twin = python_backend_variant(production, extra_parameters={"control_file": "/x"})
    assert (
        twin.backend == "python" and twin.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    )
    assert twin.name == production.name
    assert list(twin.input) == list(production.input)
    assert list(twin.output) == list(production.output)
    assert twin.dynamic_batching == production.dynamic_batching
    assert twin.max_batch_size == production.max_batch_size
    assert config_parameters(twin) == {**config_parameters(production), "control_file": "/x"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_name": "bad name"},
        {"model_name": "ok", "preferred_batch_sizes": (64,)},
        {"model_name": "ok", "max_batch_size": 0},
        {"model_name": "ok", "queue_timeout_s": 0},
    ],
)
def test_settings_refuse_configs_triton_would_reject(kwargs) -> None:
    with pytest.raises(ValueError):
        TritonModelSettings(**kwargs)


def test_nothing_is_published_above_the_tolerance(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(
            ["--model-dir", str(tiny_model_dir), "--out", str(tmp_path), "--tolerance", "-1"]
        )
    assert code == 1 and "nothing published" in out.getvalue()
    assert not any(tmp_path.iterdir())


def test_parity_clips_exercise_padding() -> None:
    lengths = {clip.size for clip in parity_clips()}
    assert len(lengths) == 3
