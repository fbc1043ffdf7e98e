"""docs/openapi.json is the generated document; regenerate it when the API changes:
`python -m asr_assets.platform.platform_cli openapi > docs/openapi.json`."""

from __future__ import annotations

import json
from pathlib import Path

from asr_assets.platform.api.app import openapi_document

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_matches_the_code() -> None:
    generated = openapi_document()
    assert COMMITTED.read_text() == generated, (
        "docs/openapi.json is stale: python -m asr_assets.platform.platform_cli openapi "
        "> docs/openapi.json"
    )


def test_openapi_document_covers_the_jobs_api() -> None:
    document = json.loads(COMMITTED.read_text())
    assert {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/logs",
        "/workloads",
        "/usage",
        "/healthz",
        "/readyz",
    } <= set(document["paths"])
    post = document["paths"]["/jobs"]["post"]
    assert {"202", "401", "403", "409", "413", "422", "429"} <= set(post["responses"])
    assert any(p["name"] == "idempotency-key" for p in post["parameters"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]
