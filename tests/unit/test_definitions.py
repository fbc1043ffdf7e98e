"""A snapshot of the graph: an accidental change to assets, deps, partitions or jobs shows here."""

import pytest

from asr_assets.definitions import UnknownEnvironmentError, build_definitions, defs

EXPECTED_GRAPH = {
    "activities": [],
    "phrase_audio": ["activities"],
    "transcripts": ["phrase_audio"],
    "alignments": ["transcripts"],
    "letter_scores": ["alignments"],
    "published_scores": ["letter_scores"],
}


def test_graph_snapshot() -> None:
    definitions = build_definitions({})
    graph = definitions.resolve_asset_graph()
    actual = {
        key.path[-1]: sorted(parent.path[-1] for parent in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert actual == EXPECTED_GRAPH
    for key in graph.get_all_asset_keys():
        partitions = graph.get(key).partitions_def
        assert partitions is not None and partitions.get_cron_schedule() == "0 0 * * *"
        assert partitions.timezone == "UTC"


def test_resources_and_jobs_snapshot() -> None:
    definitions = build_definitions({})
    assert sorted(definitions.resources) == ["catalog", "inference", "publisher", "store"]
    assert definitions.resolve_job_def("score_letters") is not None


def test_unknown_environment_is_an_error() -> None:
    with pytest.raises(UnknownEnvironmentError, match="staging"):
        build_definitions({"ASR_ENV": "staging"})


def test_lazy_entry_point_loads() -> None:
    assert defs().resolve_asset_graph().get_all_asset_keys()


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import asr_assets.definitions, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
