"""A job's tags on the objects it writes, so storage cost can be attributed like compute cost.

On S3 every committed shard file, its `_SUCCESS` record and the job report get S3 object tags:
the job's identity (`asr/job`, `asr/tenant`, `asr/team`, `asr/workload`, `asr/cost-center`,
`asr/priority`) first, then the submitter's own tags, within S3's limit of 10 tags per object.
The local store has no object tags: the same tags are written into each shard's `_SUCCESS`
record (the commit's sidecar) and the job report instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from asr_assets.observability.logging import get_logger
from asr_assets.resources.object_store import (
    ObjectNotFoundError,
    ObjectStore,
    StoreUnavailableError,
)

log = get_logger(__name__)

#: The job identity tags, in the order they are kept when S3's limit is reached.
IDENTITY_TAGS = (
    "asr/job",
    "asr/tenant",
    "asr/team",
    "asr/workload",
    "asr/cost-center",
    "asr/priority",
)
S3_MAX_TAGS = 10
_S3_DISALLOWED = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")


def output_tags(run_tags: Mapping[str, str]) -> dict[str, str]:
    """The run's tags that belong on its output objects: identity first, then the user's."""
    identity = {key: run_tags[key] for key in IDENTITY_TAGS if key in run_tags}
    user = {
        key: value
        for key, value in sorted(run_tags.items())
        if not key.startswith(("asr/", "dagster/", ".dagster"))
    }
    return {**identity, **user}


def s3_tag_set(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """S3's TagSet: allowed characters only, keys up to 128 and values up to 256, at most 10."""
    tag_set = []
    for key, value in tags.items():
        clean_key = _S3_DISALLOWED.sub("_", key)[:128]
        if clean_key:
            tag_set.append({"Key": clean_key, "Value": _S3_DISALLOWED.sub("_", value)[:256]})
    if len(tag_set) > S3_MAX_TAGS:
        log.warning(
            "output object tags over the S3 limit; keeping the first ten",
            dropped=[t["Key"] for t in tag_set[S3_MAX_TAGS:]],
        )
    return tag_set[:S3_MAX_TAGS]


def tag_objects(store: ObjectStore, keys: Iterable[str], tags: Mapping[str, str]) -> int:
    """S3 object tags on each key; the number of objects tagged (0 on a store without tags).

    A refused tagging call (e.g. a role without `s3:PutObjectTagging`) is logged and the output
    stays committed: tags attribute cost, they are not the job's result.
    """
    from asr_assets.resources.s3 import S3ObjectStore

    if not isinstance(store, S3ObjectStore) or not tags:
        return 0
    tagging = {"TagSet": s3_tag_set(tags)}
    tagged = 0
    for key in keys:
        full_key = store._full_key(key)
        try:
            store._call(
                "PutObjectTagging",
                lambda full_key=full_key: store.client().put_object_tagging(
                    Bucket=store.bucket, Key=full_key, Tagging=tagging
                ),
                key,
            )
        except (StoreUnavailableError, ObjectNotFoundError) as error:
            log.warning("output object tagging failed", key=key, error=type(error).__name__)
            continue
        tagged += 1
    return tagged
