"""A fault-injecting HTTP proxy of ours, for the fault suite: 127.0.0.1 in front of a test server.

Clients (boto3 for S3 and Athena, httpx for AppSync) are pointed at the proxy instead of the
server; the proxy forwards each request and, for a configured share of them, answers with a fault
instead: HTTP 500, HTTP 503, an S3 `SlowDown` (a throttling answer in the dialect of whatever was
called), a reset connection, or added latency before forwarding.

Why ours rather than a generic chaos tool: it must be deterministic and bounded so a test can
demand "every phrase accounted for" and get the same run every time.
- Deterministic: whether a request is faulted is a hash of (seed, request identity, how many times
  that identity was seen), not a draw from a shared random stream, so the decisions do not depend
  on how threads interleave. The identity is method, path and query, the `X-Amz-Target` and, for
  POSTs, the body, with run ids, query ids and idempotency keys masked (they differ per run).
- Independent by default: every attempt of every request is faulted with the plan's probability,
  whatever happened to its earlier attempts, as real faults are; a request can fail many times
  in a row, and the retry policies must be sized for that. `max_consecutive` optionally caps
  the streak per identity (for tests that need a request to pass eventually), `max_faults` caps
  faults overall, and the server stops by itself after `lifetime_s` even if a test forgets it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Run ids, query ids, request tokens and idempotency keys differ between runs: masked, so the
# same logical request gets the same fault decisions every run.
_VOLATILE = re.compile(
    rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-f]{32,64}"
)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    }
)


class FaultKind(StrEnum):
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    SLOW_DOWN = "slow_down"
    RESET = "connection_reset"
    LATENCY = "latency"


@dataclass(frozen=True)
class FaultPlan:
    """Which share of requests gets which fault; the shares add up to the total fault rate."""

    rates: Mapping[FaultKind, float]
    seed: int = 7
    latency_s: float = 0.05
    max_consecutive: int | None = None  # None: independent faults, no streak cap
    max_faults: int = 10_000
    lifetime_s: float = 300.0

    def __post_init__(self) -> None:
        if sum(self.rates.values()) > 1.0 or any(r < 0 for r in self.rates.values()):
            raise ValueError("fault rates must be non-negative and add up to at most 1")

    @classmethod
    def single(cls, kind: FaultKind, rate: float, **options: float) -> FaultPlan:
        return cls(rates={kind: rate}, **options)  # type: ignore[arg-type]

    @classmethod
    def mixed(cls, rate: float, **options: float) -> FaultPlan:
        kinds = list(FaultKind)
        return cls(rates={kind: rate / len(kinds) for kind in kinds}, **options)  # type: ignore[arg-type]


@dataclass
class ProxyStats:
    requests: int = 0
    forwarded: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def faults(self) -> int:
        """Requests that did not get the server's answer (latency is not a failure)."""
        return sum(n for kind, n in self.injected.items() if kind != FaultKind.LATENCY)


