"""`asr-platform`: serve the jobs API, and submit and follow jobs from a terminal or a script.

The server URL and API key come from `--url`/`--key`, else `ASR_PLATFORM_URL`/`ASR_PLATFORM_KEY`,
else the TOML file in `ASR_PLATFORM_CLIENT_CONFIG` (default `~/.config/asr-platform/config.toml`,
keys `url` and `api_key`). An HTTP error prints one line and exits 1; `--json` prints what the API
returned, for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


class ClientError(click.ClickException):
    """One clear line on stderr, exit status 1 (click prints `Error: ...`)."""


def _client_config() -> dict[str, str]:
    path = Path(
        os.environ.get(
            "ASR_PLATFORM_CLIENT_CONFIG", Path.home() / ".config" / "asr-platform" / "config.toml"
        )
    )
    if not path.is_file():
        return {}
    try:
        return {k: str(v) for k, v in tomllib.loads(path.read_text()).items()}
    except tomllib.TOMLDecodeError as error:
        raise ClientError(f"{path}: {error}") from error


class Api:
    def __init__(self, url: str | None, key: str | None, timeout_s: float = 30.0) -> None:
        config = _client_config()
        self.url = url or os.environ.get("ASR_PLATFORM_URL") or config.get("url") or DEFAULT_URL
        self.key = key or os.environ.get("ASR_PLATFORM_KEY") or config.get("api_key")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.key:
            raise ClientError("no API key: set ASR_PLATFORM_KEY, pass --key or write a config file")
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        try:
            response = httpx.request(
                method,
                self.url.rstrip("/") + path,
                headers=headers,
                timeout=self.timeout_s,
                **kwargs,
            )
        except httpx.HTTPError as error:
            raise ClientError(f"cannot reach {self.url}: {error}") from error
        if response.status_code >= 400:
            raise ClientError(f"{response.status_code} {_detail(response)}")
        return response.json() if response.content else None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(detail, list):  # validation errors: the first one is enough for one line
        first = detail[0] if detail else {}
        where = ".".join(str(p) for p in first.get("loc", [])[1:])
        return f"{where}: {first.get('msg', '')}".strip(": ")
    suffix = ""
    if response.status_code == 429 and response.headers.get("Retry-After"):
        suffix = f" (retry after {response.headers['Retry-After']} s)"
    return f"{detail}{suffix}"


def _emit(ctx: click.Context, payload: Any, human: str) -> None:
    click.echo(json.dumps(payload, indent=2) if ctx.obj["json"] else human)


def _job_line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    reason = f"  ({job['failure_reason']})" if job.get("failure_reason") else ""
    return (
        f"{job['job_id']}  {job['state']:<11} {job['workload']:<20} "
        f"{progress['done']}+{progress['failed']}/{progress['total']} "
        f"({progress['percent']:.1f}%){reason}"
    )


@click.group()
@click.option("--url", help="API base URL (env ASR_PLATFORM_URL)")
@click.option("--key", help="API key (env ASR_PLATFORM_KEY)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def main(ctx: click.Context, url: str | None, key: str | None, as_json: bool) -> None:
    """Batch ASR jobs on the asr-platform."""
    ctx.obj = {"url": url, "key": key, "json": as_json}


def _api(ctx: click.Context) -> Api:
    return Api(ctx.obj["url"], ctx.obj["key"])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the jobs API (configuration from ASR_PLATFORM_CONFIG; database migrated on start)."""
    import uvicorn

    from asr_assets.platform.api.app import create_app
    from asr_assets.platform.tenancy.settings import load_settings

    uvicorn.run(create_app(load_settings()), host=host, port=port, log_level="info")


@main.command()
def openapi() -> None:
    """Print the API's OpenAPI document (committed as docs/openapi.json)."""
    from asr_assets.platform.api.app import openapi_document

    click.echo(openapi_document(), nl=False)


@main.group()
def tenants() -> None:
    """Tenants and keys, managed directly on the platform database (operators only)."""


