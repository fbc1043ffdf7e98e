"""CPU inference resources: cores sized to the process, model loaded once, memory returned."""

from pathlib import Path

import numpy as np
import pytest

from asr_assets.inference import memory
from asr_assets.inference.local import LocalTorchEngine
from tests.support.data import tone


def test_usable_cpus_respects_a_cgroup_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.os, "sched_getaffinity", lambda _: set(range(64)))
    monkeypatch.setattr(memory, "_cgroup_cpu_quota", lambda: 2.5)
    assert memory.usable_cpus() == 2
    monkeypatch.setattr(memory, "_cgroup_cpu_quota", lambda: 0.5)
    assert memory.usable_cpus() == 1
    monkeypatch.setattr(memory, "_cgroup_cpu_quota", lambda: None)
    assert memory.usable_cpus() == 64


def test_freed_memory_is_returned_on_glibc_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = memory._malloc_trim()
    assert real is not None  # the images and CI run glibc
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    monkeypatch.setattr(memory, "_last_trim", [0.0])
    assert memory.release_freed_memory() is True
    assert memory.release_freed_memory() is True  # throttled: trimming walks the heap
    assert calls == [0]
    memory.release_freed_memory(force=True)
    assert calls == [0, 0]


def test_the_model_is_loaded_once_per_process(tiny_model_dir: Path) -> None:
    first = LocalTorchEngine(tiny_model_dir, num_threads=1)
    second = LocalTorchEngine(tiny_model_dir, num_threads=1)
    assert first._network is second._network
    first.close()
    (out,) = second.infer([tone(0.5)])  # closing one engine does not break another
    assert out.num_frames > 0


def test_emissions_do_not_keep_the_padded_batch_alive(tiny_model_dir: Path) -> None:
    engine = LocalTorchEngine(tiny_model_dir, num_threads=1)
    outputs = engine.infer([tone(0.5), tone(2.0)])
    assert all(o.log_probs.base is None and o.log_probs.flags.owndata for o in outputs)
    assert outputs[0].log_probs.nbytes < outputs[1].log_probs.nbytes
    assert np.isfinite(outputs[0].log_probs).all()


def test_batches_are_bounded_by_padded_audio_sized_to_the_model(tmp_path: Path) -> None:
    import json

    from asr_assets.inference.local import batch_seconds_for

    def model(hidden: int, layers: int) -> Path:
        directory = tmp_path / f"m{hidden}x{layers}"
        directory.mkdir()
        (directory / "config.json").write_text(
            json.dumps({"hidden_size": hidden, "num_hidden_layers": layers})
        )
        return directory

    assert batch_seconds_for(model(128, 5)) == 120.0  # the demo model
    assert batch_seconds_for(model(768, 12)) == pytest.approx(8.33, abs=0.01)  # base-sized
    assert batch_seconds_for(model(1024, 24)) == 4.0  # large: never below a floor
    assert batch_seconds_for(model(32, 1)) == 120.0  # tiny: never above the reference
    assert batch_seconds_for(tmp_path) == 120.0  # no config: the reference


def test_engine_batch_limits_default_to_the_model_size(tiny_model_dir: Path) -> None:
    engine = LocalTorchEngine(tiny_model_dir, num_threads=1)
    assert engine.max_batch_samples == 120 * 16_000
    assert engine.max_batch_size == 16
