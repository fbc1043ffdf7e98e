"""Container health check for the asr-platform image (`python3 -m tools.deploy.healthcheck`).

The runtime image has no shell and no curl, so the Dockerfile's HEALTHCHECK runs this module.
`ASR_ROLE` says what the container serves: `code-server` asks the Dagster gRPC server for its
health (port `ASR_CODE_SERVER_PORT`, default 4000); `api` GETs the jobs API's health path
(`ASR_API_PORT`, default 8080, path `ASR_API_HEALTH_PATH`, default /healthz); `job` (run, step
and Pipes pods, which serve nothing) is healthy while it runs. Exit 0 healthy, 1 unhealthy.
"""

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 4.0


def check_http(port: int, path: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when the endpoint answers 2xx, else why not."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"
    return None if 200 <= status < 300 else f"{url} answered {status}"


def check_code_server(port: int, timeout_s: float = TIMEOUT_S) -> str | None:
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(host="127.0.0.1", port=port)
    try:
        status = client.health_check_query()
    except Exception as exc:  # noqa: BLE001 (any failure is "unhealthy", with its reason)
        return f"code server on {port}: {exc}"
    return None if status == "SERVING" else f"code server on {port}: {status}"


def check(environ: Mapping[str, str]) -> str | None:
    role = environ.get("ASR_ROLE", "code-server")
    if role == "code-server":
        return check_code_server(int(environ.get("ASR_CODE_SERVER_PORT", "4000")))
    if role == "api":
        return check_http(
            int(environ.get("ASR_API_PORT", "8080")), environ.get("ASR_API_HEALTH_PATH", "/healthz")
        )
    if role == "job":
        return None
    return f"unknown ASR_ROLE={role!r} (code-server, api, job)"


def main() -> int:
    problem = check(os.environ)
    if problem:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