class _Decider:
    """The deterministic, bounded fault schedule."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._seen: Counter[str] = Counter()
        self._consecutive: Counter[str] = Counter()
        self._faults = 0
        self._lock = threading.Lock()
        self._cumulative: list[tuple[float, FaultKind]] = []
        total = 0.0
        for kind, rate in sorted(plan.rates.items()):
            total += rate
            self._cumulative.append((total, kind))

    def decide(self, identity: str) -> FaultKind | None:
        with self._lock:
            occurrence = self._seen[identity]
            self._seen[identity] += 1
            digest = hashlib.sha256(f"{self.plan.seed}|{identity}|{occurrence}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
            kind = next((k for bound, k in self._cumulative if draw < bound), None)
            failing = kind is not None and kind is not FaultKind.LATENCY
            capped = self.plan.max_consecutive is not None and (
                self._consecutive[identity] >= self.plan.max_consecutive
            )
            if failing and (capped or self._faults >= self.plan.max_faults):
                kind = None
            if kind is not None and kind is not FaultKind.LATENCY:
                self._consecutive[identity] += 1
                self._faults += 1
            else:
                self._consecutive[identity] = 0
            return kind


def _identity(method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
    """Method, path and query, API target and, for POSTs (Athena's JSON API, GraphQL), the body:
    each logical request has its own identity, and its retries share it."""
    target = headers.get("x-amz-target", "")
    masked_path = _VOLATILE.sub(b"<id>", path.encode()).decode()
    digest = ""
    if method == "POST":
        digest = hashlib.sha256(_VOLATILE.sub(b"<id>", body)).hexdigest()[:16]
    return f"{method} {masked_path} {target} {digest}"


def _fault_response(
    kind: FaultKind, path: str, headers: Mapping[str, str]
) -> tuple[int, bytes, str]:
    """(status, body, content type) in the dialect of the API that was called."""
    if headers.get("x-amz-target"):  # AWS JSON protocol (Athena)
        code, status = {
            FaultKind.HTTP_500: ("InternalServerException", 500),
            FaultKind.HTTP_503: ("ServiceUnavailableException", 503),
            FaultKind.SLOW_DOWN: ("ThrottlingException", 400),
        }[kind]
        body = json.dumps({"__type": code, "Message": f"injected {kind.value}"}).encode()
        return status, body, "application/x-amz-json-1.1"
    if path.rstrip("/").endswith("/graphql"):  # AppSync
        status, error_type = {
            FaultKind.HTTP_500: (500, "InternalFailure"),
            FaultKind.HTTP_503: (503, "ServiceUnavailableException"),
            FaultKind.SLOW_DOWN: (429, "TooManyRequestsException"),
        }[kind]
        body = json.dumps({"errors": [{"errorType": error_type, "message": "injected"}]}).encode()
        return status, body, "application/json"
    code, status = {  # S3 REST-XML
        FaultKind.HTTP_500: ("InternalError", 500),
        FaultKind.HTTP_503: ("ServiceUnavailable", 503),
        FaultKind.SLOW_DOWN: ("SlowDown", 503),
    }[kind]
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected {kind.value}</Message><RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    return status, body, "application/xml"


class FaultProxy:
    """Forwards to `upstream` (http://host:port) with faults per `plan`; see the module doc."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        parsed = urlsplit(upstream)
        if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
            raise ValueError("upstream must be http://host:port")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port
        self.plan = plan
        self.stats = ProxyStats()
        self._decider = _Decider(plan)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fault-proxy",
            daemon=True,
        )
        self._watchdog = threading.Timer(plan.lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # the test report counts requests; per-request lines are noise

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers end with an empty line
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = self._body()
                with proxy.stats.lock:
                    proxy.stats.requests += 1
                kind = proxy._decider.decide(_identity(self.command, self.path, headers, body))
                if kind is not None:
                    with proxy.stats.lock:
                        proxy.stats.injected[kind.value] += 1
                if kind is FaultKind.RESET:
                    self._reset()
                    return
                if kind is FaultKind.LATENCY:
                    time.sleep(proxy.plan.latency_s)
                elif kind is not None:
                    status, payload, content_type = _fault_response(kind, self.path, headers)
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    if kind is FaultKind.HTTP_503 or kind is FaultKind.SLOW_DOWN:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
                    }
                    if body or self.command in ("POST", "PUT"):
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    if self.command == "HEAD":
                        length = response.getheader("Content-Length")
                        if length is not None:
                            self.send_header("Content-Length", length)
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD" and response.status not in (204, 304):
                        self.wfile.write(payload)
                finally:
                    upstream.close()
                with proxy.stats.lock:
                    proxy.stats.forwarded += 1

            def _reset(self) -> None:
                """Close with SO_LINGER 0: the client sees ECONNRESET, not a clean close."""
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    return  # the connection was reset on purpose or by the client

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler


@contextmanager
def running_fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[FaultProxy]:
    """Start a proxy for the duration of the block; it is stopped on exit whatever happens."""
    proxy = FaultProxy(upstream, plan).start()
    try:
        yield proxy
    finally:
        proxy.stop()
