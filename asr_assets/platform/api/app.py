"""The FastAPI application: routes, authentication, error mapping and the request size limit.

`create_app` builds one app per settings; the job engine comes from the `jobs_backend`
dependency (the platform core by default), so a test replaces it with
`app.dependency_overrides[jobs_backend]`.
"""

import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from asr_assets.platform.api.backend import (
    JobsBackend,
    PlatformJobsBackend,
    WorkloadInfo,
    WorkloadRegistryError,
)
from asr_assets.platform.api.pages import job_list_page, job_page
from asr_assets.platform.api.schemas import (
    Check,
    IssuedKey,
    Job,
    JobLogs,
    JobPage,
    JobSubmission,
    Problem,
    Readiness,
    TenantCreate,
    TenantCreated,
    UsageReport,
)
from asr_assets.platform.api.service import ApiError, JobService, page_signature
from asr_assets.platform.jobs.models import JobState
from asr_assets.platform.tenancy import auth
from asr_assets.platform.tenancy.database import make_engine, migrate
from asr_assets.platform.tenancy.models import JobRecord, Tenant
from asr_assets.platform.tenancy.quotas import QuotaExceededError
from asr_assets.platform.tenancy.settings import PlatformSettings, Quotas
from asr_assets.platform.tenancy.usage import GroupBy, usage_rows

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_default_backend = PlatformJobsBackend()


def jobs_backend() -> JobsBackend:
    """The engine behind the API (overridden in tests with `app.dependency_overrides`)."""
    return _default_backend


