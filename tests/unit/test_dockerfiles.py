"""deploy/docker: the image is built the hardened way, and the rules really catch a bad change."""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tools.deploy.healthcheck import check, check_code_server, check_http
from tools.deploy.policy import dockerfile_violations, image_is_pinned

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("Dockerfile*"))
DOCKERFILE = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_our_dockerfiles_follow_the_rules(path: Path) -> None:
    assert dockerfile_violations(path.read_text()) == []


def test_base_images_named_through_build_args_are_resolved() -> None:
    text = (
        'ARG BASE=python:latest\nFROM ${BASE} AS a\nFROM a\nUSER 1000\nHEALTHCHECK CMD ["true"]\n'
    )
    assert any("'python:latest' is not pinned" in v for v in dockerfile_violations(text))


def test_runtime_is_distroless_non_root_and_exec_form() -> None:
    assert "gcr.io/distroless/python3-debian12@sha256:" in DOCKERFILE
    assert "USER 65532:65532" in DOCKERFILE
    assert 'ENTRYPOINT ["python3", "-m"]' in DOCKERFILE


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("USER 65532:65532", "USER root"), "runs as 'root'"),
        (("USER 65532:65532\n", ""), "sets no USER"),
        (
            ("FROM python:3.11.14-slim-bookworm AS deps", "FROM python:latest AS deps"),
            "'python:latest' is not pinned",
        ),
        (("HEALTHCHECK --interval", "LABEL x=y\n# --interval"), "no HEALTHCHECK"),
        (("EXPOSE 4000 8080", "RUN rm -rf /tmp/x\nEXPOSE 4000 8080"), "has RUN"),
        (('CMD ["dagster", "code-server"', 'CMD dagster code-server #["x"'), "shell form"),
        (
            (
                "COPY requirements.lock pyproject.toml ./",
                "COPY asr_assets/ asr_assets/\nCOPY requirements.lock pyproject.toml ./",
            ),
            "source is copied before",
        ),
    ],
    ids=[
        "root",
        "no-user",
        "unpinned",
        "no-healthcheck",
        "run-in-final",
        "shell-cmd",
        "source-first",
    ],
)
def test_a_broken_dockerfile_is_rejected(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in DOCKERFILE
    violations = dockerfile_violations(DOCKERFILE.replace(old, new, 1))
    assert any(expected in v for v in violations), violations


def test_single_stage_and_remote_add_are_rejected() -> None:
    violations = dockerfile_violations(
        "FROM python:3.11.14-slim\nADD https://example.com/x.tgz /x\nUSER 1000\n"
        'HEALTHCHECK CMD ["true"]\n'
    )
    assert "not a multi-stage build" in violations
    assert any("remote URL" in v for v in violations)


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("nvcr.io/nvidia/tritonserver:24.10-py3", True),
        ("python:3.11.14-slim-bookworm", True),
        ("registry.local:5000/app@sha256:" + "a" * 64, True),
        ("python:latest", False),
        ("python", False),
        ("registry.local:5000/app", False),
        ("ghcr.io/x/app:main", False),
    ],
)
def test_image_pinning(image: str, pinned: bool) -> None:
    assert image_is_pinned(image) is pinned


def test_dockerignore_keeps_the_context_to_what_the_image_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("**")] == "**"  # deny by default; .venv, .git, data never sent
    assert "!requirements.lock" in lines and "!asr_assets/**" in lines


@pytest.fixture
def http_server() -> Iterator[tuple[int, dict]]:
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_api_role(http_server: tuple[int, dict]) -> None:
    port, state = http_server
    assert check({"ASR_ROLE": "api", "ASR_API_PORT": str(port)}) is None
    state["status"] = 503
    assert "answered 503" in (check_http(port, "/healthz") or "")
    assert "unreachable" in (check_http(_closed_port(), "/healthz", timeout_s=1) or "")


def test_healthcheck_other_roles() -> None:
    assert check({"ASR_ROLE": "job"}) is None
    assert "unknown ASR_ROLE" in (check({"ASR_ROLE": "bogus"}) or "")
    assert check_code_server(_closed_port()) is not None
