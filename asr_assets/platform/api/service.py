"""What the routes do: submission with idempotency and quotas, job views, refresh, callbacks.

Job state lives in Dagster; the record here caches the last state seen so that quotas and list
filters are answered from one query. A background watcher refreshes unfinished jobs, records their
usage once they finish and hands their callbacks to the dispatcher.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from asr_assets.observability.logging import get_logger
from asr_assets.platform.api.backend import JobsBackend
from asr_assets.platform.api.callbacks import (
    CallbackDispatcher,
    CallbackURLError,
    check_callback_url,
)
from asr_assets.platform.api.schemas import Job, JobLinks, JobPage, JobSubmission, Progress, Usage
from asr_assets.platform.jobs.models import JobRequest, JobState, JobStatus
from asr_assets.platform.tenancy.auth import LocationError, location_allowed
from asr_assets.platform.tenancy.database import as_utc
from asr_assets.platform.tenancy.models import JobRecord, Tenant, UsageRecord
from asr_assets.platform.tenancy.quotas import ACTIVE_STATES, check_submission
from asr_assets.platform.tenancy.settings import PlatformSettings
from asr_assets.platform.tenancy.usage import estimate_cost, record_usage

log = get_logger(__name__)
SUBMITTING = "SUBMITTING"
TERMINAL = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELED}
PAGE_TTL_S = 7 * 24 * 3600
LAUNCH_UNCONFIRMED = "launch_unconfirmed"
UNCONFIRMED_AFTER_S = 120.0


class ApiError(Exception):
    """An error the client caused or must wait out, with its HTTP status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def request_hash(body: JobSubmission) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_job_id() -> str:
    return f"job-{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:12]}"


def is_request_error(error: BaseException) -> bool:
    """Whether the engine refused the request itself rather than failed to take it.

    The core raises `UnknownWorkloadError` (a LookupError) or a ValueError for a request it will
    never run; an invalid workload registry (also a ValueError) is the platform's fault.
    """
    from asr_assets.platform.workloads.registry import RegistryError

    if isinstance(error, RegistryError):
        return False
    return isinstance(error, LookupError | ValueError)


def page_signature(secret: str, tenant: str, job_id: str, expires: int) -> str:
    message = f"page|{tenant}|{job_id}|{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def encode_cursor(record: JobRecord) -> str:
    created = as_utc(record.created_at)
    raw = f"{created.isoformat() if created else ''}|{record.job_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ApiError(400, "malformed cursor") from error


