"""A real AppSync-shaped GraphQL server for tests: strawberry under uvicorn on 127.0.0.1.

It implements the `publishActivityResult` mutation the `AppSyncPublisher` sends, records every
request, answers a repeated idempotency key with DUPLICATE (writing nothing, as the production
resolver's conditional put does), and can inject the faults AppSync produces: HTTP 429, the
GraphQL `ThrottlingException` error, 5xx, and permanent per-activity rejections.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NewType

import strawberry
import uvicorn
from strawberry.asgi import GraphQL

AWSDate = strawberry.scalar(NewType("AWSDate", str), serialize=str, parse_value=str)
AWSJSON = strawberry.scalar(
    NewType("AWSJSON", str),
    serialize=json.dumps,
    parse_value=lambda value: json.loads(value) if isinstance(value, str) else value,
)


@strawberry.enum
class PublishStatus(Enum):
    CREATED = "CREATED"
    DUPLICATE = "DUPLICATE"


@strawberry.input
class ActivityResultInput:
    activity_id: strawberry.ID
    tenant_id: strawberry.ID
    activity_date: AWSDate  # type: ignore[valid-type]
    n_phrases: int
    n_scored: int
    n_errors: int
    n_expected_letters: int
    n_correct_letters: int
    accuracy: float | None
    model_name: str
    model_version: str
    model_sha256: str
    run_id: strawberry.ID
    idempotency_key: strawberry.ID
    phrases: AWSJSON  # type: ignore[valid-type]


@strawberry.enum
class RetractStatus(Enum):
    DELETED = "DELETED"
    NOT_FOUND = "NOT_FOUND"


@strawberry.input
class RetractActivityResultInput:
    activity_id: strawberry.ID
    activity_date: AWSDate  # type: ignore[valid-type]


@strawberry.type
class RetractActivityResultPayload:
    activity_id: strawberry.ID
    status: RetractStatus


@strawberry.type
class PublishActivityResultPayload:
    activity_id: strawberry.ID
    idempotency_key: strawberry.ID
    status: PublishStatus


class Fault(Enum):
    """What the server does to a request instead of (or after) running the mutation."""

    HTTP_429 = "http_429"
    THROTTLING_ERROR = "throttling_error"  # HTTP 200 with errorType ThrottlingException
    HTTP_503 = "http_503"
    WRITE_THEN_502 = "write_then_502"  # the write lands, the answer is lost
    REJECT = "reject"  # a permanent GraphQL error (errorType BadRequestException)


@dataclass
class RecordedCall:
    activity_id: str | None
    idempotency_key: str | None
    headers: dict[str, str]
    answered: str  # "CREATED", "DUPLICATE", or the fault's value / "unauthorized"


@dataclass
class AppSyncState:
    """What the server saw and wrote; read it from the test thread after a publish."""

    api_key: str | None = None
    require_sigv4: bool = False
    resolver_delay_s: float = 0.0
    calls: list[RecordedCall] = field(default_factory=list)
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key -> input
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # activity id -> latest
    faults: deque[Fault] = field(default_factory=deque)  # consumed, one per request
    activity_faults: dict[str, Fault] = field(default_factory=dict)  # every request for one id
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, outcome: str) -> int:
        with self.lock:
            return sum(call.answered == outcome for call in self.calls)


def _schema(state: AppSyncState) -> strawberry.Schema:
    @strawberry.type
    class Query:
        @strawberry.field
        def health(self) -> str:
            return "ok"

    @strawberry.type
    class Mutation:
        @strawberry.mutation
        async def publish_activity_result(
            self, input: ActivityResultInput
        ) -> PublishActivityResultPayload:
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if state.resolver_delay_s:
                    await asyncio.sleep(state.resolver_delay_s)
                key = str(input.idempotency_key)
                with state.lock:
                    if key in state.writes:
                        status = PublishStatus.DUPLICATE
                    else:
                        record = {
                            name: getattr(input, name)
                            for name in ActivityResultInput.__annotations__
                        }
                        state.writes[key] = record
                        state.records[str(input.activity_id)] = record
                        status = PublishStatus.CREATED
                return PublishActivityResultPayload(
                    activity_id=input.activity_id,
                    idempotency_key=input.idempotency_key,
                    status=status,
                )
            finally:
                with state.lock:
                    state.in_flight -= 1

        @strawberry.mutation
        async def retract_activity_result(
            self, input: RetractActivityResultInput
        ) -> RetractActivityResultPayload:
            """Erasure: delete the activity's record and every write that carried it."""
            activity = str(input.activity_id)
            with state.lock:
                found = state.records.pop(activity, None) is not None
                for key in [
                    k for k, v in state.writes.items() if str(v["activity_id"]) == activity
                ]:
                    del state.writes[key]
                    found = True
            status = RetractStatus.DELETED if found else RetractStatus.NOT_FOUND
            return RetractActivityResultPayload(activity_id=input.activity_id, status=status)

    return strawberry.Schema(query=Query, mutation=Mutation)


