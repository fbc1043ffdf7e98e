"""tools/train: vocabulary, synthesized training sets, the resumable loop and the model export.

Data and training tests call libespeak-ng (Debian package ``espeak-ng``, which ``make test``
installs); like tests/unit/test_synthesize.py they skip when it is not installed. Everything is
tiny (the ``tiny`` model, tens of phrases, 4 training steps, one torch thread) so the file runs
in seconds next to a real training job.

"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_assets.inference.local import LocalTorchEngine
from asr_assets.inference.model_dir import ModelIntegrityError, verify_checksums
from tests.support.espeak import needs_espeak
from tools.synthesize.voices import HELDOUT_VARIANTS, parse_voice
from tools.train import loop
from tools.train.benchmark import align_letters
from tools.train.cli import build_parser, main
from tools.train.data import (
    GAP,
    IGNORE,
    SAMPLES_PER_FRAME,
    BucketSampler,
    Phrase,
    PhraseSet,
    SetSpec,
    collate,
    crop_edges,
    frame_targets,
    generate_set,
    normalize,
)
from tools.train.export import apply_blank_bias, export
from tools.train.loop import ThreadTuner, TrainConfig, losses, lr_lambda, train
from tools.train.metrics import edit_distance, forced_align, frames_to_seconds
from tools.train.model import build_config, build_feature_extractor, build_model, output_frames
from tools.train.vocab import (
    BLANK,
    FRAME_CENTRE_OFFSET_S,
    FRAME_S,
    ID_TO_TOKEN,
    SEPARATOR,
    VOCAB,
    ctc_target,
    greedy_letters,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SR = 16_000


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    """Training and the engine set torch's global thread count; give it back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# --- vocabulary ---------------------------------------------------------------------------


def test_vocabulary_is_blank_separator_then_letters_in_id_order() -> None:
    expected = [("<pad>", 0), ("|", 1)] + [(c, i + 2) for i, c in enumerate(string.ascii_lowercase)]
    assert list(VOCAB.items()) == expected
    assert (BLANK, SEPARATOR) == (0, 1)
    assert ID_TO_TOKEN[BLANK] == "<pad>" and ID_TO_TOKEN[SEPARATOR] == "|"
    assert ID_TO_TOKEN[27] == "z" and len(ID_TO_TOKEN) == 28


def test_ctc_target_puts_a_separator_between_letters() -> None:
    # "b d p": b=3, d=5, p=17, separated by "|"=1; no leading/trailing separator
    assert ctc_target("bdp") == [3, 1, 5, 1, 17]
    assert ctc_target("a") == [2]
    assert ctc_target("") == []


def test_greedy_letters_collapses_repeats_and_counts_letters_split_by_blank_twice() -> None:
    frames = [0, 3, 3, 0, 3, 1, 5, 5, 0, 1, 1]
    letters, spans = greedy_letters(frames)
    assert letters == "bbd"
    assert spans == [(1, 2), (4, 4), (6, 7)]
    assert greedy_letters([0, 1, 0]) == ("", [])


# --- model geometry and train/serve preprocessing parity ----------------------------------


def test_output_frames_agree_with_the_network_and_the_frame_constants() -> None:
    torch.manual_seed(0)
    model = build_model("w2v2", "tiny").eval()
    frames_of = output_frames(model.config)
    for n in (560, 879, 880, 16_000, 16_319, 48_000):
        assert frames_of(n) == int(model._get_feat_extract_output_lengths(torch.tensor(n)))
    with torch.no_grad():
        logits = model(input_values=torch.zeros(1, 16_000)).logits
    assert logits.shape == (1, frames_of(16_000), 28) == (1, 49, 28)
    assert math.prod(model.config.conv_stride) == SAMPLES_PER_FRAME == FRAME_S * SR
    # frame t covers samples [320 t, 320 t + 560): 400-sample window plus one 160-sample hop
    receptive = model.config.conv_kernel[0] + model.config.conv_stride[0]
    assert receptive / 2 / SR == pytest.approx(FRAME_CENTRE_OFFSET_S)


