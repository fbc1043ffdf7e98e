"""A platform workload: one shard in, one Parquet table out, spoken through Dagster Pipes.

The platform starts this process once per shard with the job context in the Pipes extras:
`input_key` (Parquet: a `key` column plus the manifest's fields), `output_key` (where to write
the table), `output_columns`, `store` (`local` root or `s3` bucket/prefix), `params`, `shard`.
Write exactly one row per input key, report progress, exit 0. Replace `measure` with your model.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from dagster_pipes import open_dagster_pipes

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason_code", pa.string()),
        ("message", pa.string()),
        ("duration_s", pa.float64()),
        ("rms_dbfs", pa.float64()),
        ("peak", pa.float64()),
    ]
)


def measure(data: bytes) -> dict[str, float]:
    """Your model goes here: bytes of one audio file in, output columns out."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if mono.size else 0.0
    return {
        "duration_s": mono.size / rate,
        "rms_dbfs": 20 * np.log10(rms) if rms > 0 else -200.0,
        "peak": float(np.abs(mono).max()) if mono.size else 0.0,
    }


def process(
    rows: Iterable[Mapping[str, Any]], read: Callable[[str], bytes]
) -> Iterator[dict[str, Any]]:
    """One output row per input row; a file that fails gets an error row with a reason."""
    for row in rows:
        key = str(row["key"])
        try:
            values = measure(read(key))
        except FileNotFoundError:
            yield {"key": key, "status": "error", "reason_code": "audio_missing", "message": key}
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            yield {
                "key": key,
                "status": "error",
                "reason_code": "audio_undecodable",
                "message": str(exc)[:300],
            }
        else:
            yield {"key": key, "status": "ok", "reason_code": None, "message": None, **values}


def store_access(
    spec: Mapping[str, Any],
) -> tuple[Callable[[str], bytes], Callable[[str, bytes], None]]:
    """Read and write functions for the store the platform named."""
    if spec["kind"] == "local":
        root = Path(spec["root"])

        def write_local(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        return (lambda key: (root / key).read_bytes()), write_local
    import boto3

    s3 = boto3.client(
        "s3", region_name=spec.get("region_name"), endpoint_url=spec.get("endpoint_url")
    )
    bucket, prefix = spec["bucket"], (spec.get("prefix") or "").strip("/")

    def full(key: str) -> str:
        return f"{prefix}/{key}" if prefix else key

    def read_s3(key: str) -> bytes:
        try:
            return s3.get_object(Bucket=bucket, Key=full(key))["Body"].read()
        except s3.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None

    return read_s3, lambda key, data: s3.put_object(Bucket=bucket, Key=full(key), Body=data)


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        read, write = store_access(extras["store"])
        inputs = pq.read_table(io.BytesIO(read(extras["input_key"])))
        rows = inputs.to_pylist()
        out = []
        for done, row in enumerate(process(rows, read), start=1):
            out.append(row)
            pipes.report_custom_message({"kind": "progress", "done": done, "total": len(rows)})
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(out, schema=SCHEMA), sink)
        write(extras["output_key"], sink.getvalue())
        ok = sum(r["status"] == "ok" for r in out)
        pipes.report_custom_message(
            {
                "kind": "summary",
                "files": len(out),
                "ok": ok,
                "audio_seconds": sum(r.get("duration_s") or 0.0 for r in out),
                "bytes_in": 0,
            }
        )
        pipes.log.info(f"{ok} of {len(out)} files measured")


if __name__ == "__main__":
    main()
