"""Quiet by default: the steps' summaries and one live progress; every tool's own output on request."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest
from rich.console import Console

from cv_pipelines.config import console
from tests.conftest import project_env, run_kedro

#: What the libraries print on their own when nobody asked (each seen in `make demo` before).
CHATTER = ("Running node", "Completed node", "Pipeline execution completed", "Using 'conf/logging.yml'",
           "Registering new custom resolver", "Workflow tracking is disabled", "kedro-mlflow logging is deactivated")


def test_a_run_prints_the_steps_summaries_and_only_verbose_mode_the_libraries_lines(project):
    quiet = run_kedro(project, "run", "--pipelines", "ingestion", "--env", "test")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    printed = quiet.stdout + quiet.stderr
    assert "Ingestion of data/incoming" in printed  # the step's own summary
    assert not [line for line in printed.splitlines() if any(chatter in line for chatter in CHATTER)], printed
    assert len(printed.splitlines()) <= 3, printed

    verbose = run_kedro(project, "run", "--pipelines", "ingestion", "--env", "test",
                        env=project_env(project, CV_PIPELINES_VERBOSE="1"))
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "Running node: check_incoming_images" in verbose.stderr
    assert "Ingestion of data/incoming" in verbose.stderr


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """The live displays draw on a terminal console of 160 columns whose output is this buffer."""
    from rich.progress import Progress

    screen = io.StringIO()
    terminal_console = Console(file=screen, force_terminal=True, force_interactive=True, width=160)
    make = console._new_progress

    def on_terminal() -> Progress:
        progress = make()
        progress.live.console = terminal_console
        return progress

    monkeypatch.setattr(console, "_new_progress", on_terminal)
    return screen


class _Pipeline:
    nodes = ("a", "b")


def test_in_a_terminal_log_lines_print_above_the_display_and_the_display_goes_when_the_run_ends(terminal):
    import sys

    stderr = sys.stderr
    handler = logging.StreamHandler(stderr)  # as conf/logging.yml's console handler
    root = logging.getLogger()
    root.addHandler(handler)
    hooks = console.ProgressHooks()
    try:
        hooks.before_pipeline_run({"pipeline_names": ["export"]}, _Pipeline())
        assert console._live is not None and console._live.live.is_started
        # rich put a proxy on stderr that prints above its display; the handler writes there now.
        assert handler.stream is sys.stderr and sys.stderr is not stderr
        hooks.before_node_run(SimpleNamespace(name="select_export_images"))
        logging.getLogger("cv_pipelines.test").warning("a summary line")
        hooks.after_node_run(SimpleNamespace(name="select_export_images"))
        [row] = console._live.tasks
        assert (row.description, row.completed, row.total) == ("export", 1, 2)
        assert row.fields["status"] == "select_export_images"
        hooks.after_pipeline_run()
    finally:
        root.removeHandler(handler)
    assert console._live is None
    assert handler.stream is stderr and sys.stderr is stderr  # both given back
    drawn = terminal.getvalue()
    assert "a summary line" in drawn and "select_export_images" in drawn


def test_without_a_terminal_nothing_is_drawn_and_nothing_redirected(capsys):
    hooks = console.ProgressHooks()
    hooks.before_pipeline_run({"pipeline_names": ["ingestion"]}, _Pipeline())
    with console.step_progress("Checking images", total=3) as row:
        row.update(completed=3)
    hooks.after_pipeline_run()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


class _Trainer:
    """What LiveTraining reads of Ultralytics' trainer, with the values a detection training has."""

    loss_names = ("box_loss", "cls_loss", "dfl_loss")

    def __init__(self, epoch: int, epochs: int) -> None:
        self.epoch, self.epochs = epoch, epochs
        self.train_loader = [None] * 4
        self.tloss = None
        self.metrics: dict[str, float] = {}

    def label_loss_items(self, loss_items, prefix="train"):
        from ultralytics.engine.trainer import BaseTrainer

        return BaseTrainer.label_loss_items(self, loss_items, prefix)  # type: ignore[arg-type]


def test_the_training_row_shows_epoch_running_losses_and_the_last_validation(terminal):
    from cv_pipelines.models.training import LiveTraining

    with console.step_progress("epochs", total=3) as row:
        live = LiveTraining(row)
        trainer = _Trainer(epoch=1, epochs=3)  # a resumed training: epoch 1 was done before
        live.on_train_epoch_start(trainer)
        trainer.tloss = {"box_loss": 1.23456, "cls_loss": 2.5, "dfl_loss": 1.0}
        live.on_train_batch_end(trainer)
        shown = row._progress.tasks[-1]
        assert shown.completed == pytest.approx(1.25) and shown.total == 3
        assert shown.fields["status"] == "epoch 2/3  box 1.235  cls 2.500  dfl 1.000"
        trainer.metrics = {"metrics/mAP50(B)": 0.5, "metrics/mAP50-95(B)": 0.25}
        live.on_fit_epoch_end(trainer)
        assert shown.completed == 2
        trainer.epoch = 2
        live.on_train_epoch_start(trainer)
        assert shown.fields["status"] == "epoch 3/3  val mAP50 0.500 mAP50-95 0.250"
        row._progress.refresh()
    assert "epoch 3/3  val mAP50 0.500 mAP50-95 0.250" in terminal.getvalue()
