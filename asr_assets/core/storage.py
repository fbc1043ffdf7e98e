"""Where everything lives in the object store, and which keys are safe to use.

One module owns the key layout so local and S3 stores, the sensor and the readers agree on it.
"""

from __future__ import annotations

import re
from datetime import date

MAX_KEY_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

CATALOG_PREFIX = "catalog/activities"
LEDGER_PREFIX = "ledger"
RESULT_TABLES = ("letter_scores", "phrase_results", "errors")
SUCCESS_FILE = "_SUCCESS"


class UnsafeKeyError(ValueError):
    """A key that could escape the store root or confuse a filesystem."""


def validate_key(key: str) -> str:
    """Reject keys before they reach a filesystem path or an S3 request.

    Keys come from the catalog, i.e. from other teams' data: `..` segments, absolute paths,
    backslashes, control characters and unbounded lengths are refused outright.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise UnsafeKeyError(f"key length {len(key)} outside 1..{MAX_KEY_LENGTH}")
    if _CONTROL.search(key):
        raise UnsafeKeyError("key contains control characters")
    if key.startswith("/") or "\\" in key or re.match(r"^[A-Za-z]:", key):
        raise UnsafeKeyError("key must be relative and use '/' separators")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeKeyError("key has empty, '.' or '..' segments")
    return key


# Where recordings may be read from. `{tenant}` stands for the row's tenant where the layout
# gives each tenant its own prefix (e.g. `tenants/{tenant}/audio/`). Results, stage tables, the
# catalog and caches are never audio: a row pointing there is refused, not decoded.
DEFAULT_AUDIO_PREFIXES = ("audio/",)


def confine_audio_key(key: str, tenant_id: str, prefixes: list[str] | tuple[str, ...]) -> str:
    """Refuse an audio key outside the configured audio prefixes (per tenant where templated)."""
    for template in prefixes:
        templated = "{tenant}" in template
        if templated and (not tenant_id or "/" in tenant_id or tenant_id in ("..", ".")):
            continue  # a tenant id that is no single key segment owns no prefix
        prefix = template.replace("{tenant}", tenant_id)
        if key.startswith(prefix):
            return key
    raise UnsafeKeyError(f"audio key is outside the audio prefixes {list(prefixes)}")


def partition_date(partition_key: str) -> date:
    return date.fromisoformat(partition_key)


def catalog_partition_prefix(partition_key: str) -> str:
    return f"{CATALOG_PREFIX}/activity_date={partition_date(partition_key).isoformat()}"


def stage_table_key(stage: str, partition_key: str, name: str = "manifest") -> str:
    """Working tables that pass between stages, one per stage and partition (overwritten)."""
    return f"stages/{stage}/activity_date={partition_key}/{name}.parquet"


def clip_key(clip_sha256: str) -> str:
    return f"cache/audio/{clip_sha256[:2]}/{clip_sha256}.pcm"


def emissions_key(model_sha256: str, clip_sha256: str, numerics: str = "fp32") -> str:
    """Emissions are keyed by model, numerics and audio content: rerunning the same model reuses
    them, but int8-quantized emissions never stand in for float ones (or the reverse)."""
    model = model_sha256[:16] if numerics == "fp32" else f"{model_sha256[:16]}-{numerics}"
    return f"cache/emissions/model={model}/{clip_sha256[:2]}/{clip_sha256}.f16"


def result_prefix(table: str, partition_key: str) -> str:
    if table not in RESULT_TABLES:
        raise ValueError(f"unknown result table {table!r}")
    return f"results/{table}/activity_date={partition_key}"


STAGING_ROOT = "results/_staging"


def staging_prefix(run_id: str, partition_key: str) -> str:
    return f"{STAGING_ROOT}/{run_id}/activity_date={partition_key}"


def partition_manifest_key(partition_key: str) -> str:
    """The one object that commits a result partition: it names all three tables' files.

    It lives where the letter_scores table's `_SUCCESS` always has (the asset's own partition),
    and no other table has a `_SUCCESS` of its own any more: a reader of any table goes through
    this manifest, so there is nothing per table that could switch separately.
    """
    return f"{result_prefix('letter_scores', partition_key)}/{SUCCESS_FILE}"


def run_token(run_id: str) -> str:
    """A run id as it appears in key names: safe characters only, bounded length."""
    return "".join(c for c in run_id if c.isalnum() or c in "-_")[:64] or "run"


def ledger_prefix(partition_key: str) -> str:
    """The processing ledger of a partition: one file per run that committed it (history)."""
    return f"{LEDGER_PREFIX}/activity_date={partition_date(partition_key).isoformat()}"


def ledger_key(partition_key: str, run_id: str) -> str:
    """Deterministic per (partition, run): a retried step of the same run rewrites its own file."""
    return f"{ledger_prefix(partition_key)}/run-{run_token(run_id)}.parquet"
