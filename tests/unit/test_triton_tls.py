"""Triton TLS (client side): tritonclient gets its TLS options, and an HTTPS endpoint with a
private CA is reached only when that CA is configured."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from asr_assets.inference.triton import TritonProtocol, TritonSettings, _Transport


@pytest.fixture(scope="module")
def tls_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 answering Triton's liveness route, with a self-signed cert."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip

    class Live(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v2/health/live" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Live)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def _settings(url: str, **tls: object) -> TritonSettings:
    return TritonSettings(url=url, model_name="m", protocol=TritonProtocol.HTTP, **tls)  # type: ignore[arg-type]


def test_https_triton_is_reached_with_the_configured_ca(tls_endpoint: tuple[str, Path]) -> None:
    url, ca = tls_endpoint
    transport = _Transport(_settings(url, tls=True, tls_ca_file=str(ca)), timeout_s=5.0)
    assert transport.server_live() is True


def test_without_the_ca_or_without_tls_the_endpoint_is_refused(
    tls_endpoint: tuple[str, Path],
) -> None:
    url, _ = tls_endpoint
    with pytest.raises(Exception):  # noqa: B017 - certificate verification failure
        _Transport(_settings(url, tls=True), timeout_s=5.0).server_live()
    with pytest.raises(Exception):  # noqa: B017 - plain HTTP spoken to a TLS port
        _Transport(_settings(url), timeout_s=5.0).server_live()


def test_grpc_tls_options_map_to_tritonclient_arguments() -> None:
    settings = TritonSettings(
        url="triton:8001",
        model_name="m",
        tls=True,
        tls_ca_file="/ca.pem",
        tls_client_cert_file="/c.pem",
        tls_client_key_file="/k.pem",
    )
    assert settings.tls_client_kwargs() == {
        "ssl": True,
        "root_certificates": "/ca.pem",
        "private_key": "/k.pem",
        "certificate_chain": "/c.pem",
    }
    assert TritonSettings(url="t:8001", model_name="m").tls_client_kwargs() == {}
    # tritonclient accepts them (a gRPC channel connects lazily).
    _Transport(settings.__class__(url="127.0.0.1:1", model_name="m", tls=True), timeout_s=1.0)


def test_the_resource_and_the_aws_environment_pass_tls_through(tmp_path: Path) -> None:
    from asr_assets.definitions import build_definitions

    definitions = build_definitions(
        {
            "ASR_ENV": "aws",
            "ASR_S3_BUCKET": "b",
            "ASR_ATHENA_DATABASE": "d",
            "ASR_ATHENA_OUTPUT_LOCATION": "s3://b/athena/",
            "ASR_APPSYNC_URL": "https://x.appsync-api.eu-west-1.amazonaws.com/graphql",
            "ASR_TRITON_URL": "triton:8001",
            "ASR_TRITON_MODEL": "letters",
            "ASR_TRITON_TLS": "true",
            "ASR_TRITON_TLS_CA": "/etc/ca.pem",
            "ASR_S3_KMS_KEY_ID": "alias/asr-data",
            "ASR_S3_CACHE_DIR": str(tmp_path),
        }
    )
    settings = definitions.resources["inference"]._settings()
    assert settings.tls is True and settings.tls_ca_file == "/etc/ca.pem"
    store = definitions.resources["store"]
    assert store.encryption_arguments() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/asr-data",
    }
