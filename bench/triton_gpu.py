"""GPU throughput end to end: Triton serving the base-sized model, a synthetic 10k-phrase day.

For a machine with an NVIDIA GPU, Docker with the NVIDIA container toolkit (or `tritonserver`
on PATH, as inside the Triton image). One command, `make bench-gpu`:

1. builds the wav2vec2-base-sized random-weight model (no download) and exports it to ONNX into
   a Triton repository with dynamic batching (`tools.export`: preferred batch sizes, queue
   delay, instances per GPU as below);
2. starts the real Triton server (the production image `nvcr.io/nvidia/tritonserver:24.10-py3`,
   ports on 127.0.0.1 only) and waits until the model is ready;
3. synthesizes a 10k-phrase day and materializes the whole graph with the local store and
   catalog and `TritonInferenceResource` (fallback off: a failed request fails the run rather
   than quietly scoring on the CPU);
4. samples `nvidia-smi` every 0.5 s throughout and prints audio-seconds per wall-second end to
   end, the real-time factor, GPU utilization (mean and p90 while scoring) and per-stage
   seconds; writes `bench/out/triton-gpu.json`.

Budget: under 10 minutes on one mid-size GPU (export ~1.5 min, server start ~0.5 min, the
day itself at the target of >= 5,000x real time ~0.5 min for ~28k audio-seconds). Without a
GPU it says so and exits 0, so `python -m bench` can run everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
MODEL_NAME = "letters-base"


def has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return probe.returncode == 0 and "GPU" in probe.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GpuSampler:
    """`nvidia-smi` utilization samples in the background, tagged with time."""

    def __init__(self, period_ms: int = 500) -> None:
        self.samples: list[tuple[float, float]] = []
        self._process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                f"-lms={period_ms}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            values = [float(v) for v in line.split(",") if v.strip()]
            if values:
                self.samples.append((time.perf_counter(), statistics.fmean(values)))

    def between(self, start: float, end: float) -> list[float]:
        return [value for at, value in self.samples if start <= at <= end]

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def export_repository(model_dir: Path, repository: Path, args: argparse.Namespace) -> None:
    from tools.export.cli import main as export

    code = export(
        [
            "--model-dir",
            str(model_dir),
            "--out",
            str(repository),
            "--model-name",
            MODEL_NAME,
            "--max-batch-size",
            str(args.max_batch_size),
            "--preferred-batch-sizes",
            args.preferred_batch_sizes,
            "--max-queue-delay-us",
            str(args.max_queue_delay_us),
            "--instances",
            str(args.instances),
        ]
    )
    if code != 0:
        raise RuntimeError("export failed")


def start_server(repository: Path, http: int, grpc: int, log: Path) -> subprocess.Popen[bytes]:
    """Triton in its own process group: the binary when present, else the production image."""
    server_args = [
        f"--model-repository={repository}",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--allow-metrics=false",
        "--strict-readiness=true",
    ]
    if shutil.which("tritonserver"):
        command = ["tritonserver", *server_args]
    else:
        command = [
            "docker",
            "run",
            "--rm",
            "--gpus=all",
            "--network=host",  # the server binds the chosen free ports; nothing is published
            f"-v={repository}:{repository}:ro",
            IMAGE,
            "tritonserver",
            *server_args,
        ]
    handle = log.open("wb")
    return subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(http: int, server: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    url = f"http://127.0.0.1:{http}/v2/models/{MODEL_NAME}/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{MODEL_NAME} not ready after {timeout_s} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    import signal

    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def score_day(root: Path, model_dir: Path, grpc: int, args: argparse.Namespace) -> dict[str, Any]:
    import dagster as dg

    from asr_assets.checks import ALL_CHECKS
    from asr_assets.definitions import ALL_ASSETS, local_resources
    from asr_assets.resources.inference import TritonInferenceResource
    from bench.throughput import DAY

    resources = local_resources({"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(model_dir)})
    resources["inference"] = TritonInferenceResource(
        url=f"127.0.0.1:{grpc}",
        model_name=MODEL_NAME,
        model_dir=str(model_dir),
        max_in_flight=args.max_in_flight,
        request_batch_size=args.request_batch_size,
        max_batch_size=args.stage_batch_size,
        fallback_enabled=False,
    )
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            partition_key=DAY,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        finished = time.perf_counter()
        stages = {
            stat.step_key: round(stat.end_time - stat.start_time, 3)
            for stat in instance.get_run_step_stats(result.run_id)
            if stat.start_time and stat.end_time
        }
    return {"ok": result.success, "started": started, "finished": finished, "stages_s": stages}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.triton_gpu")
    parser.add_argument("--phrases", type=int, default=10_000)
    parser.add_argument("--min-seconds", type=float, default=1.5)
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--preferred-batch-sizes", default="16,32,64")
    parser.add_argument("--max-queue-delay-us", type=int, default=2_000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--request-batch-size", type=int, default=32)
    parser.add_argument("--stage-batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "triton-gpu.json")
    args = parser.parse_args([] if argv is None and __name__ != "__main__" else argv)
    if not has_gpu():
        print("no NVIDIA GPU here (nvidia-smi missing or lists none): GPU benchmark not run")
        return
    from bench.throughput import model_dir_for, synthesize_day

    model_dir = model_dir_for("base")
    with tempfile.TemporaryDirectory(prefix="asr-bench-gpu-") as tmp:
        scratch = Path(tmp)
        repository = scratch / "repository"
        export_repository(model_dir, repository, args)
        http, grpc = free_port(), free_port()
        server = start_server(repository, http, grpc, scratch / "tritonserver.log")
        sampler = GpuSampler()
        try:
            wait_ready(http, server)
            audio_s = synthesize_day(
                scratch / "store", args.phrases, args.min_seconds, args.max_seconds
            )
            run = score_day(scratch / "store", model_dir, grpc, args)
        finally:
            sampler.stop()
            stop_server(server)
    wall = run["finished"] - run["started"]
    busy = sampler.between(run["started"], run["finished"])
    figures = {
        "phrases": args.phrases,
        "audio_seconds": round(audio_s, 1),
        "ok": run["ok"],
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(audio_s / wall, 1),
        "gpu_utilization_mean": round(statistics.fmean(busy), 1) if busy else None,
        "gpu_utilization_p90": round(sorted(busy)[int(0.9 * (len(busy) - 1))], 1) if busy else None,
        "stages_s": run["stages_s"],
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    print(json.dumps(figures, indent=2, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))
    status = "run ok" if run["ok"] else "run FAILED"
    print(f"{figures['audio_s_per_s']} audio-s/s end to end ({status}); wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
