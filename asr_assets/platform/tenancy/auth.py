"""API keys (random bearer tokens, stored only as SHA-256) and tenant path policy.

Keys carry 256 bits of randomness, so a fast hash is enough: nothing to brute-force, and lookups
stay cheap under load. The key id in the token finds the row; the hash is compared in constant
time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from sqlalchemy import select
from sqlalchemy.orm import Session

from asr_assets.platform.tenancy.models import ApiKey, Tenant
from asr_assets.platform.tenancy.settings import Quotas

KEY_PREFIX = "asrk"
KEY_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_key(session: Session, tenant: str) -> IssuedKey:
    key_id = secrets.token_hex(8)
    token = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(key_id=key_id, tenant=tenant, key_hash=hash_token(token)))
    return IssuedKey(key_id=key_id, token=token)


def revoke_key(session: Session, key_id: str) -> bool:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = datetime.now(UTC)
    return True


def authenticate(session: Session, token: str) -> Tenant | None:
    """The tenant a bearer token belongs to, or None for a malformed, forged or revoked one."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not KEY_ID.fullmatch(parts[1]):
        return None
    key = session.get(ApiKey, parts[1])
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.key_hash, hash_token(token)):
        return None
    return session.get(Tenant, key.tenant)


def create_tenant(
    session: Session,
    name: str,
    *,
    allowed_prefixes: list[str],
    quotas: Quotas,
    team: str = "default",
    cost_center: str = "default",
    is_admin: bool = False,
) -> tuple[Tenant, IssuedKey]:
    for prefix in allowed_prefixes:
        normalize_location(prefix)
    tenant = Tenant(
        name=name,
        team=team,
        cost_center=cost_center,
        is_admin=is_admin,
        allowed_prefixes=list(allowed_prefixes),
        max_active_jobs=quotas.max_active_jobs,
        max_files_per_job=quotas.max_files_per_job,
        audio_hours_per_day=quotas.audio_hours_per_day,
        callback_secret=secrets.token_urlsafe(32),
    )
    session.add(tenant)
    session.flush()
    return tenant, issue_key(session, name)


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


class LocationError(ValueError):
    """A prefix that is malformed or escapes (`..`, odd schemes, encoded separators)."""


def normalize_location(location: str) -> tuple[str, str]:
    """(bucket, key) for `s3://bucket/key` or ("", key) for a key in the platform's own store.

    Anything ambiguous is refused rather than normalized: `..` or `.` segments, backslashes,
    percent-encoding, empty segments, control characters, other schemes.
    """
    if not location or len(location) > 1024:
        raise LocationError("empty or overlong location")
    if any(ord(c) < 32 or c == "\\" for c in location) or unquote(location) != location:
        raise LocationError("location contains control, backslash or encoded characters")
    if "://" in location:
        scheme, rest = location.split("://", 1)
        if scheme != "s3":
            raise LocationError(f"scheme {scheme!r} is not allowed (only s3://)")
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise LocationError("s3 location without a bucket")
    else:
        if ":" in location.split("/", 1)[0]:
            raise LocationError("location looks like a URI without s3://")
        bucket, key = "", location
    if key.startswith("/"):
        raise LocationError("absolute key")
    if key:
        segments = key.split("/")
        if segments[-1] == "":
            segments = segments[:-1]
        if any(segment in {"", ".", ".."} for segment in segments):
            raise LocationError("location has empty, '.' or '..' segments")
    return bucket, key


def location_allowed(location: str, allowed_prefixes: list[str]) -> bool:
    """True when `location` lies inside one of the tenant's prefixes (segment-wise, same bucket)."""
    bucket, key = normalize_location(location)
    for allowed in allowed_prefixes:
        allowed_bucket, allowed_key = normalize_location(allowed)
        if allowed_bucket != bucket:
            continue
        if allowed_key == "":
            return True
        base = allowed_key if allowed_key.endswith("/") else allowed_key + "/"
        if key == base.rstrip("/") or key.startswith(base):
            return True
    return False
