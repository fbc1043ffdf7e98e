"""What a Dagster user looks for: columns, owners, pii tags, code references, freshness, run tags,
and an executor that keeps a UI run in one process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from asr_assets.core.tables import ACTIVITIES_SCHEMA, LETTER_SCORES_SCHEMA
from asr_assets.definitions import (
    EnvironmentConfigError,
    build_definitions,
    executor_for,
)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dg.AssetSpec]:
    root = tmp_path_factory.mktemp("store")
    definitions = build_definitions({"ASR_DATA_ROOT": str(root)})
    graph = definitions.resolve_asset_graph()
    return {key.path[-1]: graph.get(key).to_asset_spec() for key in graph.get_all_asset_keys()}


def test_column_schemas_come_from_the_table_contracts(specs: dict[str, dg.AssetSpec]) -> None:
    for asset, contract in (
        ("letter_scores", LETTER_SCORES_SCHEMA),
        ("activities", ACTIVITIES_SCHEMA),
    ):
        schema = specs[asset].metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == contract.names
    status = next(
        c
        for c in specs["letter_scores"].metadata["dagster/column_schema"].columns
        if c.name == "status"
    )
    assert status.type == "string" and "substituted" in (status.description or "")


def test_owners_pii_tags_code_references_and_freshness(specs: dict[str, dg.AssetSpec]) -> None:
    for name, spec in specs.items():
        assert spec.owners == ["team:asr-platform"], name
        assert "pii" in spec.tags, name
        assert "dagster/code_references" in spec.metadata, name
    assert specs["activities"].tags["pii"] == "student_id"
    assert specs["phrase_audio"].tags["pii"] == "voice"
    assert specs["letter_scores"].freshness_policy is not None


def test_runs_are_tagged_with_environment_and_model(tmp_path: Path) -> None:
    job = build_definitions({"ASR_DATA_ROOT": str(tmp_path)}).resolve_job_def("score_letters")
    assert job.tags["asr/env"] == "local"
    assert job.tags["asr/model"] == "demo-letters"
    assert len(job.tags["asr/model_sha256"]) == 12


def test_executor_is_in_process_unless_asked(tmp_path: Path) -> None:
    job = build_definitions({"ASR_DATA_ROOT": str(tmp_path)}).resolve_job_def("score_letters")
    assert job.executor_def.name == "in_process"
    assert executor_for({"ASR_EXECUTOR": "multiprocess"}).name == "multiprocess"
    assert executor_for({"ASR_EXECUTOR": "k8s"}).name == "k8s"
    with pytest.raises(EnvironmentConfigError, match="ASR_EXECUTOR"):
        executor_for({"ASR_EXECUTOR": "threads"})
