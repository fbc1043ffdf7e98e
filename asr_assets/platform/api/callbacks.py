"""Completion callbacks: HMAC-signed POSTs to the job's callback URL, retried with backoff.

Delivery runs on the service's own threads, after the job has finished: a slow or dead receiver
never holds up a job. Callback URLs must resolve only to public addresses (checked at submission
and again before every attempt, against DNS rebinding); redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from asr_assets.observability.logging import get_logger

log = get_logger(__name__)
SIGNATURE_HEADER = "X-ASR-Signature"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CallbackURLError(ValueError):
    pass


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_callback_url(url: str, allowed_networks: Sequence[Network] = ()) -> None:
    """Refuse URLs that are not http(s) or that resolve to a private/loopback/link-local address."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CallbackURLError("callback_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise CallbackURLError("callback_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as error:
        raise CallbackURLError(f"callback host {parts.hostname!r} does not resolve") from error
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if any(address in network for network in allowed_networks):
            continue
        if not _public(address):
            raise CallbackURLError(
                f"callback_url resolves to a non-public address ({address}); refused"
            )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the receiver recomputes and compares."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """What a receiver runs: the signature matches and is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


class CallbackDispatcher:
    """Delivers callbacks on a small thread pool; `on_done(job_id, delivered, attempts)` records."""

    def __init__(
        self,
        *,
        max_attempts: int,
        backoff_s: float,
        timeout_s: float,
        allowed_networks: Sequence[Network],
        on_done: Callable[[str, bool, int], None],
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.allowed_networks = list(allowed_networks)
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="callback")
        self._stop = threading.Event()

    def enqueue(self, job_id: str, url: str, secret: str, payload: dict[str, object]) -> None:
        self._pool.submit(self._deliver, job_id, url, secret, payload)

    def shutdown(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, job_id: str, url: str, secret: str, payload: dict[str, object]) -> None:
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        attempt = 0
        delivered = False
        while attempt < self.max_attempts and not self._stop.is_set():
            attempt += 1
            try:
                check_callback_url(url, self.allowed_networks)
                response = httpx.post(
                    url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": "asr-platform-callback/1",
                        "X-ASR-Event": "job.finished",
                        "X-ASR-Delivery": f"{job_id}.{attempt}",
                        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                    },
                    timeout=self.timeout_s,
                    follow_redirects=False,
                )
                if 200 <= response.status_code < 300:
                    delivered = True
                    break
                outcome = f"HTTP {response.status_code}"
            except CallbackURLError as error:
                log.warning("callback refused", job_id=job_id, error=str(error))
                break
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            log.warning("callback attempt failed", job_id=job_id, attempt=attempt, error=outcome)
            # Exponential backoff with full jitter, so many receivers recovering at once spread out.
            delay = random.uniform(0, self.backoff_s * 2 ** (attempt - 1))  # noqa: S311
            if self._stop.wait(delay):
                break
        log.info("callback finished", job_id=job_id, delivered=delivered, attempts=attempt)
        self.on_done(job_id, delivered, attempt)
