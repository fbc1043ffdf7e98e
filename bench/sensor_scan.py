"""The new-audio sensor's work per tick on a large prefix (default: a million objects).

Figures, not a pass/fail test. Builds `audio/YYYY-MM-DD/...` objects spread over `--days` days
ending today, all older than the settle period, then evaluates the sensor tick after tick (its
real code: `evaluate_new_audio`, cursor round-tripped as JSON) until it has completed two passes
over the look-back window, and prints keys, pages and seconds per tick.

    python -m bench sensor_scan                                 # 1,000,000 objects, local store
    python -m bench.sensor_scan --objects 200000 --lookback 400 # whole prefix, smaller
    python -m bench.sensor_scan --store moto --objects 50000    # over HTTP against moto

`local` creates empty files in a temporary directory (about a minute for a million). `moto`
seeds a moto S3 server in-process and lists it over HTTP; moto answers ListObjectsV2 by scanning
the whole bucket, so its seconds per page grow with the bucket and overstate S3's (S3 pages
cost tens of milliseconds whatever the bucket size): what carries over is keys and pages per tick.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from asr_assets.resources.catalog import DuckDBActivityCatalog
from asr_assets.resources.inference import LocalInferenceResource
from asr_assets.resources.object_store import ListPage, LocalObjectStore, ObjectStore
from asr_assets.sensors.new_audio import NewAudioCursor, NewAudioSettings, evaluate_new_audio


def _keys(objects: int, days: int, today: datetime) -> list[str]:
    per_day = -(-objects // days)
    keys = []
    for index in range(objects):
        day = (today - timedelta(days=index // per_day)).date().isoformat()
        keys.append(f"audio/{day}/act-{index // 5:07d}/{index % 5}.wav")
    return keys


def _counting(store_class: type[ObjectStore]) -> type[ObjectStore]:
    """The store class, counting the pages and keys each listing returns."""

    class CountingStore(store_class):  # type: ignore[valid-type,misc]
        _pages: list[int] = PrivateAttr(default_factory=list)

        def list_page(
            self, prefix: str, *, start_after: str | None = None, max_keys: int = 1000
        ) -> ListPage:
            page = super().list_page(prefix, start_after=start_after, max_keys=max_keys)
            self._pages.append(len(page.objects))
            return page

        def take_pages(self) -> list[int]:
            pages, self._pages = self._pages, []
            return pages

    return CountingStore


def _local_store(root: Path, keys: list[str], modified: datetime) -> ObjectStore:
    stamp = modified.timestamp()
    made: set[Path] = set()
    for key in keys:
        path = root / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.touch()
        os.utime(path, (stamp, stamp))
    return _counting(LocalObjectStore)(root=str(root))  # type: ignore[call-arg]


def _moto_store(root: Path, keys: list[str]) -> tuple[ObjectStore, object]:
    import logging

    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    from asr_assets.resources.s3 import S3ObjectStore, aws_client

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ[name] = value
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    aws_client("s3", "us-east-1", endpoint_url=endpoint).create_bucket(Bucket="bench-audio")
    backend = s3_backends["123456789012"]["aws"]
    for key in keys:  # seeded in-process: a million PutObject requests would take an hour
        backend.put_object("bench-audio", key, b"")
    store = _counting(S3ObjectStore)(  # type: ignore[call-arg]
        bucket="bench-audio", region_name="us-east-1", endpoint_url=endpoint, cache_dir=str(root)
    )
    return store, server


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.sensor_scan", description=__doc__)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30, help="days the objects spread over")
    parser.add_argument("--store", choices=["local", "moto"], default="local")
    parser.add_argument("--lookback", type=int, default=7, help="sensor look-back window, days")
    parser.add_argument("--max-pages", type=int, default=20, help="pages per tick")
    parser.add_argument("--max-ticks", type=int, default=500)
    parser.add_argument("--quiet", action="store_true", help="summary only")
    args = parser.parse_args([] if argv is None else argv)

    now = datetime.now(UTC)
    settings = NewAudioSettings(
        lookback_days=args.lookback, max_pages_per_tick=args.max_pages, settle_s=600
    )
    root = Path(tempfile.mkdtemp(prefix="bench-sensor-"))
    server = None
    try:
        keys = _keys(args.objects, args.days, now)
        floor = (now - timedelta(days=args.lookback)).date().isoformat()
        in_window = sum(1 for key in keys if key[6:16] >= floor)
        started = time.perf_counter()
        if args.store == "local":
            store = _local_store(root / "store", keys, now - timedelta(hours=2))
        else:
            store, server = _moto_store(root, keys)
        del keys
        print(
            f"store={args.store} objects={args.objects:,} days={args.days} "
            f"in_window={in_window:,} (lookback {args.lookback} d, "
            f"{args.max_pages} pages/tick) setup={time.perf_counter() - started:.1f}s",
            flush=True,
        )
        # Evaluate after the settle period of the newest object (moto's are stamped "now").
        now = datetime.now(UTC) + timedelta(seconds=settings.settle_s + 1)
        catalog = DuckDBActivityCatalog(root=str(root))
        inference = LocalInferenceResource(model_dir=str(root / "model"))
        cursor: str | None = None
        per_tick: list[tuple[int, int, float]] = []  # pages, keys, seconds
        first_pass_ticks = None
        launched = 0
        for tick in range(1, args.max_ticks + 1):
            tick_started = time.perf_counter()
            result = evaluate_new_audio(store, catalog, inference, cursor, now, settings)
            seconds = time.perf_counter() - tick_started
            pages = store.take_pages()  # type: ignore[attr-defined]
            per_tick.append((len(pages), sum(pages), seconds))
            if not isinstance(result, dg.SensorResult) or result.cursor is None:
                print(f"tick {tick}: skipped without progress: {result}", flush=True)
                break
            launched += len(result.run_requests or [])
            state = NewAudioCursor.parse(result.cursor)
            if not args.quiet:
                print(
                    f"tick {tick:3d}: pages={len(pages):3d} keys={sum(pages):6,d} "
                    f"seconds={seconds:6.3f} run_requests={len(result.run_requests or [])} "
                    f"passes={state.passes}",
                    flush=True,
                )
            cursor = result.cursor
            if state.passes >= 1 and first_pass_ticks is None:
                first_pass_ticks = tick
            if state.passes >= 2:
                break
        keys_per_tick = [k for _, k, _ in per_tick]
        seconds_per_tick = [s for _, _, s in per_tick]
        print(
            f"SUMMARY store={args.store} objects={args.objects:,} in_window={in_window:,} "
            f"ticks={len(per_tick)} ticks_per_pass={first_pass_ticks} "
            f"run_requests={launched} "
            f"keys/tick mean={statistics.mean(keys_per_tick):,.0f} max={max(keys_per_tick):,} "
            f"pages/tick max={max(p for p, _, _ in per_tick)} "
            f"s/tick mean={statistics.mean(seconds_per_tick):.3f} "
            f"p95={_p95(seconds_per_tick):.3f} max={max(seconds_per_tick):.3f}",
            flush=True,
        )
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
