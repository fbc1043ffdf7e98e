"""`asr`: score partitions and read their results from a terminal.

A thin layer over the same Definitions the Dagster UI uses; runs go to the Dagster instance in
DAGSTER_HOME when it is set, so they show up in `make dev` too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from asr_assets.core.storage import CATALOG_PREFIX, result_prefix

SAMPLE_DAY = "2026-11-27"
SAMPLE_STORE = Path(__file__).resolve().parents[2] / "data" / "sample-store"


def _instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def score(partitions: list[str]) -> bool:
    """Materialize the whole graph and its quality gates for each partition.

    True when every run succeeded; a failed blocking gate fails the run and is printed.
    """
    import dagster as dg

    from asr_assets.checks import ALL_CHECKS
    from asr_assets.checks.summary import check_outcomes, format_check_outcomes
    from asr_assets.definitions import ALL_ASSETS, defs
    from asr_assets.platform.abandoned_runs import fail_abandoned_runs

    definitions = defs()
    ok = True
    with _instance() as instance:
        fail_abandoned_runs(instance)  # killed earlier runs left STARTED: mark them failed
        for partition in partitions:
            result = dg.materialize(
                [*ALL_ASSETS, *ALL_CHECKS],
                partition_key=partition,
                resources=definitions.resources,
                instance=instance,
                raise_on_error=False,
                tags={"asr/source": "cli"},
            )
            ok = ok and result.success
            print(f"{partition}: run {result.run_id} {'succeeded' if result.success else 'FAILED'}")
            print("\n".join(format_check_outcomes(check_outcomes(result))))
    return ok


def summarize(partition: str) -> int:
    """Print what a committed partition holds; reads through its _SUCCESS manifest only."""
    from asr_assets.assets.published_scores import PartitionNotCommittedError, read_result_partition
    from asr_assets.checks.summary import quarantine_status
    from asr_assets.definitions import defs

    resources = defs().resources
    store = resources["store"]
    try:
        manifest, rows = read_result_partition(store, partition)
    except PartitionNotCommittedError as exc:
        print(f"not committed: {exc}", file=sys.stderr)
        return 1
    _audit_summary_read(store, partition)
    letters = rows["letter_scores"]
    statuses = Counter(str(row["status"]) for row in letters)
    expected = len(letters) - statuses.get("inserted", 0)
    activities = {str(r["activity_id"]) for r in rows["phrase_results"]} | {
        str(r["activity_id"]) for r in rows["errors"]
    }
    reasons = Counter(str(row["reason_code"]) for row in rows["errors"])
    share = statuses.get("correct", 0) / expected if expected else 0.0
    print(f"Partition {partition} (run {manifest.run_id})")
    model = manifest.model
    print(f"  model            {model.name} {model.version} ({model.sha256[:12]})")
    print(f"  activities       {len(activities)}")
    print(
        f"  phrases          {manifest.phrases_in} in = {manifest.phrases_scored} scored"
        f" + {manifest.phrases_errored} errored"
    )
    print(f"  expected letters {expected} (+{statuses.get('inserted', 0)} inserted)")
    print(f"  share correct    {share:.1%}")
    print("  letters          " + ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    print(
        "  errors           "
        + (", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none")
    )
    print(f"  results          {store.uri(result_prefix('letter_scores', partition))}")
    for table in ("phrase_results", "errors"):
        print(f"                   {store.uri(result_prefix(table, partition))}")
    publisher = resources["publisher"]
    print(f"  published        {publisher.destination(partition)}")
    print(quarantine_status(store, partition))
    return 0


def _audit_summary_read(store, partition: str) -> None:  # type: ignore[no-untyped-def]
    """Reading results is an audited access (docs/privacy.md)."""
    from asr_assets.core.privacy import AuditAction
    from asr_assets.platform.privacy import actor, audit_read

    audit_read(
        store,
        action=AuditAction.READ_RESULTS,
        resource=f"results/activity_date={partition}",
        purpose=os.environ.get("ASR_ACCESS_PURPOSE", "cli summary"),
        channel="cli",
        who=actor(os.environ),
    )


def prepare_sample(data_root: Path) -> None:
    """Copy the shipped sample day into the data root unless that day is already there."""
    target = data_root / CATALOG_PREFIX / f"activity_date={SAMPLE_DAY}"
    if target.exists():
        return
    for source in SAMPLE_STORE.rglob("*"):
        if source.is_file() and not source.name.endswith(".md"):
            destination = data_root / source.relative_to(SAMPLE_STORE)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["erase"], ["retention"]):  # privacy commands (asr_assets/platform/privacy.py)
        from asr_assets.platform import privacy

        return privacy.main(argv)
    parser = argparse.ArgumentParser(prog="asr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    score_cmd = commands.add_parser("score", help="materialize the graph for partitions")
    score_cmd.add_argument("partitions", nargs="+", metavar="YYYY-MM-DD")
    summary_cmd = commands.add_parser("summary", help="summarize a committed partition")
    summary_cmd.add_argument("partition", metavar="YYYY-MM-DD")
    commands.add_parser("demo", help="score the shipped sample day and summarize it")
    args = parser.parse_args(argv)

    if args.command == "score":
        return 0 if score(args.partitions) else 1
    if args.command == "summary":
        return summarize(args.partition)
    data_root = Path(os.environ.get("ASR_DATA_ROOT", ".asr-data")).resolve()
    prepare_sample(data_root)
    os.environ["ASR_DATA_ROOT"] = str(data_root)
    if not score([SAMPLE_DAY]):
        return 1
    print()
    return summarize(SAMPLE_DAY)


if __name__ == "__main__":
    sys.exit(main())