class JobService:
    def __init__(
        self,
        *,
        engine: Engine,
        settings: PlatformSettings,
        backend: Callable[[], JobsBackend],
    ) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self.settings = settings
        self._backend = backend
        self._tenant_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        self.dispatcher = CallbackDispatcher(
            max_attempts=settings.callback_max_attempts,
            backoff_s=settings.callback_backoff_s,
            timeout_s=settings.callback_timeout_s,
            allowed_networks=settings.allowed_networks(),
            on_done=self._callback_done,
        )
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def backend(self) -> JobsBackend:
        return self._backend()

    # ---- submission -------------------------------------------------------------------------

    def _tenant_lock(self, tenant: str) -> threading.Lock:
        with self._locks_guard:
            return self._tenant_locks[tenant]

    def check_locations(self, tenant: Tenant, body: JobSubmission) -> None:
        for field in ("input_prefix", "manifest", "output_prefix"):
            location = getattr(body, field)
            if location is None:
                continue
            try:
                allowed = location_allowed(location, list(tenant.allowed_prefixes))
            except LocationError as error:
                raise ApiError(403, f"{field}: {error}") from error
            if not allowed:
                raise ApiError(403, f"{field} is outside the prefixes this tenant may use")

    def submit(
        self, tenant: Tenant, body: JobSubmission, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """(job, replayed): the new job, or the one an earlier identical request created."""
        self.check_locations(tenant, body)
        if body.callback_url is not None:
            try:
                check_callback_url(body.callback_url, self.settings.allowed_networks())
            except CallbackURLError as error:
                raise ApiError(422, str(error)) from error
        key = idempotency_key or (f"name:{body.name}" if body.name else None)
        digest = request_hash(body)
        existing = self._replay(tenant, key, digest)
        if existing is not None:
            return existing, True
        files = None
        if tenant.max_files_per_job < 100_000_000:
            try:
                files = self.backend.count_inputs(
                    self._job_request(tenant, body, "probe"), tenant.max_files_per_job
                )
            except Exception as error:  # noqa: BLE001 - counting is advisory; the job validates again
                log.warning("input count unavailable", tenant=tenant.name, error=str(error))
        job_id = new_job_id()
        with self._tenant_lock(tenant.name), self.sessions() as session:
            # Row lock on the tenant: concurrent submissions from several servers serialize here.
            locked = session.scalar(
                select(Tenant).where(Tenant.name == tenant.name).with_for_update()
            )
            assert locked is not None
            try:
                check_submission(session, locked, files=files)
            except Exception:
                session.rollback()
                raise
            now = datetime.now(UTC)
            session.add(
                JobRecord(
                    job_id=job_id,
                    tenant=tenant.name,
                    idempotency_key=key,
                    request_hash=digest,
                    request=body.model_dump(mode="json"),
                    workload=body.workload,
                    priority=body.priority.value,
                    state=SUBMITTING,
                    created_at=now,
                    updated_at=now,
                    callback_url=body.callback_url,
                    callback_state="none",
                    callback_attempts=0,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                replay = self._replay(tenant, key, digest)
                if replay is None:
                    raise
                return replay, True
        try:
            self.backend.submit(self._job_request(tenant, body, job_id))
        except Exception as error:
            rejected = is_request_error(error)
            if rejected:
                log.info("job refused by the engine", job_id=job_id, tenant=tenant.name)
            else:
                log.error("job launch failed", job_id=job_id, tenant=tenant.name, error=str(error))
            with self.sessions.begin() as session:
                record = session.get(JobRecord, job_id)
                if record is not None:
                    session.delete(record)
            if rejected:
                # The request itself is wrong (unknown workload, an input kind it cannot read):
                # retrying will not help, so no 503 and no Retry-After.
                raise ApiError(422, f"{error}; nothing was launched") from error
            raise ApiError(
                503, "the job engine is unavailable; nothing was launched", {"Retry-After": "30"}
            ) from error
        with self.sessions.begin() as session:
            session.execute(
                update(JobRecord)
                .where(JobRecord.job_id == job_id, JobRecord.state == SUBMITTING)
                .values(state=JobState.QUEUED.value, updated_at=datetime.now(UTC))
            )
        log.info("job submitted", job_id=job_id, tenant=tenant.name, workload=body.workload)
        return self.view(tenant, job_id), False

    def _replay(self, tenant: Tenant, key: str | None, digest: str) -> Job | None:
        if key is None:
            return None
        with self.sessions() as session:
            record = session.scalar(
                select(JobRecord).where(
                    JobRecord.tenant == tenant.name, JobRecord.idempotency_key == key
                )
            )
            if record is None:
                return None
            if record.request_hash != digest:
                raise ApiError(
                    409, "this idempotency key (or job name) was used with a different request"
                )
            job_id = record.job_id
        return self.view(tenant, job_id)

    @staticmethod
    def _job_request(tenant: Tenant, body: JobSubmission, job_id: str) -> JobRequest:
        tags = dict(body.tags)
        if body.name:
            tags["name"] = body.name
        return JobRequest(
            workload=body.workload,
            input_prefix=body.input_prefix,
            manifest=body.manifest,
            output_prefix=body.output_prefix,
            tenant=tenant.name,
            team=tenant.team,
            cost_center=tenant.cost_center,
            priority=body.priority,
            params=dict(body.params),
            tags=tags,
            job_id=job_id,
            # Every audio key a manifest names must lie inside the tenant's own prefixes.
            key_prefixes=list(tenant.allowed_prefixes),
        )

    # ---- reading ----------------------------------------------------------------------------

    def record_for(self, tenant: Tenant, job_id: str) -> JobRecord:
        with self.sessions() as session:
            record = session.get(JobRecord, job_id)
        if record is None or (record.tenant != tenant.name and not tenant.is_admin):
            # The same answer whether the job is missing or another tenant's.
            raise ApiError(404, "no such job")
        return record

    def view(self, tenant: Tenant, job_id: str) -> Job:
        record = self.record_for(tenant, job_id)
        status = self.refresh(record)
        secret = tenant.callback_secret if record.tenant == tenant.name else None
        return self._to_view(record, status, secret)

    def refresh(self, record: JobRecord) -> JobStatus | None:
        """The engine's status for a launched job, folded into the record (usage, callback)."""
        if record.state == SUBMITTING or record.failure_reason == LAUNCH_UNCONFIRMED:
            return None
        try:
            status = self.backend.status(record.job_id)
        except Exception as error:  # noqa: BLE001 - degrade to the last state seen, never a 500
            log.warning("job status unavailable", job_id=record.job_id, error=str(error))
            return None
        if status.state.value != record.state or (
            status.state in TERMINAL and record.finished_at is None
        ):
            self._fold(record, status)
        return status

    def _fold(self, record: JobRecord, status: JobStatus) -> None:
        finished = status.finished_at or (datetime.now(UTC) if status.state in TERMINAL else None)
        with self.sessions.begin() as session:
            session.execute(
                update(JobRecord)
                .where(JobRecord.job_id == record.job_id)
                .values(
                    state=status.state.value,
                    failure_reason=status.failure_reason,
                    finished_at=finished,
                    updated_at=datetime.now(UTC),
                )
            )
            record.state = status.state.value
            record.failure_reason = status.failure_reason
            record.finished_at = finished
            if status.state not in TERMINAL:
                return
            tenant = session.get(Tenant, record.tenant)
            assert tenant is not None
            record_usage(
                session,
                job_id=record.job_id,
                tenant=tenant,
                workload=record.workload,
                usage=status.usage,
                finished_at=finished,
                prices=self.settings.prices,
            )
            claim = None
            if record.callback_url:
                claim = session.execute(
                    update(JobRecord)
                    .where(JobRecord.job_id == record.job_id, JobRecord.callback_state == "none")
                    .values(callback_state="pending")
                )
            secret = tenant.callback_secret
        if claim is not None and claim.rowcount == 1 and record.callback_url:
            record.callback_state = "pending"
            payload = self._to_view(record, status).model_dump(mode="json")
            self.dispatcher.enqueue(record.job_id, record.callback_url, secret, payload)

    def _callback_done(self, job_id: str, delivered: bool, attempts: int) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(JobRecord)
                .where(JobRecord.job_id == job_id)
                .values(
                    callback_state="delivered" if delivered else "failed",
                    callback_attempts=attempts,
                )
            )

    def _to_view(
        self, record: JobRecord, status: JobStatus | None, secret: str | None = None
    ) -> Job:
        prices = self.settings.prices
        if status is None:
            # The engine could not be asked: the last state seen, as recorded.
            status = JobStatus(
                job_id=record.job_id,
                state=JobState.QUEUED if record.state == SUBMITTING else JobState(record.state),
                workload=record.workload,
                tenant=record.tenant,
                failure_reason=record.failure_reason,
                created_at=as_utc(record.created_at),
                finished_at=as_utc(record.finished_at),
            )
        usage = Usage(
            **status.usage.model_dump(),
            estimated_cost=estimate_cost(status.usage, prices),
            currency=prices.currency,
        )
        run_link = None
        if self.settings.dagster_ui_url and status.run_id:
            run_link = f"{self.settings.dagster_ui_url.rstrip('/')}/runs/{status.run_id}"
        return Job(
            job_id=record.job_id,
            name=(record.request or {}).get("name"),  # type: ignore[arg-type]
            tenant=record.tenant,
            workload=record.workload,
            priority=record.priority,  # type: ignore[arg-type]
            state=status.state,
            failure_reason=status.failure_reason,
            created_at=as_utc(record.created_at),  # type: ignore[arg-type]
            started_at=status.started_at,
            finished_at=status.finished_at or as_utc(record.finished_at),
            progress=Progress(
                done=status.progress.done,
                failed=status.progress.failed,
                total=status.progress.total,
                percent=round(status.progress.percent, 2),
            ),
            usage=usage,
            errors_by_reason=status.errors_by_reason,
            failed_shards=status.failed_shards,
            results_prefix=status.results_prefix,
            run_id=status.run_id,
            tags=dict((record.request or {}).get("tags") or {}),  # type: ignore[arg-type]
            callback=record.callback_state if record.callback_url else None,
            links=JobLinks(
                self=f"/jobs/{record.job_id}",
                logs=f"/jobs/{record.job_id}/logs",
                page=self.page_link(record, secret),
                run=run_link,
            ),
        )

    def page_link(self, record: JobRecord, secret: str | None = None) -> str:
        if secret is None:
            with self.sessions() as session:
                tenant = session.get(Tenant, record.tenant)
            assert tenant is not None
            secret = tenant.callback_secret
        expires = int(time.time()) + PAGE_TTL_S
        signature = page_signature(secret, record.tenant, record.job_id, expires)
        return f"/jobs/{record.job_id}?expires={expires}&signature={signature}"

    @staticmethod
    def list_link(tenant: Tenant) -> str:
        expires = int(time.time()) + PAGE_TTL_S
        signature = page_signature(tenant.callback_secret, tenant.name, "*", expires)
        return f"/jobs?tenant={tenant.name}&expires={expires}&signature={signature}"

    def list_page(
        self,
        tenant: Tenant,
        *,
        state: JobState | None,
        workload: str | None,
        cursor: str | None,
        limit: int,
    ) -> JobPage:
        if state is not None:
            # The filter reads cached states: bring this tenant's unfinished ones up to date first.
            self.refresh_active(tenant.name)
        query = select(JobRecord).where(JobRecord.tenant == tenant.name)
        if state is not None:
            query = query.where(JobRecord.state == state.value)
        if workload is not None:
            query = query.where(JobRecord.workload == workload)
        if cursor is not None:
            created, job_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    JobRecord.created_at < created,
                    and_(JobRecord.created_at == created, JobRecord.job_id < job_id),
                )
            )
        query = query.order_by(JobRecord.created_at.desc(), JobRecord.job_id.desc()).limit(
            limit + 1
        )
        with self.sessions() as session:
            records = list(session.scalars(query))
        more = len(records) > limit
        records = records[:limit]
        secret = tenant.callback_secret
        jobs = [self._to_view(record, self.refresh(record), secret) for record in records]
        return JobPage(
            jobs=jobs,
            next_cursor=encode_cursor(records[-1]) if more else None,
            page=self.list_link(tenant),
        )

    def refresh_active(self, tenant: str | None = None, limit: int = 500) -> int:
        query = select(JobRecord).where(JobRecord.state.in_(ACTIVE_STATES[1:]))
        if tenant is not None:
            query = query.where(JobRecord.tenant == tenant)
        with self.sessions() as session:
            records = list(session.scalars(query.order_by(JobRecord.updated_at).limit(limit)))
        for record in records:
            try:
                self.refresh(record)
            except Exception as error:  # noqa: BLE001 - one bad job must not stop the sweep
                log.warning("job refresh failed", job_id=record.job_id, error=str(error))
        return len(records)

    def cancel(self, tenant: Tenant, job_id: str) -> Job:
        record = self.record_for(tenant, job_id)
        if record.state == SUBMITTING:
            raise ApiError(
                409, "the job is still being launched; try again shortly", {"Retry-After": "1"}
            )
        status = self.backend.cancel(job_id)
        self._fold(record, status)
        return self._to_view(record, status)

    def logs(self, tenant: Tenant, job_id: str) -> tuple[str | None, list[str]]:
        record = self.record_for(tenant, job_id)
        status = self.refresh(record)
        run_id = status.run_id if status else None
        return run_id, self.backend.logs(job_id, run_id)

    def usage_recorded(self, job_id: str) -> bool:
        with self.sessions() as session:
            return session.get(UsageRecord, job_id) is not None

    # ---- background -------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="job-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.dispatcher.shutdown()

    def _watch(self) -> None:
        self._resume_callbacks()
        while not self._stop.wait(self.settings.watch_interval_s):
            try:
                self.reap_unconfirmed_launches()
                self.refresh_active()
            except Exception as error:  # noqa: BLE001 - the watcher must outlive a bad sweep
                log.error("job watcher sweep failed", error=str(error))

    def reap_unconfirmed_launches(self, older_than_s: float = UNCONFIRMED_AFTER_S) -> int:
        """Jobs left SUBMITTING by a crash between the record and the launch.

        If the engine knows the job, it was launched: take its state. Otherwise mark it FAILED
        (`launch_unconfirmed`) rather than delete it, so its quota slot frees and a retry with
        the same idempotency key sees what happened instead of launching a second job.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        with self.sessions() as session:
            stale = list(
                session.scalars(
                    select(JobRecord).where(
                        JobRecord.state == SUBMITTING, JobRecord.created_at < cutoff
                    )
                )
            )
        for record in stale:
            try:
                status = self.backend.status(record.job_id)
            except Exception as error:  # noqa: BLE001 - unknown to the engine: not launched
                log.warning("launch unconfirmed", job_id=record.job_id, error=str(error))
                with self.sessions.begin() as session:
                    session.execute(
                        update(JobRecord)
                        .where(JobRecord.job_id == record.job_id, JobRecord.state == SUBMITTING)
                        .values(
                            state=JobState.FAILED.value,
                            failure_reason=LAUNCH_UNCONFIRMED,
                            finished_at=datetime.now(UTC),
                            updated_at=datetime.now(UTC),
                        )
                    )
                continue
            self._fold(record, status)
        return len(stale)

    def _resume_callbacks(self) -> None:
        """Callbacks a previous process claimed but did not finish are delivered again."""
        with self.sessions() as session:
            pending = list(
                session.scalars(select(JobRecord).where(JobRecord.callback_state == "pending"))
            )
        for record in pending:
            try:
                status = self.backend.status(record.job_id)
                with self.sessions() as session:
                    tenant = session.get(Tenant, record.tenant)
                assert tenant is not None and record.callback_url
                payload = self._to_view(record, status).model_dump(mode="json")
                self.dispatcher.enqueue(
                    record.job_id, record.callback_url, tenant.callback_secret, payload
                )
            except Exception as error:  # noqa: BLE001
                log.warning("callback resume failed", job_id=record.job_id, error=str(error))
