"""Publish and fetch a Triton model repository with an integrity manifest.

`manifest DIR` writes `SHA256SUMS` at the repository root (sha256sum format, one line per file,
paths relative to the root) and prints the repository digest: the sha256 of that file. The
digest goes into the Triton Deployment (deploy/k8s), so the cluster pins exactly one repository.

`fetch --source s3://bucket/prefix --dest DIR --sha256 DIGEST` is Triton's init container: it
downloads `SHA256SUMS`, refuses it unless its sha256 is DIGEST, downloads every listed file into
a staging directory next to DEST, refuses any file whose hash differs, any object under the
prefix that the manifest does not list (Triton would load an extra model directory) and any
unsafe path, and only then renames the staging directory to DEST. A refused fetch exits 2 and
leaves DEST absent, so Triton never starts on an unverified repository.
"""

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "SHA256SUMS"
EXIT_REFUSED = 2


class RepositoryIntegrityError(RuntimeError):
    """The fetched repository is not the one the deployment pinned."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path) -> str:
    """Write `SHA256SUMS` over every file under `root`; return the repository digest."""
    lines = [
        f"{_sha256_file(path)}  {path.relative_to(root).as_posix()}"
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != MANIFEST
    ]
    text = "\n".join(lines) + "\n"
    (root / MANIFEST).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def _safe_relative(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise RepositoryIntegrityError(f"unsafe path in {MANIFEST}: {name!r}")
    return path.as_posix()


def parse_manifest(text: str) -> dict[str, str]:
    listed: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise RepositoryIntegrityError(f"malformed line in {MANIFEST}: {line!r}")
        listed[_safe_relative(name.lstrip("*"))] = digest
    if not listed:
        raise RepositoryIntegrityError(f"{MANIFEST} lists no files")
    return listed


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def _list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def fetch(client: Any, source: str, dest: Path, expected_sha256: str) -> dict[str, str]:
    """Download and verify the repository at `source` into `dest`; return what was listed."""
    bucket, prefix = split_s3_uri(source)
    key_prefix = f"{prefix}/" if prefix else ""
    if dest.exists():
        raise RepositoryIntegrityError(f"{dest} already exists; refusing to mix repositories")
    manifest_bytes = client.get_object(Bucket=bucket, Key=key_prefix + MANIFEST)["Body"].read()
    actual = hashlib.sha256(manifest_bytes).hexdigest()
    if actual != expected_sha256.lower():
        raise RepositoryIntegrityError(
            f"{MANIFEST} digest {actual} is not the pinned {expected_sha256.lower()}"
        )
    listed = parse_manifest(manifest_bytes.decode())
    present = {key[len(key_prefix) :] for key in _list_keys(client, bucket, key_prefix)}
    unlisted = sorted(name for name in present - {MANIFEST} - set(listed) if name)
    if unlisted:
        raise RepositoryIntegrityError(f"objects not covered by {MANIFEST}: {unlisted}")
    staging = dest.with_name(f".{dest.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, digest in listed.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key_prefix + name, str(target))
            if _sha256_file(target) != digest:
                raise RepositoryIntegrityError(f"checksum mismatch for {name}")
        (staging / MANIFEST).write_bytes(manifest_bytes)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy.model_repository")
    commands = parser.add_subparsers(dest="command", required=True)
    manifest = commands.add_parser("manifest", help="write SHA256SUMS, print the digest")
    manifest.add_argument("root", type=Path)
    fetcher = commands.add_parser("fetch", help="download and verify a repository from S3")
    fetcher.add_argument("--source", required=True, help="s3://bucket/prefix")
    fetcher.add_argument("--dest", required=True, type=Path)
    fetcher.add_argument("--sha256", required=True, help="pinned digest of SHA256SUMS")
    args = parser.parse_args(argv)
    if args.command == "manifest":
        sys.stdout.write(write_manifest(args.root) + "\n")
        return 0
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    try:
        listed = fetch(client, args.source, args.dest, args.sha256)
    except RepositoryIntegrityError as exc:
        sys.stderr.write(f"refused: {exc}\n")
        return EXIT_REFUSED
    sys.stdout.write(f"verified {len(listed)} files from {args.source} into {args.dest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
