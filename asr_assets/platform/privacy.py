"""`asr erase` and `asr retention`: the privacy commands, and the audit hook for readers.

`main(argv)` is what the `asr` CLI dispatches to. The resources are the code location's own
(`ASR_ENV` picks local or aws), so an erasure reaches the same store and publisher runs write to.
The keyed hash that receipts and audit records use comes from ASR_PRIVACY_HASH_KEY (a secret:
in production from the secret store, never from config files).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from asr_assets.assets.privacy import load_policy
from asr_assets.core.privacy import (
    AuditAction,
    PrivacyConfigError,
    SubjectKind,
    subject_hash,
)
from asr_assets.resources.object_store import ObjectStore
from asr_assets.resources.privacy import (
    Eraser,
    audit_event,
    record_access,
    sweep_retention,
)

HASH_KEY_VARIABLE = "ASR_PRIVACY_HASH_KEY"


def hash_key(environ: Mapping[str, str]) -> bytes:
    raw = environ.get(HASH_KEY_VARIABLE, "").strip()
    if not raw:
        raise PrivacyConfigError(
            f"{HASH_KEY_VARIABLE} is not set: receipts and audit records need the keyed hash"
        )
    key = raw.encode()
    subject_hash(key, SubjectKind.STUDENT, "probe")  # validates the length
    return key


def actor(environ: Mapping[str, str]) -> str:
    """Who is acting: ASR_ACTOR (set by the API or the job launcher), else the OS user."""
    return environ.get("ASR_ACTOR", "").strip() or f"user:{getpass.getuser()}"


def audit_read(
    store: ObjectStore,
    *,
    action: AuditAction,
    resource: str,
    purpose: str,
    channel: str,
    who: str,
    subject_hashes: Iterable[str] = (),
) -> str:
    """The hook every reader of audio or results calls (the CLI here, the jobs API there)."""
    return record_access(
        store,
        audit_event(
            actor=who,
            action=action,
            resource=resource,
            purpose=purpose,
            channel=channel,
            subject_hashes=subject_hashes,
        ),
    )


def _emit(payload: object) -> None:
    """The command's answer, as JSON on stdout (for people and for scripts)."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def _resources() -> dict[str, object]:
    from asr_assets.definitions import defs

    return dict(defs().resources)


def erase(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    key = hash_key(environ)
    resources = _resources()
    store = resources["store"]
    assert isinstance(store, ObjectStore)
    kind = SubjectKind.STUDENT if args.student_id else SubjectKind.ACTIVITY
    value = args.student_id or args.activity_id
    who = actor(environ)
    receipt = Eraser(store, resources.get("publisher"), key).erase(  # type: ignore[arg-type]
        kind, value, requested_by=who, reason=args.reason
    )
    record_access(
        store,
        audit_event(
            actor=who,
            action=AuditAction.ERASE,
            resource=f"{kind.value}-erasure",
            purpose=args.reason,
            channel="cli",
            subject_hashes=[receipt.subject_hash],
        ),
    )
    _emit(receipt.model_dump(mode="json"))
    return 0


def retention(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store = _resources()["store"]
    assert isinstance(store, ObjectStore)
    report = sweep_retention(
        store,
        load_policy(args.policy or environ.get("ASR_RETENTION_POLICY") or ""),
        now=datetime.now(UTC),
        dry_run=args.dry_run,
    )
    _emit({"dry_run": report.dry_run, "objects": report.counts, "bytes": report.bytes_by_class})
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="asr", description=__doc__)
    commands = parser.add_subparsers(dest="privacy_command", required=True)
    erase_cmd = commands.add_parser("erase", help="erase a student's or an activity's data")
    target = erase_cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--student-id")
    target.add_argument("--activity-id")
    erase_cmd.add_argument("--reason", default="erasure request", help="why (audit log)")
    retention_cmd = commands.add_parser("retention", help="delete data past its retention")
    retention_cmd.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    retention_cmd.add_argument("--policy", help="retention YAML (default: built-in policy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.privacy_command == "erase":
            return erase(args, os.environ)
        return retention(args, os.environ)
    except PrivacyConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
