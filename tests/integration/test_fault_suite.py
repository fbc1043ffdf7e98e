"""The fault suite: a full partition in the aws environment with 20% of requests faulted.

S3 and Athena (moto) and AppSync (the test GraphQL server) each sit behind our fault-injecting
proxy (tests/support/fault_proxy.py). For each fault kind, 20% of the requests get that fault
(`mixed`: 4% each of all five); the partition must still commit with every catalog phrase either
scored or errored exactly once, with the error rows of the day's known-bad inputs and nothing
else (a fault must never turn into an error row), and every activity published. The client-level
retries of `reliability/` are expected to absorb every fault: no step may need a Dagster retry.

The figures (phrases in / scored / errored / lost, faults, retries) go to the terminal summary
and to `fault-suite.json` under pytest's temporary directory (tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.assets.letter_scores import verify_partition
from asr_assets.core.errors import Stage
from asr_assets.core.storage import result_prefix
from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.reliability.breaker import reset_shared_breakers
from asr_assets.reliability.rate_limit import reset_shared_buckets
from asr_assets.reliability.retry import retry_counts
from asr_assets.resources.s3 import S3ObjectStore
from tests.integration.conftest import FaultRow
from tests.support.data import (
    STANDARD_DAY_ERRORS,
    PhraseSpec,
    standard_day,
    tone,
    wav_bytes,
    write_day,
)
from tests.support.fault_proxy import FaultKind, FaultPlan, running_fault_proxy
from tests.support.graphql_server import AppSyncState, running_appsync
from tests.support.moto_server import (  # noqa: F401
    REGION,
    MotoServer,
    athena_result,
    aws_test_environment,
    moto,
    s3_client,
    upload_tree,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAY = "2026-11-27"
BUCKET = "fault-store"
RESULTS_BUCKET = "fault-athena-results"
API_KEY = "fault-api-key"
# ASR_FAULT_RATE reruns the suite at another rate (the fault table at 50%); assertions stay.
RATE = float(os.environ.get("ASR_FAULT_RATE", "0.2"))
PLANS = {
    FaultKind.HTTP_500.value: FaultPlan.single(FaultKind.HTTP_500, RATE),
    FaultKind.HTTP_503.value: FaultPlan.single(FaultKind.HTTP_503, RATE),
    FaultKind.SLOW_DOWN.value: FaultPlan.single(FaultKind.SLOW_DOWN, RATE),
    FaultKind.RESET.value: FaultPlan.single(FaultKind.RESET, RATE),
    FaultKind.LATENCY.value: FaultPlan.single(FaultKind.LATENCY, RATE, latency_s=0.05),
    "mixed": FaultPlan.mixed(RATE),
}
# The production attempts against independent faults (no streak cap in the proxy), with short
# sleeps so the suite runs in seconds.
FAST_RETRIES = {
    f"ASR_RETRY_{dependency}_{knob}": value
    for dependency in ("S3", "ATHENA", "APPSYNC")
    for knob, value in (("INITIAL_S", "0.005"), ("MAX_S", "0.02"))
}


def fault_day(root: Path) -> list[PhraseSpec]:
    """The standard day (five good phrases, five known-bad ones) plus four more activities."""
    day = date.fromisoformat(DAY)
    phrases = standard_day(root, day)
    for activity in range(4, 8):
        for index in range(3):
            phrases.append(
                PhraseSpec(
                    f"act-{activity}",
                    index,
                    "b d p"[: 1 + 2 * index] if index < 2 else "m n",
                    wav_bytes(tone(0.8 + 0.2 * index, freq=180 + 20 * activity)),
                    f"audio/act-{activity}/{index}.wav",
                    tenant_id="tenant-c",
                    student_id=f"student-secret-{activity}",
                )
            )
    write_day(root, day, phrases)
    return phrases


@dataclass
class FaultWorld:
    moto: MotoServer
    appsync_origin: str
    appsync: AppSyncState
    generated: Path
    tmp: Path
    model_dir: Path
    phrases: list[PhraseSpec]
    mp: pytest.MonkeyPatch

    @property
    def expected(self) -> list[tuple[str, int]]:
        return [(p.activity_id, p.phrase_index) for p in self.phrases]

    def environ(self, prefix: str, aws_url: str, appsync_url: str) -> dict[str, str]:
        return {
            "ASR_ENV": "aws",
            "ASR_S3_BUCKET": BUCKET,
            "ASR_S3_PREFIX": prefix,
            "ASR_S3_ENDPOINT_URL": aws_url,
            "ASR_S3_CACHE_DIR": str(self.tmp / "cache" / prefix),
            "ASR_S3_CACHE_MIN_FREE_MB": "1",
            "ASR_AWS_REGION": REGION,
            "ASR_ATHENA_DATABASE": "asr",
            "ASR_ATHENA_OUTPUT_LOCATION": f"s3://{RESULTS_BUCKET}/{prefix}/",
            "ASR_ATHENA_ENDPOINT_URL": aws_url,
            "ASR_ATHENA_POLL_INTERVAL_S": "0.01",
            "ASR_MODEL_DIR": str(self.model_dir),
            "ASR_INFERENCE": "local",
            "ASR_APPSYNC_URL": appsync_url,
            "ASR_APPSYNC_AUTH_MODE": "api_key",
        }


@pytest.fixture(scope="module")
def world(
    moto: MotoServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
) -> Iterator[FaultWorld]:
    tmp = tmp_path_factory.mktemp("faults")
    generated = tmp / "generated"
    phrases = fault_day(generated)
    with (
        pytest.MonkeyPatch.context() as mp,
        aws_test_environment(mp, moto.endpoint),
        running_appsync(api_key=API_KEY) as (appsync_url, appsync),
    ):
        for name, value in FAST_RETRIES.items():
            mp.setenv(name, value)
        for dependency in ("S3", "ATHENA", "APPSYNC"):
            # The shared test environment shortens attempts; this suite measures the real ones.
            mp.delenv(f"ASR_RETRY_{dependency}_ATTEMPTS", raising=False)
        mp.setenv("ASR_APPSYNC_API_KEY", API_KEY)
        moto.reset()
        client = s3_client(moto.endpoint)
        client.create_bucket(Bucket=BUCKET)
        client.create_bucket(Bucket=RESULTS_BUCKET)
        reset_shared_buckets()
        reset_shared_breakers()
        yield FaultWorld(
            moto=moto,
            appsync_origin=appsync_url.removesuffix("/graphql"),
            appsync=appsync,
            generated=generated,
            tmp=tmp,
            model_dir=tiny_model_dir,
            phrases=phrases,
            mp=mp,
        )


@pytest.mark.parametrize("kind", list(PLANS))
def test_a_partition_completes_under_faults(
    world: FaultWorld, kind: str, fault_report: list[FaultRow]
) -> None:
    plan = PLANS[kind]
    prefix = f"faults-{kind}"
    upload_tree(
        s3_client(world.moto.endpoint), BUCKET, world.generated / "audio", f"{prefix}/audio/"
    )
    catalog_rows = pq.read_table(
        world.generated / "catalog" / "activities" / f"activity_date={DAY}" / "part-0.parquet"
    )
    world.moto.queue_athena_results([athena_result(catalog_rows)])
    started = time.perf_counter()
    retries_before = retry_counts()
    with (
        running_fault_proxy(world.moto.endpoint, plan) as aws_proxy,
        running_fault_proxy(world.appsync_origin, plan) as appsync_proxy,
    ):
        # pyathena downloads the query result with its own S3 client: through the proxy too.
        world.mp.setenv("AWS_ENDPOINT_URL", aws_proxy.url)
        environ = world.environ(prefix, aws_proxy.url, f"{appsync_proxy.url}/graphql")
        definitions = build_definitions(environ)
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                ALL_ASSETS,
                partition_key=DAY,
                resources=definitions.resources,
                instance=instance,
                raise_on_error=False,
            )
    world.mp.setenv("AWS_ENDPOINT_URL", world.moto.endpoint)
    seconds = time.perf_counter() - started
    retries = {
        dependency: count - retries_before.get(dependency, 0)
        for dependency, count in retry_counts().items()
        if count - retries_before.get(dependency, 0)
    }
    step_retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]

    # Verify straight against moto, not through the proxy.
    store: S3ObjectStore = definitions.resources["store"].model_copy(
        update={"endpoint_url": world.moto.endpoint}
    )
    verification = verify_partition(store, DAY, expected=world.expected) if result.success else None
    fault_report.append(
        FaultRow(
            fault=kind,
            rate=RATE,
            phrases_in=len(world.expected),
            scored=verification.phrases_scored if verification else 0,
            errored=verification.phrases_errored if verification else 0,
            lost=verification.lost if verification else len(world.expected),
            faults_injected=sum(aws_proxy.stats.injected.values())
            + sum(appsync_proxy.stats.injected.values()),
            requests=aws_proxy.stats.requests + appsync_proxy.stats.requests,
            retries=retries,
            seconds=round(seconds, 2),
            succeeded=bool(result.success and verification and verification.ok),
            step_retries=len(step_retries),
        )
    )

    assert result.success, [
        str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure
    ]
    assert not step_retries, "a fault reached Dagster's step retry: the client retries missed it"
    assert verification is not None and verification.ok, verification
    assert verification.lost == 0
    assert verification.phrases_scored + verification.phrases_errored == len(world.expected)
    manifest = store.read_committed(result_prefix("letter_scores", DAY))
    assert manifest is not None and manifest["run_id"] == result.run_id
    errors = store.read_table(manifest["files"]["errors"]).to_pylist()  # type: ignore[index]
    # Faults are absorbed by retries: they never become error rows (audio_missing, ...).
    assert {(e["activity_id"], e["phrase_index"]): e["reason_code"] for e in errors} == (
        STANDARD_DAY_ERRORS
    )
    assert {e["stage"] for e in errors} <= {Stage.ACTIVITIES.value, Stage.PHRASE_AUDIO.value}
    published = {
        record["activity_id"]
        for record in world.appsync.writes.values()
        if record["run_id"] == result.run_id
    }
    assert published == {p.activity_id for p in world.phrases}
    if plan.rates.get(FaultKind.LATENCY, 0) < sum(plan.rates.values()):
        assert aws_proxy.stats.faults > 0 and sum(retries.values()) > 0
    assert aws_proxy.stats.injected, "the plan injected nothing: the suite proves nothing"
