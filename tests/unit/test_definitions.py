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
    "slo_report": [],  # operations: reads the run history, not a partition
}
UNPARTITIONED = {"slo_report"}


def test_graph_snapshot() -> None:
    definitions = build_definitions({})
    graph = definitions.resolve_asset_graph()
    actual = {
        key.path[-1]: sorted(parent.path[-1] for parent in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert actual == EXPECTED_GRAPH
    for key in graph.get_all_asset_keys():
        if key.path[-1] in UNPARTITIONED:
            continue
        partitions = graph.get(key).partitions_def
        assert partitions is not None and partitions.get_cron_schedule() == "0 0 * * *"
        assert partitions.timezone == "UTC"


def test_resources_and_jobs_snapshot() -> None:
    definitions = build_definitions({})
    assert sorted(definitions.resources) == [
        "catalog",
        "data_quality",
        "inference",
        "publisher",
        "store",
    ]
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


AWS_MINIMAL = {
    "ASR_ENV": "aws",
    "ASR_S3_BUCKET": "bucket",
    "ASR_ATHENA_DATABASE": "asr",
    "ASR_ATHENA_OUTPUT_LOCATION": "s3://results/q/",
    "ASR_TRITON_URL": "triton.asr.svc:8001",
    "ASR_TRITON_MODEL": "demo-letters",
    "ASR_APPSYNC_URL": "https://example.appsync-api.eu-west-1.amazonaws.com/graphql",
}


def test_aws_environment_uses_triton_and_appsync() -> None:
    from asr_assets.resources.inference import TritonInferenceResource
    from asr_assets.resources.publisher import AppSyncPublisher

    resources = build_definitions(AWS_MINIMAL).resources
    assert sorted(resources) == ["catalog", "data_quality", "inference", "publisher", "store"]
    assert isinstance(resources["inference"], TritonInferenceResource)
    assert resources["inference"].fallback_enabled is True
    assert isinstance(resources["publisher"], AppSyncPublisher)


def test_aws_environment_names_what_is_missing() -> None:
    from asr_assets.definitions import EnvironmentConfigError

    without_triton = {k: v for k, v in AWS_MINIMAL.items() if k != "ASR_TRITON_URL"}
    with pytest.raises(EnvironmentConfigError, match="ASR_TRITON_URL"):
        build_definitions(without_triton)
    # ...unless inference is local by choice.
    build_definitions({**without_triton, "ASR_INFERENCE": "local"})
    with pytest.raises(EnvironmentConfigError, match="ASR_TRITON_FALLBACK"):
        build_definitions({**AWS_MINIMAL, "ASR_TRITON_FALLBACK": "maybe"})


def test_appsync_api_key_stays_an_env_var_reference() -> None:
    import dagster as dg

    environ = {**AWS_MINIMAL, "ASR_APPSYNC_AUTH_MODE": "api_key"}
    publisher = build_definitions(environ).resources["publisher"]
    assert isinstance(publisher.api_key, dg.EnvVar)  # resolved at run time, never in config


@pytest.mark.parametrize(
    ("environ", "int8"),
    [({}, True), ({"ASR_ONNX_INT8": "false"}, False), ({"ASR_ONNX_INT8": "1"}, True)],
)
def test_the_local_engine_is_int8_onnx_unless_told_otherwise(
    environ: dict[str, str], int8: bool
) -> None:
    """The default chosen by measurement (README, Performance): int8 ONNX Runtime."""
    inference = build_definitions(environ).resources["inference"]
    assert inference.backend == "onnx"  # type: ignore[attr-defined]
    assert inference.quantize_int8 is int8  # type: ignore[attr-defined]
