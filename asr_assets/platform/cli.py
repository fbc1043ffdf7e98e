"""`asr`: score days of read-aloud recordings and read their results from a terminal.

Every `score` is a real run of the `score_letters` job on the Dagster instance in DAGSTER_HOME
(default ./.dagster-home, as `make dev` uses), so it shows up in the UI and can be re-executed
there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from asr_assets.core.storage import CATALOG_PREFIX, result_prefix

if TYPE_CHECKING:
    import dagster as dg

SAMPLE_DAY = "2026-11-27"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_STORE = PROJECT_ROOT / "data" / "sample-store"
DEFAULT_DAGSTER_HOME = ".dagster-home"
USAGE_ERROR = 2

EPILOG = f"""\
examples:
  asr demo                                  score the sample day ({SAMPLE_DAY}), summarize it
  asr score 2026-11-26 2026-11-27           score two days, then print each day's summary
  asr --data-root /data/store --model-dir models/demo-letters score 2026-11-27
  asr score 2026-11-27 --allow-empty-day    score a day that has no activities on purpose
  asr summary 2026-11-27                    what a committed day holds
  asr --log-format json score 2026-11-27    JSON log records on stderr instead of progress lines
  asr erase --student-id ID --reason ...    remove a student's data everywhere (docs/privacy.md)
  asr retention --dry-run                   what the retention policy would delete

environment (flags win over variables):
  ASR_ENV            local (default) or aws (see docs/aws.md for the aws variables)
  ASR_DATA_ROOT      local store root (default ./.asr-data)
  ASR_MODEL_DIR      CTC model directory with SHA256SUMS (default models/demo-letters)
  ASR_FIRST_DAY      first partition day, YYYY-MM-DD (default 2026-11-01)
  ASR_EXECUTOR       in_process (default), multiprocess or k8s
  ASR_LOG_LEVEL      level of the asr_assets loggers (INFO)
  ASR_TORCH_THREADS, ASR_LOCAL_BACKEND, ASR_ONNX_INT8   local inference (see README.md)
  DAGSTER_HOME       Dagster instance that records the runs (default ./{DEFAULT_DAGSTER_HOME})
"""


class UsageError(Exception):
    """A mistake the user can fix: printed as `asr: error: ...` with a hint, exit code 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


# --- output -----------------------------------------------------------------------------------


