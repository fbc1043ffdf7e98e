"""Soak: scoring runs back to back for a bounded time, with faults injected at intervals.

Not a CI test: a figure-producing run (`python -m bench soak`, or
`python -m bench.soak --minutes 240` for hours). Every run scores one new partition of
synthetic phrases (five voiced; once per rotation an empty recording too) on real components
started on 127.0.0.1: a moto S3 server (directly, or through the fault proxy of
tests/support), a real `tritonserver` (the nvidia-pytriton wheel's) with the local engine as
fallback, the DuckDB catalog and the JSONL publisher. Runs are separate processes recorded
in the soak's own DAGSTER_HOME.

Faults, in a fixed rotation where every other run is clean:
- `s3_errors`: the run's S3 traffic goes through the fault proxy (HTTP 500/503, SlowDown,
  connection resets and latency on a share of requests);
- `killed_triton`: the Triton process group is SIGKILLed while the run is scoring, restarted
  after it; the run must finish on the fallback;
- `killed_run`: the run's process group is SIGKILLed part-way; the partition is then run again
  (what a retry or an operator does) and must commit exactly once.

Reported: phrases in / scored / errored / lost per fault kind (lost = in − scored − errored,
read from the committed partitions); memory over time (peak RSS of each run, of the harness
and of Triton); the SLO burn (asr_assets/slo.yaml) over the soak's own run history.
Bounded: a deadline (`--minutes`, default `ASR_SOAK_MINUTES` or 20), a per-run timeout, and
every server torn down on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROTATION = ("none", "s3_errors", "none", "killed_triton", "none", "killed_run")
BUCKET = "asr-soak"


@dataclass
class RunRow:
    index: int
    partition: str
    fault: str
    attempts: int
    phrases_in: int
    scored: int
    errored: int
    lost: int
    seconds: float
    peak_rss_mb: float
    committed: bool
    started_min: float


@dataclass
class MemorySample:
    minute: float
    run_peak_rss_mb: float
    harness_rss_mb: float
    triton_rss_mb: float


@dataclass
class SoakReport:
    minutes_planned: float
    minutes_run: float
    runs: list[RunRow] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    slo: list[dict[str, Any]] = field(default_factory=list)
    s3_faults_injected: int = 0
    triton_kills: int = 0
    run_kills: int = 0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    return 0.0


def group_rss_mb(pgid: int) -> float:
    """RSS of every process in a process group (a run and its workers, Triton and its stubs)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                total += rss_mb(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return total


def write_partition(catalog_root: Path, client: Any, day: date, index: int) -> int:
    """Catalog rows locally (DuckDB reads them), audio into S3; returns the phrase count."""
    from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

    staging = catalog_root.parent / "audio-staging" / day.isoformat()
    phrases = [
        PhraseSpec(
            f"soak-{index}-{n}",
            0,
            "b d p" if n % 2 else "m n",
            wav_bytes(tone(1.0 + 0.1 * n, freq=180 + 13 * n + index % 40)),
            f"audio/{day.isoformat()}/soak-{index}-{n}.wav",
        )
        for n in range(5)
    ]
    if index % len(ROTATION) == 0:  # one bad recording per rotation: errored rows too
        phrases.append(
            PhraseSpec(f"soak-{index}-empty", 0, "a", b"", f"audio/{day.isoformat()}/empty.wav")
        )
    write_day(staging, day, phrases)
    for spec in phrases:
        client.put_object(Bucket=BUCKET, Key=spec.audio_key, Body=spec.audio or b"")
    catalog = catalog_root / "catalog" / "activities" / f"activity_date={day.isoformat()}"
    catalog.mkdir(parents=True, exist_ok=True)
    source = staging / "catalog" / "activities" / f"activity_date={day.isoformat()}"
    for part in source.iterdir():
        (catalog / part.name).write_bytes(part.read_bytes())
    return len(phrases)


def committed_counts(client: Any, day: date) -> tuple[int, int] | None:
    from botocore.exceptions import ClientError

    key = f"results/letter_scores/activity_date={day.isoformat()}/_SUCCESS"
    try:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError:
        return None
    manifest = json.loads(body)
    return int(manifest["phrases_scored"]), int(manifest["phrases_errored"])


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.report = SoakReport(minutes_planned=args.minutes, minutes_run=0.0)
        self.started = time.monotonic()
        self.rng = random.Random(args.seed)
        self.triton: Any = None
        self.triton_url = ""
        self.triton_model = ""

    def minute(self) -> float:
        return (time.monotonic() - self.started) / 60

    def environment(self) -> dict[str, str]:
        from tests.support.moto_server import AWS_TEST_ENVIRONMENT

        return {
            **os.environ,
            **AWS_TEST_ENVIRONMENT,
            "PYTHONPATH": str(ROOT),
            "DAGSTER_HOME": str(self.work / "dagster-home"),
            # Production backoff is seconds; the soak wants many runs, not long sleeps.
            "ASR_RETRY_S3_INITIAL_S": "0.05",
            "ASR_RETRY_S3_MAX_S": "0.5",
            "ASR_LOG_LEVEL": "WARNING",
        }

    def launch(self, day: date, endpoint: str, fault: str) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "bench._soak_run",
            f"--partition={day.isoformat()}",
            f"--root={self.work}",
            f"--bucket={BUCKET}",
            f"--s3-endpoint={endpoint}",
            f"--model-dir={self.args.model_dir}",
            f"--fault={fault}",
        ]
        if self.triton_url:
            command += [f"--triton-url={self.triton_url}", f"--triton-model={self.triton_model}"]
        log = (self.work / "runs.log").open("ab")
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def watch(
        self, process: subprocess.Popen[bytes], kill_after_s: float | None
    ) -> tuple[float, bool]:
        """Wait for the run (bounded), sampling its memory; SIGKILL it after `kill_after_s`."""
        peak = 0.0
        started = time.monotonic()
        killed = False
        while process.poll() is None:
            elapsed = time.monotonic() - started
            peak = max(peak, group_rss_mb(process.pid))
            if (kill_after_s is not None and elapsed > kill_after_s) or (
                elapsed > self.args.run_timeout_s
            ):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                killed = True
                break
            time.sleep(0.25)
        return peak, killed

    def kill_triton_later(self, delay_s: float) -> threading.Thread:
        def kill() -> None:
            time.sleep(delay_s)
            self.triton.kill()
            self.report.triton_kills += 1

        thread = threading.Thread(target=kill, daemon=True)
        thread.start()
        return thread

    def run_one(self, index: int, moto_endpoint: str, proxy_url: str, client: Any) -> None:
        day = date(2026, 1, 1) + timedelta(days=index)
        phrases = write_partition(self.work / "catalog-root", client, day, index)
        fault = ROTATION[index % len(ROTATION)]
        if fault == "killed_triton" and self.triton is None:
            fault = "none"
        started_min = self.minute()
        started = time.monotonic()
        attempts = 0
        peak_total = 0.0
        endpoint = proxy_url if fault == "s3_errors" else moto_endpoint
        killer = None
        if fault == "killed_triton":
            killer = self.kill_triton_later(self.rng.uniform(2.0, 6.0))
        kill_after = self.rng.uniform(4.0, 12.0) if fault == "killed_run" else None
        while attempts < 3:
            attempts += 1
            process = self.launch(day, endpoint, fault)
            peak, killed = self.watch(process, kill_after)
            peak_total = max(peak_total, peak)
            if killed and kill_after is not None:
                self.report.run_kills += 1
                kill_after = None  # the rerun goes through
                continue
            if process.returncode == 0:
                break
        if killer is not None:
            killer.join()
            self.triton.start()  # back for the next runs
        counts = committed_counts(client, day)
        scored, errored = counts if counts else (0, 0)
        row = RunRow(
            index=index,
            partition=day.isoformat(),
            fault=fault,
            attempts=attempts,
            phrases_in=phrases,
            scored=scored,
            errored=errored,
            lost=phrases - scored - errored,
            seconds=round(time.monotonic() - started, 1),
            peak_rss_mb=round(peak_total, 1),
            committed=counts is not None,
            started_min=round(started_min, 2),
        )
        self.report.runs.append(row)
        triton_rss = group_rss_mb(self.triton.process.pid) if self.triton else 0.0
        self.report.memory.append(
            MemorySample(
                minute=round(self.minute(), 2),
                run_peak_rss_mb=row.peak_rss_mb,
                harness_rss_mb=round(rss_mb(os.getpid()), 1),
                triton_rss_mb=round(triton_rss, 1),
            )
        )
        print(
            f"[{self.minute():6.1f} min] run {index:3d} {day} fault={fault:<13} "
            f"in={phrases} scored={scored} errored={errored} lost={row.lost} "
            f"attempts={attempts} {row.seconds:5.1f}s peak {row.peak_rss_mb:.0f} MB",
            flush=True,
        )

    def slo_burn(self) -> list[dict[str, Any]]:
        import dagster as dg

        from asr_assets.assets.slo import build_slo_report
        from asr_assets.core.slo import load_spec

        os.environ["DAGSTER_HOME"] = str(self.work / "dagster-home")
        rows = []
        with dg.DagsterInstance.get() as instance:
            statuses = build_slo_report(
                instance, load_spec(), datetime.now(UTC), triton=self.triton is not None
            )
        for status, fired in statuses:
            rows.append(
                {
                    "slo": status.slo.name,
                    "target": status.slo.target,
                    "sli": status.sli_window,
                    "events": status.events,
                    "burn": status.burn_rates,
                    "alerting": fired,
                    "source": status.source,
                }
            )
        return rows