@tenants.command("create")
@click.argument("name")
@click.option("--prefix", "prefixes", multiple=True, required=True, help="allowed prefix")
@click.option("--team", default="default")
@click.option("--cost-center", default="default")
@click.option("--admin", is_flag=True, help="may manage tenants and read all usage")
@click.option("--max-active-jobs", type=int)
@click.option("--max-files-per-job", type=int)
@click.option("--audio-hours-per-day", type=float)
@click.pass_context
def create_tenant(
    ctx: click.Context,
    name: str,
    prefixes: tuple[str, ...],
    team: str,
    cost_center: str,
    admin: bool,
    max_active_jobs: int | None,
    max_files_per_job: int | None,
    audio_hours_per_day: float | None,
) -> None:
    """Create a tenant and print its API key and callback secret (shown once)."""
    from sqlalchemy.exc import IntegrityError

    from asr_assets.platform.tenancy import auth
    from asr_assets.platform.tenancy.database import make_engine, migrate, sessions
    from asr_assets.platform.tenancy.settings import Quotas, load_settings

    settings = load_settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    defaults = settings.default_quotas
    quotas = Quotas(
        max_active_jobs=max_active_jobs or defaults.max_active_jobs,
        max_files_per_job=max_files_per_job or defaults.max_files_per_job,
        audio_hours_per_day=audio_hours_per_day or defaults.audio_hours_per_day,
    )
    try:
        with sessions(engine).begin() as session:
            tenant, key = auth.create_tenant(
                session,
                name,
                allowed_prefixes=list(prefixes),
                quotas=quotas,
                team=team,
                cost_center=cost_center,
                is_admin=admin,
            )
            secret = tenant.callback_secret
    except auth.LocationError as error:
        raise ClientError(f"--prefix: {error}") from error
    except IntegrityError as error:
        raise ClientError(f"tenant {name!r} exists") from error
    finally:
        engine.dispose()
    payload = {
        "tenant": name,
        "key_id": key.key_id,
        "api_key": key.token,
        "callback_secret": secret,
    }
    _emit(
        ctx,
        payload,
        f"tenant {name} created\napi key (shown once): {key.token}\n"
        f"callback secret (shown once): {secret}",
    )


def _parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not k=v", param_hint=what)
        parsed[key] = value
    return parsed


@main.command()
@click.option("--workload", required=True, help="name:version, e.g. letter-scoring:1")
@click.option("--input", "input_prefix", help="input prefix (s3://bucket/prefix/ or a store key)")
@click.option("--manifest", help="manifest (JSONL or Parquet)")
@click.option("--output", "output_prefix", required=True, help="output prefix")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), default="normal")
@click.option("--param", "params", multiple=True, help="k=v, repeatable")
@click.option("--tag", "tags", multiple=True, help="k=v, repeatable")
@click.option("--name", help="job name, unique per tenant (resubmitting returns the same job)")
@click.option("--callback-url", help="POSTed a signed JSON body when the job finishes")
@click.option("--idempotency-key", help="makes a retried submission safe")
@click.option("--wait", is_flag=True, help="follow the job to the end with a progress bar")
@click.option("--poll", default=2.0, show_default=True, help="seconds between polls with --wait")
@click.pass_context
def submit(
    ctx: click.Context,
    workload: str,
    input_prefix: str | None,
    manifest: str | None,
    output_prefix: str,
    priority: str,
    params: tuple[str, ...],
    tags: tuple[str, ...],
    name: str | None,
    callback_url: str | None,
    idempotency_key: str | None,
    wait: bool,
    poll: float,
) -> None:
    """Submit a job (exactly one of --input or --manifest)."""
    if (input_prefix is None) == (manifest is None):
        raise click.UsageError("give exactly one of --input or --manifest")
    body: dict[str, Any] = {
        "workload": workload,
        "output_prefix": output_prefix,
        "priority": priority,
        "params": _parse_pairs(params, "--param"),
        "tags": _parse_pairs(tags, "--tag"),
    }
    for field, value in (
        ("input_prefix", input_prefix),
        ("manifest", manifest),
        ("name", name),
        ("callback_url", callback_url),
    ):
        if value is not None:
            body[field] = value
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    api = _api(ctx)
    job = api.call("POST", "/jobs", json=body, headers=headers)
    if not wait:
        _emit(ctx, job, f"submitted {job['job_id']} ({job['state']})")
        return
    job = _follow(ctx, api, job, poll)
    _emit(ctx, job, _job_line(job))
    if job["state"] != "COMPLETED":
        sys.exit(1)


