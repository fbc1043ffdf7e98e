"""Spans leave the process over OTLP/HTTP to a collector endpoint on 127.0.0.1."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from asr_assets.observability.tracing import configure_tracing, reset_tracing

pytestmark = pytest.mark.integration


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Collector.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:  # keep the test output quiet
        return


def test_spans_are_exported_over_otlp_http(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.received.clear()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    reset_tracing()
    try:
        provider = configure_tracing({"OTEL_TRACES_EXPORTER": "otlp"}, set_global=False)
        assert provider is not None
        with provider.get_tracer("test").start_as_current_span("stage.transcripts") as span:
            span.set_attribute("asr.phrases", 7)
        assert provider.force_flush(10_000)
    finally:
        reset_tracing()
        server.shutdown()
        server.server_close()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(_Collector.received))
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["stage.transcripts"]
    service = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert service["service.name"] == "asr-platform"