def test_training_normalization_matches_the_shipped_feature_extractor() -> None:
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(8000) * 3000 + 200).astype(np.int16)
    served = build_feature_extractor("w2v2")(
        samples.astype(np.float32) / 32768.0, sampling_rate=SR, return_tensors="np"
    )["input_values"][0]
    np.testing.assert_allclose(normalize(samples), served, atol=1e-4)


# --- frame targets, cropping, collation, losses -------------------------------------------


def test_frame_targets_letter_gap_blank_and_edge_guard() -> None:
    spans = [(0.1, 0.3), (0.5, 0.7)]
    t = frame_targets(spans, "bd", 50)  # frame t centre: 0.02 t + 0.0175 s
    assert t[0] == BLANK  # 0.0175 s: before the first letter
    assert t[4] == IGNORE  # 0.0975 s: within 10 ms of the edge at 0.1 s
    assert t[5] == VOCAB["b"] and t[10] == VOCAB["b"]  # 0.1175 s, 0.2175 s
    assert t[20] == GAP  # 0.4175 s: between the letters
    assert t[30] == VOCAB["d"]  # 0.6175 s
    assert t[45] == BLANK  # 0.9175 s: after the last letter
    assert set(np.unique(t)) == {BLANK, IGNORE, GAP, VOCAB["b"], VOCAB["d"]}
    assert (frame_targets([], "", 7) == BLANK).all()


def test_crop_edges_cuts_on_frame_boundaries_and_shifts_spans_with_the_audio() -> None:
    x = np.arange(40 * SAMPLES_PER_FRAME * 2, dtype=np.int64).astype(np.int16)  # 1.6 s
    phrase = Phrase(x=x, spoken="bd", spans=[(0.513, 0.7), (0.9, 1.207)], voice="v", kind="normal")
    out = crop_edges(phrase, np.random.default_rng(0), (0.1, 0.1))
    # start 0.413 s -> frame 20 (0.4 s); end 1.307 s -> frame ceil(65.35) = 66
    np.testing.assert_array_equal(out.x, x[20 * SAMPLES_PER_FRAME : 66 * SAMPLES_PER_FRAME])
    np.testing.assert_allclose(out.spans, [(0.113, 0.3), (0.5, 0.807)], atol=1e-9)
    assert out.spoken == "bd"


def _phrase(n_samples: int, spoken: str, spans: list[tuple[float, float]], seed: int) -> Phrase:
    x = (np.random.default_rng(seed).standard_normal(n_samples) * 2000).astype(np.int16)
    return Phrase(x=x, spoken=spoken, spans=spans, voice="en-us", kind="normal")


def test_collate_pads_inputs_and_concatenates_ctc_targets() -> None:
    frames_of = output_frames(build_config("w2v2", "tiny"))
    a = _phrase(16_000, "bd", [(0.1, 0.3), (0.5, 0.7)], 1)
    b = _phrase(9_600, "z", [(0.1, 0.4)], 2)
    batch = collate([a, b], frames_of)
    x, mask = batch.inputs["input_values"], batch.inputs["attention_mask"]
    assert x.shape == (2, 16_000) and mask.sum(1).tolist() == [16_000, 9_600]
    assert torch.all(x[1, 9_600:] == 0)
    assert abs(float(x[1, :9_600].mean())) < 1e-3 and abs(float(x[1, :9_600].std()) - 1) < 1e-2
    assert batch.out_lengths.tolist() == [frames_of(16_000), frames_of(9_600)] == [49, 29]
    assert batch.targets.tolist() == ctc_target("bd") + ctc_target("z")
    assert batch.target_lengths.tolist() == [3, 1]
    assert batch.frame_targets.shape == (2, 49)
    assert (batch.frame_targets[1, 29:] == IGNORE).all()
    assert batch.frame_targets[1, 10] == VOCAB["z"]


