"""TLS between the platform and Triton: the gRPC client verifies the server against the CA in
ASR_TRITON_TLS_CA. The server here is a real gRPC server with a real certificate, answering
Triton's own ServerLive RPC (tritonclient's protobufs), on 127.0.0.1 only."""

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tritonclient.grpc import service_pb2

from asr_assets.definitions import _aws_inference
from asr_assets.inference.triton import TritonSettings, _Transport

pytestmark = pytest.mark.integration


def _certificate(subject: str, issuer_key, public_key, issuer: str, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test-ca", ca_key, ca_key.public_key(), "test-ca", ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("triton-asr", ca_key, server_key.public_key(), "test-ca", ca=False)
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(_pem(ca))

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ServerLive": grpc.unary_unary_rpc_method_handler(
                lambda request, context: service_pb2.ServerLiveResponse(live=True),
                request_deserializer=service_pb2.ServerLiveRequest.FromString,
                response_serializer=service_pb2.ServerLiveResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    credentials = grpc.ssl_server_credentials([(key_pem, _pem(server_cert))])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port, ca_path
    finally:
        server.stop(grace=None)


def test_client_verifies_triton_over_tls(tls_server: tuple[int, Path]) -> None:
    port, ca_path = tls_server
    settings = TritonSettings(
        url=f"127.0.0.1:{port}", model_name="m", tls=True, tls_ca_file=str(ca_path)
    )
    assert _Transport(settings, timeout_s=5.0).server_live() is True


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    client = _Transport(TritonSettings(url=f"127.0.0.1:{port}", model_name="m"), timeout_s=2.0)
    with pytest.raises(Exception, match=r"(?i)unavailable|deadline|connect|socket|ssl"):
        client.server_live()


def test_the_aws_environment_passes_the_ca_to_the_resource(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    resource = _aws_inference(
        {
            "ASR_TRITON_URL": "triton-asr.asr-inference.svc:8001",
            "ASR_TRITON_MODEL": "letters",
            "ASR_TRITON_TLS_CA": "/etc/asr/triton-ca/ca.crt",
            "ASR_MODEL_DIR": str(tiny_model_dir),
        }
    )
    # The CA bundle alone turns TLS on: the deploy manifests set only ASR_TRITON_TLS_CA.
    assert resource.tls is True
    assert resource.tls_ca_file == "/etc/asr/triton-ca/ca.crt"
    assert resource._settings().tls_ca_file == "/etc/asr/triton-ca/ca.crt"