class RecordingAppSync:
    """ASGI app: auth and fault injection in front of the strawberry GraphQL app."""

    def __init__(self, state: AppSyncState) -> None:
        self.state = state
        self.graphql = GraphQL(_schema(state), graphql_ide=None, allow_queries_via_get=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.graphql(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        variables = _variables(body)
        activity_id = variables.get("activityId")
        call = RecordedCall(activity_id, variables.get("idempotencyKey"), headers, "")
        with self.state.lock:
            self.state.calls.append(call)
            fault = self.state.activity_faults.get(str(activity_id))
            if fault is None and self.state.faults:
                fault = self.state.faults.popleft()
        if not self._authorized(headers):
            call.answered = "unauthorized"
            await _json(send, 401, {"errors": [{"errorType": "UnauthorizedException"}]})
            return
        if fault is Fault.HTTP_429:
            call.answered = fault.value
            await _json(send, 429, {"errors": [{"errorType": "TooManyRequestsException"}]})
            return
        if fault is Fault.HTTP_503:
            call.answered = fault.value
            await _json(send, 503, {"message": "Service Unavailable"})
            return
        if fault is Fault.THROTTLING_ERROR:
            call.answered = fault.value
            error = {"errorType": "ThrottlingException", "message": "Rate exceeded"}
            await _json(send, 200, {"data": None, "errors": [error]})
            return
        if fault is Fault.REJECT:
            call.answered = fault.value
            error = {"errorType": "BadRequestException", "message": "rejected by the test"}
            await _json(send, 200, {"data": None, "errors": [error]})
            return
        captured = _Capture(send)
        await self.graphql(scope, _replay(body), captured)
        answer = _status_of(captured.body)
        if fault is Fault.WRITE_THEN_502:
            call.answered = fault.value
            await _json(send, 502, {"message": "Bad Gateway"})
            return
        call.answered = answer
        await captured.forward()

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.state.api_key is not None and headers.get("x-api-key") != self.state.api_key:
            return False
        if self.state.require_sigv4:
            auth = headers.get("authorization", "")
            return (
                auth.startswith("AWS4-HMAC-SHA256 Credential=")
                and "/appsync/aws4_request" in auth
                and "SignedHeaders=" in auth
                and "Signature=" in auth
                and "x-amz-date" in headers
            )
        return True


class _Capture:
    """Holds the inner app's response so the fault layer can replace it."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    async def forward(self) -> None:
        for message in self.messages:
            await self._send(message)


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


def _variables(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return {}
    variables = payload.get("variables") if isinstance(payload, dict) else None
    value = variables.get("input") if isinstance(variables, dict) else None
    return value if isinstance(value, dict) else {}


def _status_of(body: bytes) -> str:
    try:
        data = json.loads(body).get("data") or {}
    except (ValueError, AttributeError):
        return "invalid"
    result = data.get("publishActivityResult") or {}
    return str(result.get("status", "error"))


async def _json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextmanager
def running_appsync(
    *, api_key: str | None = None, require_sigv4: bool = False, resolver_delay_s: float = 0.0
) -> Iterator[tuple[str, AppSyncState]]:
    """Serve on a free loopback port; yields (url, state) and always stops the server."""
    state = AppSyncState(
        api_key=api_key, require_sigv4=require_sigv4, resolver_delay_s=resolver_delay_s
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        RecordingAppSync(state), log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="appsync-test-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test GraphQL server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}/graphql", state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the test GraphQL server did not stop")
