"""What the console shows: one live progress per step, the project's summaries, other tools' chatter on request.

By default a run prints the one-line summaries of the project's own loggers and a live
progress display (rich) while a pipeline runs; Kedro's node-by-node lines, Ultralytics'
banners and per-batch bars, ONNX export logs and MLflow's artifact bars stay hidden.
``CV_PIPELINES_VERBOSE=1`` (``--verbose`` of the main job, ``make demo VERBOSE=1``)
shows them all again, and the levels in ``conf/logging.yml`` (``kedro``,
``kedro_mlflow``) can turn each library's log on by itself.

Kept free of heavy imports: ``settings.py`` imports it on every ``kedro`` command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from kedro.framework.hooks import hook_impl

#: Set to 1 (or true) to see every tool's own output.
VERBOSE_ENV = "CV_PIPELINES_VERBOSE"

#: Switches that the libraries read once, when first imported; a value the user set wins.
QUIET_ENVIRONMENT = {
    # Ultralytics' logger at ERROR and its progress bars off (``ultralytics_settings_offline``
    # puts the logger back to WARNING once imported, so its warnings still show).
    "YOLO_VERBOSE": "False",
    # MLflow's own INFO lines ("Creating initial MLflow database tables", "Validating
    # input example") and the bars of every artifact download.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # With a tracking server, two "View run/experiment at <url>" lines at every run's end.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

#: The loggers that verbose mode brings down to INFO (``conf/logging.yml`` keeps them at WARNING).
CHATTY_LOGGERS = ("kedro", "kedro_mlflow", "mlflow")


def verbose() -> bool:
    """Whether the user asked to see every tool's own output (``CV_PIPELINES_VERBOSE``)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


#: The levels conf/logging.yml gave loggers that their library resets when imported.
_configured_levels: dict[str, int] = {}
_RESET_ON_IMPORT = ("kedro_mlflow", "ultralytics")


def apply_console_defaults() -> None:
    """Quiet the libraries by default; in verbose mode, let every one of them speak at INFO."""
    for name in _RESET_ON_IMPORT:
        _configured_levels.setdefault(name, logging.getLogger(name).level)
    if verbose():
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def third_party_level(name: str) -> int:
    """The level for library ``name``'s own logger: INFO when verbose, else conf/logging.yml's, else WARNING."""
    if verbose():
        return logging.INFO
    return _configured_levels.get(name) or logging.WARNING


def restore_logger_level(name: str) -> None:
    """Put logger ``name`` (and its handlers) back at ``third_party_level`` after its library reset it."""
    level = third_party_level(name)
    logger = logging.getLogger(name)
    logger.setLevel(level)
    for handler in logger.handlers:
        handler.setLevel(level)


# --- live progress ----------------------------------------------------------------------

_live_lock = threading.Lock()
_live: Any = None  # the rich Progress of the pipeline now running, if any


def _start(progress: Any) -> list[tuple[logging.StreamHandler, IO[str]]]:
    """Start ``progress``; the root's stream handlers then write through rich, above the display.

    In a terminal rich replaces ``sys.stderr`` with a proxy that prints above the live
    display; ``conf/logging.yml``'s handler still holds the stream it was given and would
    write through the display and garble it. Returns the handlers to put back.
    """
    if not progress.console.is_interactive:
        # No terminal (a log file, CI, a pipe): nothing live to draw, and rich's Progress
        # would print an empty line when it stops. Its rows still count, undrawn.
        return []
    before = sys.stderr
    progress.start()
    return [
        (handler, handler.setStream(sys.stderr) or before)
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is before
    ]


def _stop(progress: Any, swapped: list[tuple[logging.StreamHandler, IO[str]]]) -> None:
    for handler, stream in swapped:
        handler.setStream(stream)
    if progress.live.is_started:
        progress.stop()


def _new_progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # Transient: in a terminal the display goes once its step is done, and the step's
    # one-line summary stays; in a log file (no terminal) rich draws nothing at all.
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        transient=True,
    )


@contextlib.contextmanager
def step_progress(description: str, total: float | None) -> Iterator[StepTask]:
    """A row of the live progress display for one piece of work, as long as the context lasts.

    Inside a pipeline run the row joins the run's display (``ProgressHooks``); elsewhere
    (a notebook, a direct call) it gets a display of its own.
    """
    with _live_lock:
        progress = _live
    own = progress is None
    if own:
        progress = _new_progress()
        swapped = _start(progress)
    task = progress.add_task(description, total=total, status="")
    try:
        yield StepTask(progress, task)
    finally:
        progress.remove_task(task)
        if own:
            _stop(progress, swapped)


class StepTask:
    """One row of the live progress display: move it on and say where it stands."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, *, completed: float | None = None, total: float | None = None, status: str | None = None) -> None:
        """Set how much is done, of how much, and the short status text shown after the bar."""
        fields: dict[str, Any] = {}
        if completed is not None:
            fields["completed"] = completed
        if total is not None:
            fields["total"] = total
        if status is not None:
            fields["status"] = status
        self._progress.update(self._task, **fields)


class ProgressHooks:
    """One live progress display per pipeline run: the pipeline's row counts its nodes as they finish.

    Work inside a node that takes a while (a training) adds its own row (``step_progress``).
    """

    def __init__(self) -> None:
        self._task: Any = None
        self._swapped: list[tuple[logging.StreamHandler, IO[str]]] = []

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline) -> None:
        """Open the run's display with one row for its nodes."""
        global _live
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        progress = _new_progress()
        self._task = progress.add_task(", ".join(names), total=len(pipeline.nodes), status="")
        self._swapped = _start(progress)
        with _live_lock:
            _live = progress

    @hook_impl
    def before_node_run(self, node) -> None:
        """Name the node now running."""
        progress = _live
        if progress is not None:
            progress.update(self._task, status=node.name)

    @hook_impl
    def after_node_run(self, node) -> None:
        """Count the node done."""
        progress = _live
        if progress is not None:
            progress.advance(self._task)  # rich's Progress is thread-safe: ThreadRunner finishes nodes in parallel

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Close the display: the step's summary lines stay."""
        self._close()

    @hook_impl
    def on_pipeline_error(self) -> None:
        """Close the display before the error's sentence is printed."""
        self._close()

    def _close(self) -> None:
        global _live
        with _live_lock:
            progress, _live = _live, None
        if progress is not None:
            _stop(progress, self._swapped)
            self._swapped = []


@contextlib.contextmanager
def stderr_as_log(logger_name: str) -> Iterator[None]:
    """Send what a library prints on stderr to ``logger_name`` at INFO, line by line, for the context.

    For libraries that ``print`` to stderr instead of logging (MLflow's "Created version
    '3' of model ..."): verbose mode or an INFO level for that logger shows it.
    """
    import io

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        log = logging.getLogger(logger_name)
        for line in captured.getvalue().splitlines():
            if line.strip():
                log.info("%s", line)