class BodyLimit:
    """413 for a body over the limit, before any of it is parsed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                response = JSONResponse({"detail": "request body too large"}, status_code=413)
                await response(scope, receive, send)
                return
            received = 0

            async def limited() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, "request body too large")
                return message

            await self.app(scope, limited, send)
            return
        await self.app(scope, receive, send)


NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"
WORKLOAD_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}:[0-9]+(\.[0-9]+){0,2}$"
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")]
bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer asrk_...`")
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, forged or revoked API key"},
    404: {"model": Problem, "description": "no such job (or another tenant's)"},
}


def create_app(settings: PlatformSettings, *, engine: Engine | None = None) -> FastAPI:
    engine = engine or make_engine(settings.database_url)
    migrate(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="asr-platform jobs API",
        version="1",
        description=(
            "Batch speech-recognition jobs for every team: submit a workload over an input prefix"
            " or a manifest, follow its progress, read its usage and estimated cost."
        ),
        lifespan=lifespan,
    )

    def resolve_backend() -> JobsBackend:
        override = app.dependency_overrides.get(jobs_backend, jobs_backend)
        return override()

    service = JobService(engine=engine, settings=settings, backend=resolve_backend)
    app.state.service = service
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, error.status, headers=error.headers)

    @app.exception_handler(QuotaExceededError)
    async def _quota(_request: Request, error: QuotaExceededError) -> JSONResponse:
        headers = {}
        if error.retry_after_s is not None:
            headers["Retry-After"] = str(error.retry_after_s)
        return JSONResponse({"detail": f"quota exceeded: {error}"}, 429, headers=headers)

    def _tenant_for(token: str | None) -> Tenant:
        if not token:
            raise ApiError(401, "missing API key", {"WWW-Authenticate": "Bearer"})
        with service.sessions() as session:
            tenant = auth.authenticate(session, token)
        if tenant is None:
            raise ApiError(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
        return tenant

    def current_tenant(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Tenant:
        return _tenant_for(credentials.credentials if credentials else None)

    def admin(tenant: Annotated[Tenant, Depends(current_tenant)]) -> Tenant:
        if not tenant.is_admin:
            raise ApiError(403, "this needs an admin key")
        return tenant

    TenantDep = Annotated[Tenant, Depends(current_tenant)]

    def wants_html(request: Request) -> bool:
        accept = request.headers.get("accept", "")
        return "text/html" in accept and "application/json" not in accept

    def signed_tenant(
        tenant: str, job_id: str, expires: int | None, signature: str | None
    ) -> Tenant:
        if expires is None or signature is None or expires < time.time():
            raise ApiError(
                401, "missing API key or expired page link", {"WWW-Authenticate": "Bearer"}
            )
        with service.sessions() as session:
            found = session.get(Tenant, tenant)
        if found is None:
            raise ApiError(404, "no such job")
        expected = page_signature(found.callback_secret, tenant, job_id, expires)
        if not hmac.compare_digest(expected, signature):
            raise ApiError(401, "invalid page link")
        return found

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, bool]:
        """The process is up (it says nothing about the database or the engine)."""
        return {"ok": True}

    @app.get(
        "/readyz", tags=["service"], response_model=Readiness, responses={503: {"model": Readiness}}
    )
    def readyz(backend: Annotated[JobsBackend, Depends(jobs_backend)]) -> JSONResponse:
        checks: dict[str, Check] = {}
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            checks["database"] = Check(ok=True)
        except Exception as error:  # noqa: BLE001 - readiness reports, never raises
            checks["database"] = Check(ok=False, detail=type(error).__name__)
        try:
            backend.check_ready()
            checks["dagster"] = Check(ok=True)
        except Exception as error:  # noqa: BLE001
            checks["dagster"] = Check(ok=False, detail=f"{type(error).__name__}: {error}"[:200])
        ready = all(check.ok for check in checks.values())
        body = Readiness(ready=ready, checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.post(
        "/jobs",
        status_code=202,
        response_model=Job,
        tags=["jobs"],
        responses={
            **PROBLEMS,
            403: {"model": Problem, "description": "a prefix outside the tenant's"},
            409: {"model": Problem, "description": "idempotency key reused with another body"},
            413: {"model": Problem, "description": "body too large"},
            429: {"model": Problem, "description": "quota exceeded (see Retry-After)"},
            503: {"model": Problem, "description": "the job engine is unavailable"},
        },
    )
    def submit_job(
        body: JobSubmission,
        tenant: TenantDep,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(max_length=128, pattern=r"^[\x21-\x7e]+$")
        ] = None,
    ) -> Job:
        """Submit a job. Send an `Idempotency-Key` (or a `name`) to make retries safe: the same
        request returns the same job; another body with the same key is a 409."""
        job, replayed = service.submit(tenant, body, idempotency_key)
        response.headers["Location"] = f"/jobs/{job.job_id}"
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return job

    @app.get(
        "/jobs",
        response_model=JobPage,
        tags=["jobs"],
        responses={**PROBLEMS, 200: {"content": {"text/html": {}}}},
    )
    def list_jobs(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        status: JobState | None = None,
        workload: Annotated[str | None, Query(max_length=128, pattern=WORKLOAD_PATTERN)] = None,
        cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        tenant_name: Annotated[str | None, Query(alias="tenant", pattern=NAME_PATTERN)] = None,
        expires: Annotated[int | None, Query(ge=0, le=2**40)] = None,
        signature: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,128}$")] = None,
    ) -> Any:
        """The tenant's jobs, newest first; filter by `status` or `workload`; pass
        `next_cursor` back as `cursor` for the next page. Browsers get an HTML list."""
        if credentials is None and tenant_name is not None:
            tenant = signed_tenant(tenant_name, "*", expires, signature)
        else:
            tenant = _tenant_for(credentials.credentials if credentials else None)
        page = service.list_page(
            tenant, state=status, workload=workload, cursor=cursor, limit=limit
        )
        if wants_html(request):
            return HTMLResponse(job_list_page(tenant.name, page.jobs))
        return page

    @app.get(
        "/jobs/{job_id}",
        response_model=Job,
        tags=["jobs"],
        responses={**PROBLEMS, 200: {"content": {"text/html": {}}}},
    )
    def get_job(
        request: Request,
        job_id: JobId,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        expires: Annotated[int | None, Query(ge=0, le=2**40)] = None,
        signature: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,128}$")] = None,
    ) -> Any:
        """A job's state, progress, usage and links. Browsers (`Accept: text/html`) get the
        status page; a signed `page` link from `links.page` opens it without a key."""
        if credentials is None and signature is not None:
            with service.sessions() as session:
                record = session.get(JobRecord, job_id)
            if record is None:
                raise ApiError(404, "no such job")
            tenant = signed_tenant(record.tenant, job_id, expires, signature)
        else:
            tenant = _tenant_for(credentials.credentials if credentials else None)
        job = service.view(tenant, job_id)
        if wants_html(request) or signature is not None:
            return HTMLResponse(job_page(job))
        return job

    @app.post(
        "/jobs/{job_id}/cancel",
        response_model=Job,
        tags=["jobs"],
        responses={**PROBLEMS, 409: {"model": Problem}},
    )
    def cancel_job(job_id: JobId, tenant: TenantDep) -> Job:
        """Cancel a queued or running job (finished jobs are returned as they are)."""
        return service.cancel(tenant, job_id)

    @app.get("/jobs/{job_id}/logs", response_model=JobLogs, tags=["jobs"], responses=PROBLEMS)
    def job_logs(job_id: JobId, tenant: TenantDep) -> JobLogs:
        """The run's event log lines."""
        run_id, lines = service.logs(tenant, job_id)
        return JobLogs(job_id=job_id, run_id=run_id, lines=lines)

    @app.get(
        "/workloads",
        response_model=list[WorkloadInfo],
        tags=["jobs"],
        responses={
            **PROBLEMS,
            503: {"model": Problem, "description": "the workload registry is invalid"},
        },
    )
    def workloads(
        _tenant: TenantDep, backend: Annotated[JobsBackend, Depends(jobs_backend)]
    ) -> list[WorkloadInfo]:
        """Workloads jobs can run: every version in the platform's workload registry."""
        try:
            return backend.workloads()
        except WorkloadRegistryError as error:
            raise ApiError(503, f"the workload registry is invalid: {error}") from error

    @app.get(
        "/usage",
        response_model=UsageReport,
        tags=["usage"],
        responses={**PROBLEMS, 403: {"model": Problem}},
    )
    def usage(
        tenant: TenantDep,
        tenant_name: Annotated[str | None, Query(alias="tenant", pattern=NAME_PATTERN)] = None,
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        group_by: GroupBy = GroupBy.DAY,
    ) -> UsageReport:
        """Usage and estimated cost of finished jobs, per team, workload, day or tenant.
        A tenant sees its own; an admin any tenant's, or all when `tenant` is left out."""
        if tenant.is_admin:
            scope = tenant_name
        else:
            if tenant_name not in (None, tenant.name):
                raise ApiError(403, "a tenant may read only its own usage")
            scope = tenant.name
        with service.sessions() as session:
            rows = usage_rows(session, tenant=scope, start=start, end=end, group_by=group_by)
        return UsageReport(
            tenant=scope,
            start=start,
            end=end,
            group_by=group_by,
            currency=settings.prices.currency,
            rows=rows,
        )

    @app.post(
        "/tenants",
        status_code=201,
        response_model=TenantCreated,
        tags=["admin"],
        responses={**PROBLEMS, 403: {"model": Problem}, 409: {"model": Problem}},
    )
    def create_tenant(
        body: TenantCreate, _admin: Annotated[Tenant, Depends(admin)]
    ) -> TenantCreated:
        """Create a tenant and its first API key (admin only)."""
        quotas = _quotas(settings.default_quotas, body)
        try:
            with service.sessions.begin() as session:
                tenant, key = auth.create_tenant(
                    session,
                    body.name,
                    allowed_prefixes=body.allowed_prefixes,
                    quotas=quotas,
                    team=body.team,
                    cost_center=body.cost_center,
                    is_admin=body.is_admin,
                )
                secret = tenant.callback_secret
        except auth.LocationError as error:
            raise ApiError(422, f"allowed_prefixes: {error}") from error
        except IntegrityError as error:
            raise ApiError(409, "a tenant with this name exists") from error
        return TenantCreated(
            tenant=body.name, key_id=key.key_id, api_key=key.token, callback_secret=secret
        )

    @app.post(
        "/tenants/{name}/keys",
        status_code=201,
        response_model=IssuedKey,
        tags=["admin"],
        responses={**PROBLEMS, 403: {"model": Problem}},
    )
    def issue_key(
        name: Annotated[str, Path(pattern=NAME_PATTERN)], _admin: Annotated[Tenant, Depends(admin)]
    ) -> IssuedKey:
        """Issue another API key for a tenant (for rotation: issue, switch, revoke the old)."""
        with service.sessions.begin() as session:
            if session.get(Tenant, name) is None:
                raise ApiError(404, "no such tenant")
            key = auth.issue_key(session, name)
        return IssuedKey(tenant=name, key_id=key.key_id, api_key=key.token)

    @app.post(
        "/keys/{key_id}/revoke",
        status_code=204,
        tags=["admin"],
        responses={**PROBLEMS, 403: {"model": Problem}},
    )
    def revoke_key(
        key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
        _admin: Annotated[Tenant, Depends(admin)],
    ) -> Response:
        """Revoke an API key; requests with it get 401 from now on."""
        with service.sessions.begin() as session:
            if not auth.revoke_key(session, key_id):
                raise ApiError(404, "no such active key")
        return Response(status_code=204)

    return app


def _quotas(defaults: Quotas, body: TenantCreate) -> Quotas:
    return Quotas(
        max_active_jobs=body.max_active_jobs or defaults.max_active_jobs,
        max_files_per_job=body.max_files_per_job or defaults.max_files_per_job,
        audio_hours_per_day=body.audio_hours_per_day or defaults.audio_hours_per_day,
    )


def openapi_document(settings: PlatformSettings | None = None) -> str:
    """The OpenAPI document as committed in docs/openapi.json (stable key order)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    app = create_app(settings or PlatformSettings(database_url="sqlite://"), engine=engine)
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
