"""The code location's single entry point; `ASR_ENV` picks the resources.

The environment is read when Dagster loads the definitions (the `@dg.definitions` function), not
when the module is imported, and an unknown environment is an error rather than a silent
fallback to some shared default.
"""

import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path

import dagster as dg

from asr_assets.assets.activities import activities
from asr_assets.assets.alignments import alignments
from asr_assets.assets.letter_scores import letter_scores
from asr_assets.assets.partitions import daily_partitions
from asr_assets.assets.phrase_audio import phrase_audio
from asr_assets.assets.published_scores import published_scores
from asr_assets.assets.transcripts import transcripts
from asr_assets.checks import ALL_CHECKS
from asr_assets.resources.catalog import DuckDBActivityCatalog
from asr_assets.resources.inference import LocalInferenceResource
from asr_assets.resources.object_store import LocalObjectStore
from asr_assets.resources.publisher import LocalJsonlPublisher
from asr_assets.sensors import ALL_SENSORS

DEFAULT_DATA_ROOT = ".asr-data"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo-letters"

ALL_ASSETS = [activities, phrase_audio, transcripts, alignments, letter_scores, published_scores]

score_letters_job = dg.define_asset_job(
    "score_letters",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    partitions_def=daily_partitions,
    description="Score one day of letter-reading activities end to end and publish the results.",
)


class AsrEnvironment(StrEnum):
    LOCAL = "local"


class UnknownEnvironmentError(ValueError):
    """ASR_ENV names an environment this code location does not define."""


def environment_from(environ: Mapping[str, str]) -> AsrEnvironment:
    value = environ.get("ASR_ENV", AsrEnvironment.LOCAL.value).strip().lower()
    try:
        return AsrEnvironment(value)
    except ValueError:
        known = ", ".join(e.value for e in AsrEnvironment)
        raise UnknownEnvironmentError(f"ASR_ENV={value!r} is not one of: {known}") from None


def local_resources(environ: Mapping[str, str]) -> dict[str, dg.ConfigurableResource]:
    """Embedded defaults: a directory store, DuckDB, torch on the CPU, a JSONL sink."""
    root = str(Path(environ.get("ASR_DATA_ROOT", DEFAULT_DATA_ROOT)).resolve())
    model_dir = environ.get("ASR_MODEL_DIR", str(DEFAULT_MODEL_DIR))
    threads = environ.get("ASR_TORCH_THREADS")
    store = LocalObjectStore(root=root)
    return {
        "store": store,
        "catalog": DuckDBActivityCatalog(root=root),
        "inference": LocalInferenceResource(
            model_dir=str(Path(model_dir).resolve()),
            num_threads=int(threads) if threads else None,
        ),
        "publisher": LocalJsonlPublisher(store=store),
    }


RESOURCE_FACTORIES: dict[
    AsrEnvironment, Callable[[Mapping[str, str]], dict[str, dg.ConfigurableResource]]
] = {
    AsrEnvironment.LOCAL: local_resources,
}


def build_definitions(environ: Mapping[str, str]) -> dg.Definitions:
    environment = environment_from(environ)
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[score_letters_job],
        sensors=ALL_SENSORS,
        resources=RESOURCE_FACTORIES[environment](environ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(os.environ)
