"""Triton's init step: a repository is fetched from S3 (a real moto server) only when it is
exactly the pinned one."""

import hashlib
from pathlib import Path

import pytest

from tests.support.moto_server import aws_env, moto, s3_client  # noqa: F401 (fixtures)
from tools.deploy.model_repository import (
    EXIT_REFUSED,
    MANIFEST,
    RepositoryIntegrityError,
    fetch,
    main,
    parse_manifest,
    write_manifest,
)

BUCKET = "asr-models-test"


def _repository(root: Path) -> str:
    (root / "letters" / "1").mkdir(parents=True)
    (root / "letters" / "config.pbtxt").write_text('name: "letters"\nbackend: "onnxruntime"\n')
    (root / "letters" / "1" / "model.onnx").write_bytes(b"\x08\x07onnx-graph" * 100)
    return write_manifest(root)


def _upload(client, root: Path, prefix: str = "triton") -> None:
    client.create_bucket(Bucket=BUCKET)
    for path in root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(root).as_posix()}")


def test_manifest_covers_every_file_and_digest_is_its_hash(tmp_path: Path) -> None:
    digest = _repository(tmp_path)
    text = (tmp_path / MANIFEST).read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == digest
    assert set(parse_manifest(text)) == {"letters/config.pbtxt", "letters/1/model.onnx"}


@pytest.mark.parametrize("line", ["../../etc/passwd", "/abs/path", "a/../../b"])
def test_unsafe_paths_are_refused(line: str) -> None:
    with pytest.raises(RepositoryIntegrityError, match="unsafe path"):
        parse_manifest(f"{'0' * 64}  {line}\n")


@pytest.mark.integration
def test_fetch_verifies_and_lands_atomically(aws_env, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "repo"
    digest = _repository(source)
    client = s3_client(aws_env.endpoint)
    _upload(client, source)
    dest = tmp_path / "models" / "repository"
    dest.parent.mkdir()
    listed = fetch(client, f"s3://{BUCKET}/triton", dest, digest)
    assert len(listed) == 2
    assert (dest / "letters" / "1" / "model.onnx").read_bytes() == (
        source / "letters" / "1" / "model.onnx"
    ).read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["repository"]


@pytest.mark.integration
def test_wrong_pin_tampered_file_and_extra_model_are_refused(
    aws_env,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = tmp_path / "repo"
    digest = _repository(source)
    client = s3_client(aws_env.endpoint)
    _upload(client, source)
    models = tmp_path / "models"
    models.mkdir()
    uri = f"s3://{BUCKET}/triton"

    with pytest.raises(RepositoryIntegrityError, match="is not the pinned"):
        fetch(client, uri, models / "a", "f" * 64)

    client.put_object(Bucket=BUCKET, Key="triton/letters/1/model.onnx", Body=b"swapped weights")
    with pytest.raises(
        RepositoryIntegrityError, match=r"checksum mismatch for letters/1/model\.onnx"
    ):
        fetch(client, uri, models / "b", digest)

    _upload_fresh = source / "letters" / "1" / "model.onnx"
    client.upload_file(str(_upload_fresh), BUCKET, "triton/letters/1/model.onnx")
    client.put_object(Bucket=BUCKET, Key="triton/evil/config.pbtxt", Body=b'name: "evil"')
    with pytest.raises(RepositoryIntegrityError, match="not covered"):
        fetch(client, uri, models / "c", digest)
    # Nothing half-fetched is left for Triton to load.
    assert list(models.iterdir()) == []


@pytest.mark.integration
def test_cli_exits_refused_on_mismatch(aws_env, tmp_path: Path, capsys) -> None:  # noqa: F811
    source = tmp_path / "repo"
    _repository(source)
    _upload(s3_client(aws_env.endpoint), source)
    code = main(
        [
            "fetch",
            "--source",
            f"s3://{BUCKET}/triton",
            "--dest",
            str(tmp_path / "d"),
            "--sha256",
            "0" * 64,
        ]
    )
    assert code == EXIT_REFUSED
    assert "refused:" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
