"""The new-audio sensor: new recordings in the object store start `score_letters` for their day.

Typed against `ObjectStore`, so it runs on the local store as on S3.

**Objects to partitions.** Uploads follow the key layout `{audio_prefix}YYYY-MM-DD/...`; the date
segment is the object's daily partition (the UTC day of the activity, which is what the catalog
partitions by). The key, not the object's last-modified time, decides the day, so a late upload
of yesterday's recordings re-scores yesterday. Keys outside that layout, and days outside the
look-back window or past the last partition, are counted as ignored.

**Bounded work per tick.** A tick lists at most `max_pages_per_tick` pages of `page_size` keys
(and stops early when `tick_budget_s` is spent), resuming from the last key of the previous
tick. Listing starts at the oldest day in the window (`lookback_days`), so a pass over the
window is proportional to recent uploads, not to the whole history under the prefix. A hard
deadline (`tick_deadline_s`) abandons a listing that hangs, so a tick stays well inside
Dagster's sensor timeout (60 s by default) even while the store is failing.

**What is new.** The cursor keeps, per day, the newest object (last-modified, digest of key and
time) that a launched run already covered. An object is new when it is newer than that: a run
launched after the settle period started after every older object of its day existed. Objects
that land behind the resume point are found on the next pass over the window.

**Settle, then launch.** A day with new objects is launched once the pass has listed all of its
keys and its newest object is at least `settle_s` old, so a day still receiving audio is scored
once, when it goes quiet, not once per upload. Each launch is one `RunRequest` for the day with
`run_key` = day + digest of its newest object: re-evaluating the same tick (or losing the
cursor) requests the same run_key, which Dagster launches only once.

**Skips.** Nothing new, days still settling, the store unreachable, the catalog unreachable
(probed only when something is ready to launch) or inference unavailable
(`InferenceResource.unavailable_reason()`) each skip with a message that says which. Skipping never
loses a day: launches are only recorded in the cursor when their run requests are returned.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asr_assets.assets.partitions import daily_partitions
from asr_assets.core.storage import UnsafeKeyError
from asr_assets.observability.logging import get_logger
from asr_assets.resources.catalog import ActivityCatalog
from asr_assets.resources.inference import InferenceResource
from asr_assets.resources.object_store import ObjectInfo, ObjectStore, StoreUnavailableError

log = get_logger(__name__)

SENSOR_NAME = "new_audio"
TARGET_JOB = "score_letters"
CURSOR_VERSION = 1
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class NewAudioSettings(BaseModel):
    """How the sensor scans; built from ASR_SENSOR_* variables in `definitions.py`."""

    model_config = ConfigDict(frozen=True)

    audio_prefix: str = Field(default="audio/", description="Uploads land under this prefix.")
    # At least a second: S3's LastModified has one-second resolution, and "covered" compares
    # an object's time with the newest object a launched run had settled on.
    settle_s: float = Field(default=1800.0, ge=1, description="Quiet time before a day runs.")
    lookback_days: int = Field(default=7, ge=0, le=400, description="Oldest day watched.")
    max_pages_per_tick: int = Field(default=20, ge=1, le=1000)
    page_size: int = Field(default=1000, ge=1, le=1000)
    tick_budget_s: float = Field(default=20.0, gt=0, description="No new page after this.")
    tick_deadline_s: float = Field(default=40.0, gt=0, description="Abandon a hung listing.")
    interval_s: int = Field(default=60, ge=5, description="Minimum seconds between ticks.")


class ObjectMark(BaseModel):
    """The newest object of a day, as the cursor remembers it (a digest, not the key)."""

    model_config = ConfigDict(frozen=True)

    last_modified: datetime
    digest: str

    @classmethod
    def of(cls, info: ObjectInfo) -> ObjectMark:
        # Keys may name people; the cursor, run keys and logs carry only this digest.
        modified = info.last_modified.astimezone(UTC)
        digest = hashlib.sha256(f"{info.key}\n{modified.isoformat()}".encode()).hexdigest()[:20]
        return cls(last_modified=modified, digest=digest)

    def newer_than(self, other: ObjectMark) -> bool:
        return (self.last_modified, self.digest) > (other.last_modified, other.digest)


class PendingDay(BaseModel):
    """A day with objects no launched run covered yet."""

    newest: ObjectMark
    # True once a pass has listed past the day's last key since `newest` last changed: only
    # then is `newest` really the day's newest object, and only then may the day launch.
    listed: bool = False


class NewAudioCursor(BaseModel):
    """Sensor state between ticks; small (a few entries per day in the window)."""

    version: int = CURSOR_VERSION
    resume_after: str | None = None  # last key listed in the pass under way; None: new pass
    pending: dict[str, PendingDay] = Field(default_factory=dict)  # day -> not yet launched
    launched: dict[str, ObjectMark] = Field(default_factory=dict)  # day -> newest covered
    passes: int = 0

    @classmethod
    def parse(cls, text: str | None) -> NewAudioCursor:
        if not text:
            return cls()
        try:
            cursor = cls.model_validate_json(text)
        except ValidationError:
            # Starting over is safe: run keys derive from each day's newest object, so the
            # days already launched ask for the same run keys and Dagster launches nothing twice.
            log.warning("new_audio_cursor_unreadable", sensor=SENSOR_NAME)
            return cls()
        return cursor if cursor.version == CURSOR_VERSION else cls()

    def dump(self) -> str:
        return self.model_dump_json(exclude_defaults=False)


@dataclass
class ScanReport:
    """What one tick's listing saw; `cursor` is the state after it."""

    cursor: NewAudioCursor
    pages: int = 0
    keys: int = 0
    new_objects: int = 0
    ignored: int = 0
    pass_complete: bool = False
    seconds: float = 0.0