class Console:
    """Human-readable lines on stdout; everything else (logs, bars) on stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, message: str, hint: str | None = None) -> None:
        print(f"asr: error: {message}", file=self.err, flush=True)
        if hint:
            print(f"  hint: {hint}", file=self.err, flush=True)


PROGRESS_LINE_EVERY_S = 5.0


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ProgressHandler(logging.Handler):
    """Turns the stages' structured records into one line per stage and an inference bar."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console
        self._bar: Any = None
        self._last_line = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = json.loads(record.getMessage())
        except (TypeError, ValueError):
            return
        if not isinstance(fields, dict):
            return
        event = fields.get("event")
        stage = str(fields.get("stage") or "")
        if event == "inference_progress":
            self._progress(fields)
        elif event == "partition_finished":
            self._close_bar()
            errored = fields.get("phrases_errored", 0)
            self.console.line(
                f"  {stage:<17}{fields.get('phrases_in', 0):>5} phrases"
                f"{f', {errored} errored' if errored else '':<14}"
                f"{float(fields.get('latency_ms', 0.0)) / 1000:6.1f} s"
                f"   {fields.get('partition', '')}"
            )
        elif event == "stage_failed":
            self._close_bar()
            self.console.line(f"  {stage:<17}FAILED ({fields.get('error', 'error')})")

    def _progress(self, fields: dict[str, Any]) -> None:
        from tqdm import tqdm

        total = int(fields.get("phrases_total") or 0)
        done = int(fields.get("phrases_done") or 0)
        if not _is_terminal(self.console.err):
            # A log file or CI: a plain line every few seconds instead of a redrawn bar.
            now = time.monotonic()
            if done < total and now - self._last_line < PROGRESS_LINE_EVERY_S:
                return
            self._last_line = now
            eta = fields.get("eta_s")
            self.console.line(
                f"  {'transcripts':<17}{done:>5}/{total} phrases, "
                f"{float(fields.get('phrases_per_s') or 0.0):.1f}/s"
                + (f", ETA {float(eta):.0f} s" if eta is not None and done < total else "")
            )
            return
        if self._bar is None:
            self._bar = tqdm(
                total=total,
                desc=f"  {'transcripts':<15}",
                unit="phrase",
                file=self.console.err,
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.update(done - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The records as they are (one JSON object per line), for `--log-format json` / a file."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter("%(message)s"))


@contextmanager
def log_output(
    console: Console, log_format: str, log_file: Path | None, verbose: bool
) -> Iterator[None]:
    """Route the `asr_assets` records for the length of a command."""
    logger = logging.getLogger("asr_assets")
    handlers: list[logging.Handler] = []
    if log_format == "json":
        handlers.append(JsonLinesHandler(console.err))
    else:
        handlers.append(ProgressHandler(console))
    file_stream = log_file.open("a") if log_file else None
    if file_stream is not None:
        handlers.append(JsonLinesHandler(file_stream))
    if verbose:
        logger.setLevel(logging.DEBUG)
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            if isinstance(handler, ProgressHandler):
                handler._close_bar()
        if file_stream is not None:
            file_stream.close()


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    data_root: Path
    model_dir: Path
    dagster_home: Path


def apply_settings(args: argparse.Namespace) -> Settings:
    """Flags override the ASR_* variables; defaults are resolved and shown, never implied."""
    from asr_assets.definitions import DEFAULT_DATA_ROOT, DEFAULT_MODEL_DIR

    if args.data_root:
        os.environ["ASR_DATA_ROOT"] = str(Path(args.data_root).resolve())
    if args.model_dir:
        os.environ["ASR_MODEL_DIR"] = str(Path(args.model_dir).resolve())
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    if not args.verbose:
        # transformers' weight-loading bar; the CLI prints its own progress.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return Settings(
        data_root=Path(os.environ.get("ASR_DATA_ROOT", DEFAULT_DATA_ROOT)).resolve(),
        model_dir=Path(os.environ.get("ASR_MODEL_DIR", str(DEFAULT_MODEL_DIR))).resolve(),
        dagster_home=home,
    )


def load_definitions() -> dg.Definitions:
    """The definitions, with configuration mistakes turned into usage errors."""
    from asr_assets.assets.partitions import FirstDayConfigError
    from asr_assets.definitions import (
        EnvironmentConfigError,
        UnknownEnvironmentError,
        build_definitions,
    )

    try:
        return build_definitions(os.environ)
    except (UnknownEnvironmentError, EnvironmentConfigError, FirstDayConfigError) as exc:
        raise UsageError(str(exc), "see `asr --help` for the ASR_* variables") from None


def instance_at(home: Path) -> dg.DagsterInstance:
    """The instance in `home`, created with the project's dagster.yaml on first use."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        shutil.copy2(PROJECT_ROOT / "dagster.yaml", config)
    return dg.DagsterInstance.from_config(str(home))


# --- commands ---------------------------------------------------------------------------------


def partition_bounds() -> tuple[str, str]:
    from asr_assets.assets.partitions import daily_partitions

    last = daily_partitions.get_last_partition_key()
    return daily_partitions.get_first_partition_key() or "", last or ""


def check_first_day() -> None:
    """ASR_FIRST_DAY shapes the partitions, read when the assets import: check it first."""
    from asr_assets.core.days import FirstDayConfigError, first_day

    try:
        first_day()
    except FirstDayConfigError as exc:
        raise UsageError(str(exc), "unset it or write the day as YYYY-MM-DD") from None


def check_partitions(days: Sequence[str]) -> None:
    from asr_assets.resources.preflight import partition_problems

    first, last = partition_bounds()
    problems = partition_problems(days, first, last)
    if problems:
        raise UsageError(
            "; ".join(p.message for p in problems),
            "; ".join(dict.fromkeys(p.hint for p in problems)),
        )


def score(
    days: Sequence[str],
    console: Console,
    settings: Settings,
    *,
    allow_empty_day: bool = False,
    verbose: bool = False,
) -> bool:
    """Preflight, then one `score_letters` run per day; True when every run succeeded."""
    check_partitions(days)
    definitions = load_definitions()
    prewarm = _engine_prewarmer(definitions)
    try:
        prewarm()
        return _score_days(days, console, settings, definitions, prewarm, allow_empty_day, verbose)
    finally:
        from asr_assets.resources.inference import discard_prewarmed_engines

        discard_prewarmed_engines()


def _engine_prewarmer(definitions: dg.Definitions) -> Callable[[], None]:
    """Loads the inference engine ahead of each run, when the run executes in this process.

    The in-process executor (the default) opens the engine in `transcripts`, after run
    creation and the catalog and audio stages; loading it on a thread from the start overlaps
    the two (1 s for a base-sized ONNX model). Other executors run stages in other processes,
    where an engine loaded here would be wasted.
    """
    import dagster as dg

    from asr_assets.definitions import executor_for

    inference = definitions.resources.get("inference")
    prewarm = getattr(inference, "prewarm", None)
    if executor_for(os.environ) is not dg.in_process_executor or not callable(prewarm):
        return lambda: None
    return prewarm


def _score_days(
    days: Sequence[str],
    console: Console,
    settings: Settings,
    definitions: dg.Definitions,
    prewarm: Callable[[], None],
    allow_empty_day: bool,
    verbose: bool,
) -> bool:
    from asr_assets.checks.summary import check_outcomes, format_check_outcomes
    from asr_assets.platform.runs import run_score_job
    from asr_assets.resources.preflight import preflight

    problems = preflight(definitions.resources, days, allow_empty_day=allow_empty_day)
    if problems:
        raise UsageError(
            "; ".join(p.message for p in problems),
            "; ".join(dict.fromkeys(p.hint for p in problems)),
        )
    console.line(f"data root    {settings.data_root}")
    console.line(f"model        {settings.model_dir}")
    console.line(f"runs in      {settings.dagster_home} (open them with `make dev`)")
    run_config: dict[str, object] = {
        "loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}}
    }
    if allow_empty_day:
        run_config["ops"] = {"activities": {"config": {"allow_empty_day": True}}}
    ok = True
    from asr_assets.platform.abandoned_runs import fail_abandoned_runs

    with instance_at(settings.dagster_home) as instance:
        fail_abandoned_runs(instance)  # killed earlier runs left STARTED: mark them failed
        for day in days:
            console.line()
            console.line(f"Scoring {day}")
            prewarm()  # the engine of the day before went with its run
            started = time.perf_counter()
            outcome = run_score_job(
                instance, day, run_config=run_config, tags={"asr/source": "cli"}
            )
            elapsed = time.perf_counter() - started
            status = "succeeded" if outcome.success else "FAILED"
            console.line(f"{day}: {status} in {elapsed:.1f} s (run {outcome.run_id})")
            for failure in outcome.failures:
                console.line(f"  failed step  {failure.step}")
                console.line(f"  cause        {failure.cause}")
            if verbose:
                for event in outcome.result.get_step_failure_events():
                    error = event.step_failure_data.error if event.step_failure_data else None
                    if error is not None:
                        print(error.to_string(), file=console.err)
            if outcome.failures:
                console.line("  details      the run's event log in the UI (`make dev`), or -v")
            for line in format_check_outcomes(check_outcomes(outcome.result)):
                console.line(line)
            if outcome.success:
                console.line()
                summarize(day, console)
            ok = ok and outcome.success
    return ok


def summarize(partition: str, console: Console) -> int:
    """Print what a committed partition holds; reads through its _SUCCESS manifest only."""
    import pyarrow as pa

    from asr_assets.assets.published_scores import PartitionNotCommittedError, read_manifest
    from asr_assets.checks.summary import quarantine_status
    from asr_assets.core.tables import RESULT_SCHEMAS, value_counts

    resources = load_definitions().resources
    store = resources["store"]
    try:
        manifest = read_manifest(store, partition)
    except PartitionNotCommittedError as exc:
        raise UsageError(
            f"not committed: {exc}", f"score it first: asr score {partition}"
        ) from None
    _audit_summary_read(store, partition)

    def column(name: str, field: str) -> pa.ChunkedArray:
        # Counted as Arrow, column by column: a large day's letters as Python rows cost
        # hundreds of megabytes for a few numbers.
        schema = pa.schema([RESULT_SCHEMAS[name].field(field)])
        return store.read_table(manifest.files[name], schema).column(field)

    statuses = value_counts(column("letter_scores", "status"))
    expected = sum(statuses.values()) - statuses.get("inserted", 0)
    activities = set(column("phrase_results", "activity_id").unique().to_pylist()) | set(
        column("errors", "activity_id").unique().to_pylist()
    )
    reasons = value_counts(column("errors", "reason_code"))
    share = statuses.get("correct", 0) / expected if expected else 0.0
    out = console.line
    out(f"Partition {partition} (run {manifest.run_id})")
    model = manifest.model
    out(f"  model            {model.name} {model.version} ({model.sha256[:12]})")
    out(f"  activities       {len(activities)}")
    out(
        f"  phrases          {manifest.phrases_in} in = {manifest.phrases_scored} scored"
        f" + {manifest.phrases_errored} errored"
    )
    out(f"  expected letters {expected} (+{statuses.get('inserted', 0)} inserted)")
    out(f"  share correct    {share:.1%}" if expected else "  share correct    n/a (no letters)")
    out("  letters          " + ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    out(
        "  errors           "
        + (", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none")
    )
    out(f"  results          {store.uri(result_prefix('letter_scores', partition))}")
    for table in ("phrase_results", "errors"):
        out(f"                   {store.uri(result_prefix(table, partition))}")
    publisher = resources["publisher"]
    out(f"  published        {publisher.destination(partition)}")
    out(quarantine_status(store, partition))
    return 0


def _audit_summary_read(store: Any, partition: str) -> None:
    """Reading results is an audited access (docs/privacy.md)."""
    from asr_assets.core.privacy import AuditAction
    from asr_assets.platform.privacy import actor, audit_read

    audit_read(
        store,
        action=AuditAction.READ_RESULTS,
        resource=f"results/activity_date={partition}",
        purpose=os.environ.get("ASR_ACCESS_PURPOSE", "cli summary"),
        channel="cli",
        who=actor(os.environ),
    )


def prepare_sample(data_root: Path) -> None:
    """Copy the shipped sample day into the data root unless that day is already there."""
    target = data_root / CATALOG_PREFIX / f"activity_date={SAMPLE_DAY}"
    if target.exists():
        return
    for source in SAMPLE_STORE.rglob("*"):
        if source.is_file() and not source.name.endswith(".md"):
            destination = data_root / source.relative_to(SAMPLE_STORE)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _score_command(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    ok = score(
        args.days,
        console,
        settings,
        allow_empty_day=args.allow_empty_day,
        verbose=args.verbose,
    )
    return 0 if ok else 1


def _summary_command(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    check_partitions([args.day])
    return summarize(args.day, console)


def _demo_command(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    settings.data_root.mkdir(parents=True, exist_ok=True)
    prepare_sample(settings.data_root)
    return 0 if score([SAMPLE_DAY], console, settings, verbose=args.verbose) else 1


def _add_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("days", nargs="+", metavar="YYYY-MM-DD", help="days to score")
    parser.add_argument(
        "--allow-empty-day",
        action="store_true",
        help="score a day with no catalog rows (otherwise that is an error)",
    )


def _add_summary(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("day", metavar="YYYY-MM-DD")


@dataclass(frozen=True)
class Command:
    """One subcommand: how it parses and what it runs. Add a command by adding one of these."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Console, Settings], int]


COMMANDS: list[Command] = [
    Command("score", "score days end to end, then summarize each", _add_score, _score_command),
    Command("summary", "summarize a committed day", _add_summary, _summary_command),
    Command(
        "demo",
        f"score the shipped sample day ({SAMPLE_DAY}) into the data root",
        lambda _: None,
        _demo_command,
    ),
]


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before or after the subcommand (`asr --verbose score ...` or after)."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--data-root",
        default=default,
        metavar="DIR",
        help="local store root (ASR_DATA_ROOT; default ./.asr-data)",
    )
    parser.add_argument(
        "--model-dir",
        default=default,
        metavar="DIR",
        help="model directory (ASR_MODEL_DIR; default models/demo-letters)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="Dagster's own event log on stderr, DEBUG records, tracebacks",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default if suppress else "text",
        help="text: progress lines (default); json: the structured log records on stderr",
    )
    parser.add_argument(
        "--log-file",
        default=default,
        metavar="PATH",
        help="also append the structured log records (JSON lines) to PATH",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common_options(sub, suppress=True)
        command.configure(sub)
    return parser


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["erase"], ["retention"]):  # privacy commands (asr_assets/platform/privacy.py)
        from asr_assets.platform import privacy

        return privacy.main(argv)
    console = console or Console()
    parser = build_parser()
    args = parser.parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        check_first_day()
        settings = apply_settings(args)
        with log_output(
            console,
            args.log_format,
            Path(args.log_file).resolve() if args.log_file else None,
            args.verbose,
        ):
            return command.run(args, console, settings)
    except UsageError as exc:
        console.error(str(exc), exc.hint)
        return USAGE_ERROR
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130


def entry() -> NoReturn:
    """The `asr` console script: `main`, then a prompt exit.

    Why not `sys.exit`: after a run, interpreter finalization (tearing down the ~3,000 modules
    Dagster, pandas and ONNX Runtime load) took 0.9 s of a 5.5 s one-day run, and nothing needs
    it: the instance and stores are closed by their context managers before `main` returns.
    Exit handlers (telemetry exporters among them) and logging still run and flush first.
    """
    code = main()
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