def test_losses_are_small_on_the_frame_path_and_large_on_a_wrong_path() -> None:
    frames_of = output_frames(build_config("w2v2", "tiny"))
    batch = collate([_phrase(16_000, "bd", [(0.1, 0.3), (0.5, 0.7)], 3)], frames_of)
    tgt = batch.frame_targets[0]
    # the frame path with the separator in the gap; ignored edge frames repeat their neighbour
    path = []
    for k in tgt.tolist():
        path.append({GAP: SEPARATOR, IGNORE: path[-1] if path else BLANK}.get(k, k))
    good = torch.full((1, len(path), 28), -20.0)
    good[0, torch.arange(len(path)), torch.tensor(path)] = 20.0
    ctc, frame = losses(good, batch)
    assert float(ctc) < 0.05 and float(frame) < 1e-3
    swapped = [
        VOCAB["d"] if k == VOCAB["b"] else VOCAB["b"] if k == VOCAB["d"] else k for k in path
    ]
    bad = torch.full((1, len(path), 28), -20.0)
    bad[0, torch.arange(len(path)), torch.tensor(swapped)] = 20.0
    ctc_bad, frame_bad = losses(bad, batch)
    assert float(ctc_bad) > 10 and float(frame_bad) > 10


def test_lr_schedule_warms_up_then_decays_to_the_final_fraction() -> None:
    f = lr_lambda(TrainConfig(data=Path(), out=Path(), steps=100, warmup=10))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.05 + 0.95 * 0.5)
    assert f(100) == pytest.approx(0.05) and f(500) == pytest.approx(0.05)


def test_thread_tuner_probes_the_other_setting_and_keeps_it_when_faster() -> None:
    tuner = ThreadTuner(period=10, probe=2)
    assert [tuner.threads_for(s) for s in range(10)] == [1] * 8 + [2, 2]
    for s in range(10):
        tuner.record(s, tuner.threads_for(s), 1.0 if s < 8 else 0.5)
    assert tuner.current == 2 and tuner.threads_for(10) == 2 == torch.get_num_threads()
    for s in range(10, 20):  # now 1 thread is not 10% faster: stay on 2
        tuner.record(s, tuner.threads_for(s), 0.5 if s % 10 < 8 else 0.48)
    assert tuner.current == 2


# --- metrics and benchmark helpers --------------------------------------------------------


def test_edit_distance_and_letter_alignment() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("bdp", "bdp") == 0
    assert align_letters("abc", "axc") == [(0, 0), (1, 1), (2, 2)]
    assert align_letters("abc", "ac") == [(0, 0), (1, None), (2, 1)]
    assert align_letters("ab", "abx") == [(0, 0), (1, 1), (None, 2)]


def _log_probs(path: list[int]) -> np.ndarray:
    lp = np.full((len(path), 28), np.log(1e-4 / 27))
    lp[np.arange(len(path)), path] = np.log(1 - 1e-4)
    return lp


@pytest.mark.parametrize("gap", [[SEPARATOR], [BLANK, BLANK]], ids=["separator", "blank-only"])
def test_forced_align_recovers_letter_frames(gap: list[int]) -> None:
    b, d = VOCAB["b"], VOCAB["d"]
    path = [BLANK, BLANK, b, b, b, *gap, d, d, BLANK]
    first_d = 5 + len(gap)
    assert forced_align(_log_probs(path), "bd") == [(2, 4), (first_d, first_d + 1)]
    start, end = frames_to_seconds(2, 4)
    assert start == pytest.approx(2 * FRAME_S + FRAME_CENTRE_OFFSET_S - FRAME_S / 2)
    assert end == pytest.approx(4 * FRAME_S + FRAME_CENTRE_OFFSET_S + FRAME_S / 2)


# --- synthesized data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    args = ["data", "--out", str(root), "--short", "40", "--long", "8", "--heldout", "8"]
    args += ["--trainvoices-eval", "6"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--seed", "0", "--workers", "2"]) == 0
    return root


def _set_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("chunk-*"))}


