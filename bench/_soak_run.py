"""One scoring run of the soak (`bench/soak.py`), in its own process so the soak can kill it.

Resources: the DuckDB catalog over the soak's local root, the S3 store (moto, possibly through the
fault proxy), Triton with the local fallback (or local inference), the local JSONL publisher.
Runs are recorded in DAGSTER_HOME, so the soak's SLO report reads them like production's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._soak_run")
    parser.add_argument("--partition", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--triton-url", default="")
    parser.add_argument("--triton-model", default="")
    parser.add_argument("--fault", default="none")
    args = parser.parse_args(argv)

    import dagster as dg

    from asr_assets.definitions import ALL_ASSETS
    from asr_assets.resources.catalog import DuckDBActivityCatalog
    from asr_assets.resources.inference import LocalInferenceResource, TritonInferenceResource
    from asr_assets.resources.object_store import LocalObjectStore
    from asr_assets.resources.publisher import LocalJsonlPublisher
    from asr_assets.resources.s3 import S3ObjectStore

    root = Path(args.root)
    inference: dg.ConfigurableResource
    if args.triton_url:
        inference = TritonInferenceResource(
            url=args.triton_url,
            model_name=args.triton_model,
            model_dir=args.model_dir,
            request_timeout_s=10.0,
            probe_timeout_s=2.0,
            failure_threshold=1,
            cool_down_s=30.0,
        )
    else:
        inference = LocalInferenceResource(model_dir=args.model_dir)
    resources = {
        "store": S3ObjectStore(
            bucket=args.bucket,
            endpoint_url=args.s3_endpoint,
            cache_dir=str(root / "s3-cache"),
            min_free_bytes=0,
        ),
        "catalog": DuckDBActivityCatalog(root=str(root / "catalog-root")),
        "inference": inference,
        "publisher": LocalJsonlPublisher(store=LocalObjectStore(root=str(root / "published"))),
    }
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            partition_key=args.partition,
            resources=resources,
            instance=instance,
            raise_on_error=False,
            tags={"asr/source": "soak", "asr/soak-fault": args.fault},
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