@dataclass
class LaunchPlan:
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    waiting: dict[str, datetime] = field(default_factory=dict)  # day -> settles at
    listing: list[str] = field(default_factory=list)  # days the pass has not listed to the end
    cursor: NewAudioCursor = field(default_factory=NewAudioCursor)


def partition_of_key(key: str, prefix: str) -> date | None:
    """The day a key belongs to under the `{prefix}YYYY-MM-DD/...` layout, else None."""
    if not key.startswith(prefix):
        return None
    segment, slash, _rest = key[len(prefix) :].partition("/")
    if not slash or not _DAY.match(segment):
        return None
    try:
        return date.fromisoformat(segment)
    except ValueError:
        return None


def watched_days(now: datetime, settings: NewAudioSettings) -> tuple[date, date]:
    """First and last day the sensor launches: the look-back window up to the newest partition."""
    today = now.astimezone(UTC).date()
    first = max(today - timedelta(days=settings.lookback_days), daily_partitions.start.date())
    # daily_partitions has end_offset=1: tomorrow's partition already exists (time zones ahead).
    return first, today + timedelta(days=1)


def day_listed_past(cursor: NewAudioCursor, day: str, prefix: str) -> bool:
    """Whether the scan position is past every key of `day`.

    A day's keys all sort before `{prefix}{day}0` ('0' follows '/'), so once the resume point is
    there the day is behind the scan; with no resume point the last pass was complete.
    """
    return cursor.resume_after is None or cursor.resume_after >= f"{prefix}{day}0"


def scan_store(
    store: ObjectStore,
    cursor: NewAudioCursor,
    now: datetime,
    settings: NewAudioSettings,
    clock: Callable[[], float] = time.monotonic,
) -> ScanReport:
    """List up to the tick's page budget from where the last tick stopped; note new objects."""
    first_day, last_day = watched_days(now, settings)
    prefix = settings.audio_prefix
    floor = f"{prefix}{first_day.isoformat()}"  # keys of older days sort before this
    ceiling = f"{prefix}{(last_day + timedelta(days=1)).isoformat()}"  # later days sort after
    start_after = max(cursor.resume_after or floor, floor)
    state = cursor.model_copy(deep=True)
    report = ScanReport(cursor=state)
    started = clock()
    while report.pages < settings.max_pages_per_tick:
        if report.pages and clock() - started >= settings.tick_budget_s:
            break
        page = store.list_page(prefix, start_after=start_after, max_keys=settings.page_size)
        report.pages += 1
        report.keys += len(page.objects)
        for info in page.objects:
            day = partition_of_key(info.key, prefix)
            if day is None or not first_day <= day <= last_day:
                report.ignored += 1
                continue
            day_key = day.isoformat()
            mark = ObjectMark.of(info)
            covered = state.launched.get(day_key)
            if covered is not None and mark.last_modified <= covered.last_modified:
                continue
            report.new_objects += 1
            current = state.pending.get(day_key)
            if current is None or mark.newer_than(current.newest):
                state.pending[day_key] = PendingDay(newest=mark, listed=False)
        done = page.next_token is None or (bool(page.objects) and page.objects[-1].key >= ceiling)
        if done:
            report.pass_complete = True
            state.resume_after = None
            state.passes += 1
            break
        start_after = page.next_token  # type: ignore[assignment]
        state.resume_after = start_after
    report.seconds = clock() - started
    for day_key, pending in state.pending.items():
        if day_listed_past(state, day_key, prefix):
            pending.listed = True
    # Days that left the window can no longer be launched: forget them.
    floor_key = first_day.isoformat()
    state.pending = {d: p for d, p in state.pending.items() if d >= floor_key}
    state.launched = {d: m for d, m in state.launched.items() if d >= floor_key}
    return report


def run_key_for(day: str, mark: ObjectMark) -> str:
    return f"{SENSOR_NAME}:{day}:{mark.digest}"