@needs_espeak
def test_cli_data_writes_four_consistent_sets(data_root: Path) -> None:
    sizes = {"train-short": 40, "train-long": 8, "trainvoices-eval": 6, "heldout": 8}
    for name, n in sizes.items():
        spec = json.loads((data_root / name / "spec.json").read_text())
        assert spec["n_phrases"] == n and spec["store"] == "audio"
        data = PhraseSet(data_root / name)
        assert len(data) == n
        for i in range(n):
            phrase = data[i]
            assert phrase.x.dtype == np.int16 and len(phrase.x) == data.meta[i]["length"]
            assert re.fullmatch("[a-z]*", phrase.spoken)
            assert len(phrase.spans) == len(phrase.spoken)
            assert all(0 <= s < e <= len(phrase.x) / SR for s, e in phrase.spans)
    assert json.loads((data_root / "heldout" / "spec.json").read_text())["whole_fraction"] == 1.0
    calibration_set = json.loads((data_root / "trainvoices-eval" / "spec.json").read_text())
    assert calibration_set["split"] == "train" and calibration_set["augment"] == []


@needs_espeak
def test_heldout_voices_never_appear_in_training_sets(data_root: Path) -> None:
    train_voices = [
        m["voice"]
        for name in ("train-short", "train-long")
        for m in PhraseSet(data_root / name).meta
    ]
    heldout_voices = [m["voice"] for m in PhraseSet(data_root / "heldout").meta]
    assert len(train_voices) == 48
    assert not [v for v in train_voices if parse_voice(v).variant in HELDOUT_VARIANTS]
    assert all(parse_voice(v).variant in HELDOUT_VARIANTS for v in heldout_voices)


@needs_espeak
def test_generate_set_is_byte_identical_whatever_the_worker_count(tmp_path: Path) -> None:
    """What the pool guarantees in-process: each chunk is rendered in a fresh fork of the caller
    from seed [seed, chunk], so neither the worker count nor the chunk order matter."""
    spec = SetSpec(6, (1, 2), "train", seed=3, chunk_size=2)
    with contextlib.redirect_stdout(io.StringIO()):
        generate_set(tmp_path / "one", spec, workers=1)
        generate_set(tmp_path / "two", spec, workers=2)
        generate_set(tmp_path / "other", SetSpec(6, (1, 2), "train", seed=4, chunk_size=2))
    one = _set_bytes(tmp_path / "one")
    assert len(one) == 6  # 3 chunks x (.npy, .jsonl)
    assert one == _set_bytes(tmp_path / "two")
    assert one != _set_bytes(tmp_path / "other")


@needs_espeak
def test_generate_set_resumes_by_regenerating_only_missing_chunks(tmp_path: Path) -> None:
    spec = SetSpec(4, (1, 2), "train", seed=5, chunk_size=2)
    root = tmp_path / "set"
    with contextlib.redirect_stdout(io.StringIO()):
        generate_set(root, spec, workers=1)
        before = _set_bytes(root)
        kept = (root / "chunk-00000.npy").stat().st_mtime_ns
        for p in root.glob("chunk-00001.*"):
            p.unlink()
        generate_set(root, spec, workers=1)
    assert _set_bytes(root) == before
    assert (root / "chunk-00000.npy").stat().st_mtime_ns == kept