def summarize(report: SoakReport) -> str:
    lines = [
        f"soak: {report.minutes_run:.1f} of {report.minutes_planned:.0f} planned minutes, "
        f"{len(report.runs)} runs, {report.s3_faults_injected} S3 faults injected, "
        f"{report.triton_kills} Triton kills, {report.run_kills} run kills",
        f"{'fault':<14}{'runs':>5}{'in':>6}{'scored':>8}{'errored':>8}{'lost':>6}{'s/run':>7}",
    ]
    groups: dict[str, list[RunRow]] = defaultdict(list)
    for row in report.runs:
        groups[row.fault].append(row)
    for fault, rows in sorted(groups.items()):
        lines.append(
            f"{fault:<14}{len(rows):>5}{sum(r.phrases_in for r in rows):>6}"
            f"{sum(r.scored for r in rows):>8}{sum(r.errored for r in rows):>8}"
            f"{sum(r.lost for r in rows):>6}{sum(r.seconds for r in rows) / len(rows):>7.1f}"
        )
    if report.memory:
        first, last = report.memory[0], report.memory[-1]
        peak = max(m.run_peak_rss_mb for m in report.memory)
        lines.append(
            f"memory: run peak RSS first {first.run_peak_rss_mb:.0f} MB, last "
            f"{last.run_peak_rss_mb:.0f} MB, max {peak:.0f} MB; harness {first.harness_rss_mb:.0f}"
            f" -> {last.harness_rss_mb:.0f} MB; triton {first.triton_rss_mb:.0f} -> "
            f"{last.triton_rss_mb:.0f} MB"
        )
    lines.append(
        "(partition_freshness is spent by design: the soak scores past days, published long "
        "after they closed)"
    )
    for slo in report.slo:
        burn = ", ".join(f"{w} {'-' if v is None else f'{v:.2f}'}" for w, v in slo["burn"].items())
        sli = "no data" if slo["sli"] is None else f"{slo['sli']:.4f}"
        lines.append(
            f"slo {slo['slo']:<22} sli {sli:<8} target {slo['target']:<6} burn {burn}"
            f"{'  ALERT ' + ','.join(slo['alerting']) if slo['alerting'] else ''}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> SoakReport:
    from tests.support.fault_proxy import FaultPlan, running_fault_proxy
    from tests.support.moto_server import running_moto_server, s3_client

    with tempfile.TemporaryDirectory(prefix="asr-soak-") as scratch:
        work = Path(scratch)
        (work / "dagster-home").mkdir()
        (work / "dagster-home" / "dagster.yaml").write_text("{}\n")
        soak = Soak(args, work)
        deadline = time.monotonic() + args.minutes * 60
        lifetime = args.minutes * 60 + 3600
        with (
            running_moto_server() as moto,
            running_fault_proxy(
                moto.endpoint, FaultPlan.mixed(args.s3_fault_rate, lifetime_s=lifetime)
            ) as proxy,
        ):
            os.environ.update(soak.environment())
            client = s3_client(moto.endpoint)
            client.create_bucket(Bucket=BUCKET)
            triton_context = None
            if args.triton:
                from asr_assets.inference.model_dir import model_info, verify_checksums
                from tests.support.triton_server import exported_repository, running_server

                model = model_info(Path(args.model_dir), verify_checksums(Path(args.model_dir)))
                repository = exported_repository(
                    Path(args.model_dir), work / "repository", model.name
                )
                triton_context = running_server(repository, model.name, work / "triton")
                soak.triton, _ = triton_context.__enter__()
                soak.triton_url, soak.triton_model = soak.triton.grpc_url, model.name
            try:
                index = 0
                while time.monotonic() < deadline:
                    soak.run_one(index, moto.endpoint, proxy.url, client)
                    index += 1
            finally:
                if triton_context is not None:
                    triton_context.__exit__(None, None, None)
            soak.report.s3_faults_injected = proxy.stats.faults
        soak.report.minutes_run = round(soak.minute(), 2)
        soak.report.slo = soak.slo_burn()
        return soak.report


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("ASR_SOAK_MINUTES", "20"))
    )
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("ASR_MODEL_DIR", str(ROOT / "models" / "demo-letters")),
    )
    parser.add_argument("--no-triton", dest="triton", action="store_false")
    parser.add_argument("--s3-fault-rate", type=float, default=0.15)
    parser.add_argument("--run-timeout-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "soak.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv if argv is not None else [])
    report = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(report), indent=2, default=str))
    print(summarize(report))
    print(f"report: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