def plan_launches(cursor: NewAudioCursor, now: datetime, settings: NewAudioSettings) -> LaunchPlan:
    """Fully listed days whose newest object has settled become run requests; others wait."""
    settle = timedelta(seconds=settings.settle_s)
    plan = LaunchPlan(cursor=cursor.model_copy(deep=True))
    for day in sorted(cursor.pending):
        pending = cursor.pending[day]
        if not pending.listed:
            plan.listing.append(day)
            continue
        mark = pending.newest
        settles_at = mark.last_modified + settle
        if now < settles_at:
            plan.waiting[day] = settles_at
            continue
        plan.run_requests.append(
            dg.RunRequest(
                run_key=run_key_for(day, mark),
                partition_key=day,
                tags={
                    "asr/trigger": SENSOR_NAME,
                    "asr/newest_object_modified": mark.last_modified.isoformat(),
                },
            )
        )
        plan.cursor.launched[day] = mark
        del plan.cursor.pending[day]
    return plan


class ListingDeadlineExceededError(TimeoutError):
    """The store did not finish the tick's listing before the hard deadline."""


def _with_deadline(work: Callable[[], ScanReport], seconds: float) -> ScanReport:
    """Run `work` on a daemon thread and stop waiting after `seconds`.

    A hung connection can outlast the store's own timeouts and retries; the tick must not. The
    abandoned thread finishes (or fails) on its own and its result is dropped.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["report"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, re-raised there
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="new-audio-scan", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise ListingDeadlineExceededError(f"listing did not finish within {seconds:g}s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["report"]  # type: ignore[return-value]


def _waiting_message(waiting: dict[str, datetime], listing: list[str]) -> str:
    parts = []
    if waiting:
        days = ", ".join(
            f"{day} (settles {at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})"
            for day, at in sorted(waiting.items())
        )
        parts.append(f"{len(waiting)} day(s) with new audio still settling: {days}")
    if listing:
        parts.append(
            f"{len(listing)} day(s) with new audio still being listed: {', '.join(listing)}"
        )
    return "; ".join(parts)


def evaluate_new_audio(
    store: ObjectStore,
    catalog: ActivityCatalog,
    inference: InferenceResource,
    cursor_text: str | None,
    now: datetime,
    settings: NewAudioSettings,
) -> dg.SensorResult | dg.SkipReason:
    """One tick. Returns run requests with the new cursor, or a skip that says why."""
    reason = inference.unavailable_reason()
    if reason:
        return dg.SkipReason(f"Inference is unavailable, not looking for new audio: {reason}")
    cursor = NewAudioCursor.parse(cursor_text)
    try:
        report = _with_deadline(
            lambda: scan_store(store, cursor, now, settings), settings.tick_deadline_s
        )
    except (StoreUnavailableError, ListingDeadlineExceededError, UnsafeKeyError, OSError) as exc:
        log.warning("new_audio_store_unreachable", sensor=SENSOR_NAME, error=type(exc).__name__)
        return dg.SkipReason(
            f"Object store unreachable while listing {settings.audio_prefix!r}: {exc}"
        )
    plan = plan_launches(report.cursor, now, settings)
    log.info(
        "new_audio_tick",
        sensor=SENSOR_NAME,
        pages=report.pages,
        keys=report.keys,
        new_objects=report.new_objects,
        ignored=report.ignored,
        pass_complete=report.pass_complete,
        ready=len(plan.run_requests),
        waiting=len(plan.waiting),
        listing=len(plan.listing),
        latency_ms=round(report.seconds * 1000, 1),
    )
    if plan.run_requests:
        reason = catalog.unavailable_reason()
        if reason:
            # Keep the listing's progress; the ready days stay pending for the next tick.
            return dg.SensorResult(
                skip_reason=(
                    f"{len(plan.run_requests)} day(s) ready to score, but the catalog is "
                    f"unreachable: {reason}"
                ),
                cursor=report.cursor.dump(),
            )
        return dg.SensorResult(run_requests=plan.run_requests, cursor=plan.cursor.dump())
    if plan.waiting or plan.listing:
        return dg.SensorResult(
            skip_reason=_waiting_message(plan.waiting, plan.listing), cursor=plan.cursor.dump()
        )
    where = "pass complete" if report.pass_complete else "pass continues next tick"
    return dg.SensorResult(
        skip_reason=(
            f"No new audio under {settings.audio_prefix!r}: {report.keys} object(s) in "
            f"{report.pages} page(s) checked ({where})"
        ),
        cursor=plan.cursor.dump(),
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_new_audio_sensor(
    settings: NewAudioSettings | None = None, *, clock: Callable[[], datetime] = _utc_now
) -> dg.SensorDefinition:
    """The sensor with its settings (and, for tests, its clock) bound."""
    chosen = settings or NewAudioSettings()

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=TARGET_JOB,
        minimum_interval_seconds=chosen.interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Scores a day once new audio under '{chosen.audio_prefix}YYYY-MM-DD/' has been "
            f"quiet for {chosen.settle_s:g}s; one run per day, keyed by its newest object."
        ),
    )
    def new_audio(
        context: dg.SensorEvaluationContext,
        store: ObjectStore,
        catalog: ActivityCatalog,
        inference: InferenceResource,
    ) -> dg.SensorResult | dg.SkipReason:
        return evaluate_new_audio(store, catalog, inference, context.cursor, clock(), chosen)

    return new_audio


new_audio_sensor = build_new_audio_sensor()