def _cli_data_in_fresh_process(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tools.train", "data", "--out", str(out), "--short", "6"]
    cmd += ["--long", "0", "--heldout", "0", "--trainvoices-eval", "0", "--seed", "7"]
    cmd += ["--workers", "1"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def fresh_process_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same `data` command run twice, each in a fresh interpreter (concurrently)."""
    root = tmp_path_factory.mktemp("fresh")
    procs = [_cli_data_in_fresh_process(root / name) for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    return root / "a" / "train-short", root / "b" / "train-short"


@needs_espeak
def test_generate_set_is_byte_identical_across_fresh_processes(fresh_process_sets) -> None:
    a, b = fresh_process_sets
    assert _set_bytes(a) and _set_bytes(a) == _set_bytes(b)


@needs_espeak
def test_generate_set_does_not_depend_on_the_callers_espeak_state(
    fresh_process_sets, tmp_path: Path
) -> None:
    from tools.synthesize.espeak import Espeak

    Espeak.get().synthesize("A B C", "en-us")  # this process has now used libespeak-ng
    with contextlib.redirect_stdout(io.StringIO()):
        generate_set(tmp_path / "set", SetSpec(6, (1, 3), "train", 7, store="audio"), workers=1)
    assert _set_bytes(tmp_path / "set") == _set_bytes(fresh_process_sets[0])


@needs_espeak
def test_bucket_sampler_batches_depend_only_on_seed_and_step(data_root: Path) -> None:
    data = PhraseSet(data_root / "train-short")
    sampler = BucketSampler(data, max_frames=400, seed=0)
    batches = [sampler.batch(s) for s in range(30)]
    assert batches == [BucketSampler(data, 400, seed=0).batch(s) for s in range(30)]
    assert batches[::-1] == [sampler.batch(s) for s in reversed(range(30))]
    assert batches != [BucketSampler(data, 400, seed=1).batch(s) for s in range(30)]
    for idx in batches:
        assert len({int(data.n_letters[i]) for i in idx}) == 1
        assert len(idx) == 1 or max(data.frames[i] for i in idx) * len(idx) <= 400


# --- training: checkpoint and resume ------------------------------------------------------

STEPS = 4


def _config(data: Path, out: Path) -> TrainConfig:
    # steps 0-1 from train-short, 2-3 mostly from train-long; eval only at the end
    return TrainConfig(
        data=data,
        out=out,
        size="tiny",
        steps=STEPS,
        warmup=2,
        max_frames=400,
        curriculum_steps=2,
        eval_every=1000,
        ckpt_every=2,
        log_every=1,
        threads=1,
        seed=0,
    )


class _Interrupted(Exception):
    pass


def _train_interrupted_after_checkpoint(cfg: TrainConfig, at_step: int) -> None:
    """Run ``cfg`` and die right after the checkpoint of ``at_step`` is written."""
    real_save = loop._save

    def save_then_die(*args) -> None:
        real_save(*args)
        if args[4] == at_step:
            raise _Interrupted

    with pytest.MonkeyPatch.context() as mp, pytest.raises(_Interrupted):
        mp.setattr(loop, "_save", save_then_die)
        train(cfg)


def _resume(cfg: TrainConfig) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train(cfg)
    return out.getvalue()


def _interrupted_and_resumed(cfg: TrainConfig) -> tuple[dict, str]:
    with contextlib.redirect_stdout(io.StringIO()):
        _train_interrupted_after_checkpoint(cfg, at_step=2)
    at_interrupt = torch.load(cfg.out / "ckpt-last.pt", map_location="cpu", weights_only=False)
    return at_interrupt, _resume(cfg)


def _steps_logged(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "step" in r and "event" not in r]


def _losses_logged(out: Path) -> list[tuple]:
    keys = ("step", "ctc", "frame", "lr", "frames_per_batch")
    return [tuple(r[k] for k in keys) for r in _steps_logged(out)]


def _ckpt(out: Path) -> dict:
    return torch.load(out / "ckpt-last.pt", map_location="cpu", weights_only=False)


def _assert_same_training_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    differing = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differing, f"parameters differ: {differing[:5]}"
    for pa, pb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert all(torch.equal(pa[k], pb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == STEPS
    assert torch.equal(a["torch_rng"], b["torch_rng"])


@pytest.fixture(scope="module")
def default_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 4-step run of the real configuration, through the command line."""
    cfg = _config(data_root, tmp_path_factory.mktemp("default") / "run")
    args = ["fit", "--data", str(cfg.data), "--out", str(cfg.out), "--size", cfg.size]
    args += ["--steps", str(cfg.steps), "--warmup", str(cfg.warmup), "--seed", str(cfg.seed)]
    args += ["--max-frames", str(cfg.max_frames), "--curriculum-steps", str(cfg.curriculum_steps)]
    args += ["--eval-every", str(cfg.eval_every), "--ckpt-every", str(cfg.ckpt_every)]
    args += ["--log-every", str(cfg.log_every), "--threads", str(cfg.threads)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    return cfg.out


def test_cli_fit_defaults_match_train_config() -> None:
    args = build_parser().parse_args(["fit"])
    defaults = TrainConfig(data=Path(), out=Path())
    for name in ("arch", "size", "steps", "lr", "warmup", "max_frames", "curriculum_steps"):
        assert getattr(args, name) == getattr(defaults, name), name
    for name in ("frame_loss_weight", "eval_every", "ckpt_every", "log_every", "seed", "dropout"):
        assert getattr(args, name) == getattr(defaults, name), name
    assert args.threads == defaults.threads


@needs_espeak
def test_fit_writes_checkpoint_logs_and_model_directories(default_run: Path) -> None:
    from transformers import AutoModelForCTC

    state = _ckpt(default_run)
    assert set(state) == {
        "model",
        "optimizer",
        "scheduler",
        "step",
        "wall_s",
        "best_ler",
        "torch_rng",
        "numpy_rng",
    }
    assert state["step"] == STEPS and state["wall_s"] > 0 and 0 <= state["best_ler"] <= 1
    assert [r["step"] for r in _steps_logged(default_run)] == [1, 2, 3, 4]
    assert all(
        math.isfinite(r["ctc"]) and math.isfinite(r["frame"]) for r in _steps_logged(default_run)
    )
    rows = [json.loads(line) for line in (default_run / "metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [r for r in rows if r.get("event") == "eval"]
    assert evaluation["step"] == STEPS and evaluation["phrases"] == 8
    assert evaluation["letter_error_rate"] == state["best_ler"]
    assert json.loads((default_run / "train_config.json").read_text())["size"] == "tiny"

    torch.manual_seed(0)  # train() seeds torch before building the model: same initial weights
    initial = build_model("w2v2", "tiny").state_dict()
    assert not torch.equal(initial["lm_head.weight"], state["model"]["lm_head.weight"])
    last = AutoModelForCTC.from_pretrained(str(default_run / "last"))
    assert all(torch.equal(v, state["model"][k]) for k, v in last.state_dict().items())
    assert (default_run / "best" / "model.safetensors").is_file()
    assert evaluation.pop("new_best") is True
    assert json.loads((default_run / "best" / "eval.json").read_text()) == evaluation


@pytest.fixture(scope="module")
def runs_without_specaugment(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Uninterrupted vs interrupted-at-step-2-and-resumed, with SpecAugment switched off."""
    real_build = loop.build_model

    def build_without_specaugment(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.config.apply_spec_augment = False
        return model

    root = tmp_path_factory.mktemp("no-specaugment")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_model", build_without_specaugment)
        with contextlib.redirect_stdout(io.StringIO()):
            train(_config(data_root, root / "whole"))
        resumed_cfg = _config(data_root, root / "resumed")
        at_interrupt, stdout = _interrupted_and_resumed(resumed_cfg)
    return root / "whole", resumed_cfg.out, at_interrupt, stdout


@needs_espeak
def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(
    runs_without_specaugment,
) -> None:
    """Exact equality: one thread, fixed op order on CPU, batches a function of (seed, step),
    and the checkpoint restores model, optimizer, scheduler and torch's RNG (dropout).
    SpecAugment is off here; the test below covers it with its numpy RNG checkpointed."""
    whole, resumed, at_interrupt, stdout = runs_without_specaugment
    assert at_interrupt["step"] == 2
    assert "resumed from step 2" in stdout
    assert [r["step"] for r in _steps_logged(resumed)] == [1, 2, 3, 4]  # 3, 4 after resuming
    assert _losses_logged(resumed) == _losses_logged(whole)
    _assert_same_training_state(_ckpt(whole), _ckpt(resumed))


@needs_espeak
def test_resume_with_specaugment_matches_an_uninterrupted_run(
    default_run: Path, data_root: Path, tmp_path: Path
) -> None:
    cfg = _config(data_root, tmp_path / "run")
    at_interrupt, stdout = _interrupted_and_resumed(cfg)
    assert at_interrupt["step"] == 2 and "resumed from step 2" in stdout
    _assert_same_training_state(_ckpt(default_run), _ckpt(cfg.out))


# --- export -------------------------------------------------------------------------------

BLANK_BIAS = 1.25
CARD_TEXT = "# demo-letters (test)\n\nTiny random weights.\n"


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A save_pretrained directory like the run's ``best``/``last``, with non-zero head biases."""
    torch.manual_seed(1)
    model = build_model("w2v2", "tiny")
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.randn(28))
    target = tmp_path_factory.mktemp("trained") / "best"
    model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def exported(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    card = root / "card.md"
    card.write_text(CARD_TEXT)
    out = root / "demo-letters"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"from an earlier export")
    with contextlib.redirect_stdout(io.StringIO()):
        export(trained_dir, out, card, blank_bias=BLANK_BIAS)
    return out


def test_export_writes_the_model_contract_directory(exported: Path) -> None:
    names = {p.name for p in exported.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "MODEL_CARD.md",
        "SHA256SUMS",
    }
    assert list(json.loads((exported / "vocab.json").read_text()).items()) == list(VOCAB.items())
    config = json.loads((exported / "config.json").read_text())
    assert config["vocab_size"] == 28 and config["pad_token_id"] == BLANK
    pre = json.loads((exported / "preprocessor_config.json").read_text())
    assert pre["sampling_rate"] == SR and pre["do_normalize"] and pre["return_attention_mask"]
    assert (exported / "MODEL_CARD.md").read_text() == CARD_TEXT
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in exported.iterdir())


def test_exported_tokenizer_encodes_letters_separated_by_the_delimiter(exported: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(exported))
    assert tokenizer("b d p").input_ids == ctc_target("bdp")
    assert tokenizer.pad_token_id == BLANK and tokenizer.word_delimiter_token_id == SEPARATOR
    assert len(tokenizer) == 28


def test_checksums_are_sha256sum_format_and_skip_the_card_and_themselves(exported: Path) -> None:
    lines = (exported / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        match = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line)
        assert match, line
        listed[match.group(2)] = match.group(1)
    assert sorted(listed) == sorted(
        p.name for p in exported.iterdir() if p.name not in ("SHA256SUMS", "MODEL_CARD.md")
    )
    for name, digest in listed.items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"],
        cwd=exported,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_blank_bias_lowers_blank_and_separator_biases_by_exactly_the_amount(
    trained_dir: Path, exported: Path
) -> None:
    from transformers import AutoModelForCTC

    before = AutoModelForCTC.from_pretrained(str(trained_dir)).state_dict()
    after = AutoModelForCTC.from_pretrained(str(exported)).state_dict()
    expected = before["lm_head.bias"].clone()
    expected[[BLANK, SEPARATOR]] -= BLANK_BIAS
    assert torch.equal(after["lm_head.bias"], expected)
    assert not torch.equal(after["lm_head.bias"], before["lm_head.bias"])
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k != "lm_head.bias")


def test_apply_blank_bias_by_zero_changes_nothing(trained_dir: Path) -> None:
    from transformers import AutoModelForCTC

    model = AutoModelForCTC.from_pretrained(str(trained_dir))
    bias = model.lm_head.bias.detach().clone()
    apply_blank_bias(model, 0.0)
    assert torch.equal(model.lm_head.bias, bias)


def test_exported_model_loads_and_scores_in_the_platform_engine(
    trained_dir: Path, exported: Path
) -> None:
    from transformers import AutoModelForCTC

    engine = LocalTorchEngine(exported, num_threads=1)
    assert engine.model.name == "demo-letters"
    assert engine.model.sha256 == hashlib.sha256((exported / "SHA256SUMS").read_bytes()).hexdigest()
    assert (engine.vocabulary.blank_id, engine.vocabulary.separator_id) == (BLANK, SEPARATOR)
    audio = (0.2 * np.sin(2 * np.pi * 220 * np.arange(12_000) / SR)).astype(np.float32)
    (emissions,) = engine.infer([audio])
    assert emissions.frame_duration_s == pytest.approx(FRAME_S)
    assert emissions.log_probs.shape == (output_frames(build_config("w2v2", "tiny"))(12_000), 28)

    # the engine's posteriors are the trained model's with blank and separator lowered
    original = AutoModelForCTC.from_pretrained(str(trained_dir)).eval()
    inputs = build_feature_extractor("w2v2")(audio, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        logits = original(**inputs).logits[0]
    logits[:, [BLANK, SEPARATOR]] -= BLANK_BIAS
    expected = torch.log_softmax(logits, dim=-1).numpy()
    np.testing.assert_allclose(emissions.log_probs, expected, atol=1e-4)


TAMPERED = re.escape("checksum mismatch for model.safetensors")


def test_tampered_weights_are_refused_with_a_clear_error(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "demo-letters"
    shutil.copytree(exported, copy)
    (copy / "MODEL_CARD.md").write_text("edited prose")
    assert verify_checksums(copy) == verify_checksums(exported)  # the card is not covered
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError, match=TAMPERED):
        verify_checksums(copy)
    with pytest.raises(ModelIntegrityError, match=TAMPERED):
        LocalTorchEngine(copy, num_threads=1)


def test_export_refuses_a_model_with_another_vocabulary(tmp_path: Path) -> None:
    from transformers import Wav2Vec2ForCTC

    config = build_config("w2v2", "tiny")
    config.vocab_size = 30
    source = tmp_path / "wrong"
    Wav2Vec2ForCTC(config).save_pretrained(str(source))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")
    card = tmp_path / "card.md"
    card.write_text(CARD_TEXT)
    with pytest.raises(ValueError, match="vocabulary"):
        export(source, out, card)
    assert (out / "keep.txt").read_text() == "previous export"


# --- interpolation (WiSE-FT) --------------------------------------------------------------


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCTC

    return AutoModelForCTC.from_pretrained(str(path)).state_dict()


def test_interpolate_mixes_weights_after_taking_the_exports_blank_bias_out(
    exported: Path, trained_dir: Path, tmp_path: Path
) -> None:
    """The exported base carries BLANK_BIAS; interpolation must average the unbiased weights,
    so alpha 0 gives back the trained weights exactly, not the exported (biased) ones."""
    torch.manual_seed(2)
    tuned = build_model("w2v2", "tiny")
    tuned.save_pretrained(str(tmp_path / "tuned"))
    for alpha in (0.0, 0.25, 1.0):
        with contextlib.redirect_stdout(io.StringIO()):
            main(
                [
                    "interpolate",
                    "--base",
                    str(exported),
                    "--base-blank-bias",
                    str(BLANK_BIAS),
                    "--tuned",
                    str(tmp_path / "tuned"),
                    "--alpha",
                    str(alpha),
                    "--out",
                    str(tmp_path / f"mix-{alpha}"),
                ]
            )
    base, tuned_w = _weights(trained_dir), _weights(tmp_path / "tuned")
    at_zero, quarter, at_one = (_weights(tmp_path / f"mix-{a}") for a in (0.0, 0.25, 1.0))
    for key, value in base.items():
        if not value.is_floating_point():
            continue
        torch.testing.assert_close(at_zero[key], value)
        torch.testing.assert_close(at_one[key], tuned_w[key])
        torch.testing.assert_close(quarter[key], 0.75 * value + 0.25 * tuned_w[key])
    # The biased export averaged as is would differ exactly in the blank/separator biases.
    assert not torch.equal(_weights(exported)["lm_head.bias"], base["lm_head.bias"])


def test_interpolate_refuses_other_sizes_and_alphas_outside_zero_one(
    trained_dir: Path, tmp_path: Path
) -> None:
    from tools.train.export import interpolate

    build_model("w2v2", "small").save_pretrained(str(tmp_path / "small"))
    with pytest.raises(ValueError, match="same architecture"):
        interpolate(trained_dir, tmp_path / "small", 0.5, tmp_path / "out")
    with pytest.raises(ValueError, match="alpha"):
        interpolate(trained_dir, trained_dir, 1.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()