def _follow(ctx: click.Context, api: Api, job: dict[str, Any], poll: float) -> dict[str, Any]:
    """Poll until the job finishes; a live bar on a terminal, nothing extra with --json."""
    show = not ctx.obj["json"]
    progress = None
    task = None
    if show:
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        except ImportError:
            show = False
        else:
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                transient=False,
            )
            progress.start()
            task = progress.add_task(job["job_id"], total=None)
    try:
        while True:
            if progress is not None and task is not None:
                p = job["progress"]
                progress.update(
                    task,
                    completed=p["done"] + p["failed"],
                    total=p["total"] or None,
                    description=f"{job['job_id']} {job['state']}",
                )
            if job["state"] in TERMINAL:
                return job
            time.sleep(poll)
            job = api.call("GET", f"/jobs/{job['job_id']}")
    finally:
        if progress is not None:
            progress.stop()


@main.command()
@click.argument("job_id")
@click.pass_context
def status(ctx: click.Context, job_id: str) -> None:
    """A job's state and progress."""
    job = _api(ctx).call("GET", f"/jobs/{job_id}")
    _emit(ctx, job, _job_line(job))


@main.command("list")
@click.option("--status", "state", type=click.Choice(sorted(TERMINAL | {"QUEUED", "IN_PROGRESS"})))
@click.option("--workload")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100))
@click.option("--cursor", help="next_cursor of the previous page")
@click.pass_context
def list_jobs(
    ctx: click.Context, state: str | None, workload: str | None, limit: int, cursor: str | None
) -> None:
    """Your jobs, newest first."""
    query = {
        k: v
        for k, v in (("status", state), ("workload", workload), ("cursor", cursor))
        if v is not None
    }
    page = _api(ctx).call("GET", "/jobs", params={**query, "limit": limit})
    lines = [_job_line(job) for job in page["jobs"]] or ["no jobs"]
    if page.get("next_cursor"):
        lines.append(f"more: --cursor {page['next_cursor']}")
    _emit(ctx, page, "\n".join(lines))


@main.command()
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a queued or running job."""
    job = _api(ctx).call("POST", f"/jobs/{job_id}/cancel")
    _emit(ctx, job, _job_line(job))


@main.command()
@click.argument("job_id")
@click.pass_context
def logs(ctx: click.Context, job_id: str) -> None:
    """The job's run log."""
    body = _api(ctx).call("GET", f"/jobs/{job_id}/logs")
    _emit(ctx, body, "\n".join(body["lines"]) or "(no log lines yet)")


@main.command()
@click.option("--tenant", help="admins: another tenant (default: all for admins, else yours)")
@click.option("--from", "start", help="first day, YYYY-MM-DD")
@click.option("--to", "end", help="last day, YYYY-MM-DD")
@click.option(
    "--group-by",
    type=click.Choice(["team", "workload", "day", "tenant"]),
    default="day",
    show_default=True,
)
@click.pass_context
def usage(
    ctx: click.Context, tenant: str | None, start: str | None, end: str | None, group_by: str
) -> None:
    """Usage and estimated cost of finished jobs."""
    query = {k: v for k, v in (("tenant", tenant), ("from", start), ("to", end)) if v}
    report = _api(ctx).call("GET", "/usage", params={**query, "group_by": group_by})
    lines = [f"{group_by:<20}{'jobs':>6}{'files':>9}{'audio h':>10}{'cpu h':>9}{'cost':>12}"]
    for row in report["rows"]:
        lines.append(
            f"{row['group']:<20}{row['jobs']:>6}{row['files']:>9}"
            f"{row['audio_seconds'] / 3600:>10.2f}{row['cpu_seconds'] / 3600:>9.2f}"
            f"{row['estimated_cost']:>8.4f} {report['currency']}"
        )
    _emit(ctx, report, "\n".join(lines))


@main.command()
@click.pass_context
def workloads(ctx: click.Context) -> None:
    """Workloads jobs can run (the platform's workload registry)."""
    found = _api(ctx).call("GET", "/workloads")
    lines = [f"{'workload':<26}{'owner':<20}{'input':<18}description"]
    for w in found:
        inputs = ",".join(w.get("input_kinds") or [])
        lines.append(f"{w['ref']:<26}{w['owner']:<20}{inputs:<18}{w['description']}")
    _emit(ctx, found, "\n".join(lines) if found else "no workloads")


if __name__ == "__main__":
    main()
