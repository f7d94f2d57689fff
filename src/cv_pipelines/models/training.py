"""Ultralytics YOLO training and evaluation on a versioned export, without the pipeline glue.

Training runs into its own folder, ``<training_dir>/<UTC time>_<MLflow run id>/``, named
before Ultralytics starts so no run ever writes over another; ``run.yaml`` there
records the export it trains on, and ``training_summary.yaml`` is written last, so a
folder with ``weights/last.pt`` and no summary is an interrupted run that
``resume`` can pick up. The node layer (``pipelines/training``) talks to MLflow; this
module only knows files and Ultralytics, so it is usable from a notebook as well.

Heavy imports (torch, ultralytics) stay inside the functions that need them.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cv_pipelines.config.parameters import TrainingParams
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.versions import ExportRef, write_data_yaml
from cv_pipelines.files.atomic import write_text_atomically
from cv_pipelines.files.run_folders import RunFolders

if TYPE_CHECKING:
    from cv_pipelines.config.console import StepTask

logger = logging.getLogger(__name__)

RUN_FILE = "run.yaml"
SUMMARY_FILE = "training_summary.yaml"
DATA_FILE = "data.yaml"


# --- the parameters a run trains with -----------------------------------------------------


def parameters_hash(training: TrainingParams) -> str:
    """A digest of the training parameters that change the model (not ``resume`` nor the export's pin)."""
    import hashlib
    import json

    relevant = training.model_dump(mode="json", exclude={"resume", "export_version"})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- model families -----------------------------------------------------------------------


def model_family(model: str) -> str:
    """``rtdetr`` for an RT-DETR model name (Ultralytics' own rule in its CLI), else ``yolo``."""
    return "rtdetr" if "rtdetr" in Path(str(model)).name.lower() else "yolo"


def ultralytics_model(source: str | Path, family: str | None = None):
    """The Ultralytics model object for a model YAML or weights file of ``family``.

    Weights files (``best.pt``) do not say their family in their name, so callers
    that load weights pass the family recorded at training time.
    """
    family = family or model_family(str(source))
    if family == "rtdetr":
        from ultralytics import RTDETR  # heavy import kept local

        return RTDETR(str(source))
    from ultralytics import YOLO  # heavy import kept local

    return YOLO(str(source), task="detect")  # the project's models are detectors, whatever the file says


# --- device ------------------------------------------------------------------------------


class DeviceUnavailableError(ValueError):
    """The device asked for is not a device, or not one this machine has.

    The sentence says what was asked, what this machine has and the fix, and names no
    parameter: the caller knows which key set the device, and ``naming(key)`` puts it in.
    """

    def __init__(self, asked: str, problem: str, fix: str) -> None:
        self.asked = asked
        self.problem = problem
        self.fix = fix
        super().__init__(self.naming("the device"))

    def naming(self, key: str) -> str:
        """The same sentence with ``key`` (a parameter key such as ``training.device``) as its subject."""
        return f"{key} is {self.asked!r} but {self.problem}; {self.fix}"


def check_device(device: str | int | list | tuple) -> str:
    """Ultralytics' device string for ``device`` (``cpu``, ``mps``, ``0``, ``0,1``), checked before anything starts.

    Raises ``DeviceUnavailableError`` when it is not a device or this machine lacks it.
    Ultralytics' ``select_device`` does the parsing and the checks; it is called here
    because Ultralytics itself finds a missing GPU only after building the model and the
    data loaders, and explains it in several lines about CUDA_VISIBLE_DEVICES.
    """
    asked = ",".join(str(item) for item in device) if isinstance(device, (list, tuple)) else str(device)
    if asked.strip().lower().replace(" ", "") == "cpu":
        return "cpu"  # always there: no reason to import torch and Ultralytics for it
    import torch  # heavy imports kept local
    from ultralytics.utils.torch_utils import parse_device, select_device

    # Quiet: Ultralytics logs its version banner before refusing a GPU, and NVML warnings
    # while looking for an idle one ('-1').
    with _ultralytics_quiet():
        wanted = parse_device(asked)  # 'cuda:0' -> '0', '[0, 1]' -> '0,1', '-1' -> an idle GPU
        try:
            selected = select_device(wanted, verbose=False)
        except ValueError:
            raise _unavailable(asked, wanted) from None
    if not isinstance(selected, torch.device):  # tpu, intel, vulkan: Ultralytics' own strings, passed through
        return str(selected)
    if wanted in {"mps", "mps:0"} and selected.type != "mps":  # select_device falls back to the CPU silently
        raise DeviceUnavailableError(asked, "Apple's Metal backend is not available here", "use cpu")
    if selected.type == "cuda":
        return wanted or str(selected.index)  # select_device gives the first of several GPUs only
    return selected.type


def _unavailable(asked: str, wanted: str) -> DeviceUnavailableError:
    """Why ``select_device`` refused ``wanted``, in one short sentence."""
    import torch  # heavy import kept local

    backend = wanted.partition(":")[0]
    if backend in {"npu", "xpu"}:
        return DeviceUnavailableError(asked, f"this machine has no usable {backend.upper()} device for it", "use cpu")
    indices = wanted.split(",")
    if not all(index.isdigit() for index in indices):
        return DeviceUnavailableError(
            asked, "that is not a device", "use cpu, mps, a GPU index such as 0, or a list such as 0,1"
        )
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        return DeviceUnavailableError(
            asked,
            f"this machine has no usable CUDA GPU (torch {torch.__version__} sees none)",
            "use cpu, or run where a GPU is visible",
        )
    missing = [index for index in indices if int(index) >= available]
    return DeviceUnavailableError(
        asked,
        f"GPU {', '.join(missing)} does not exist: this machine has {available} (0..{available - 1})",
        f"use GPU indices 0 to {available - 1}, or cpu",
    )


@contextmanager
def _ultralytics_quiet() -> Iterator[None]:
    """A context in which Ultralytics' logger says nothing below an error."""
    ultralytics_logger = logging.getLogger("ultralytics")
    level = ultralytics_logger.level
    ultralytics_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ultralytics_logger.setLevel(level)


# --- run folders -------------------------------------------------------------------------


def start_run_folder(folders: RunFolders, run_id: str | None, export: ExportRef, record: Mapping[str, Any]) -> Path:
    """A new run folder holding ``run.yaml`` (``record``: what the run trains on) and ``data.yaml``."""
    run_dir = folders.new(run_id)
    write_text_atomically(run_dir / RUN_FILE, yaml.safe_dump(dict(record), sort_keys=False))
    write_data_yaml(export, run_dir / DATA_FILE)
    return run_dir


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """The ``run.yaml`` a run folder was started with."""
    return yaml.safe_load((run_dir / RUN_FILE).read_text(encoding="utf-8")) or {}


def finish_run_folder(run_dir: Path, summary: Mapping[str, Any]) -> None:
    """Write the run's summary: a run folder with one is finished and never resumed."""
    write_text_atomically(run_dir / SUMMARY_FILE, yaml.safe_dump(dict(summary), sort_keys=False))


def interrupted_run(folders: RunFolders, wanted: str | None = None) -> Path:
    """The run folder to resume: ``wanted`` (a folder or its ``last.pt``), else the newest
    run that has a ``last.pt`` and never finished."""
    training_dir = folders.root
    if wanted:
        path = Path(wanted)
        folder = path.parent.parent if path.suffix == ".pt" else path
        if not folder.is_absolute():
            folder = training_dir / folder if (training_dir / folder).is_dir() else folder.resolve()
        if not (folder / "weights/last.pt").is_file():
            raise ConfigurationError(f"cannot resume {wanted}: there is no weights/last.pt in {folder}")
        if (folder / SUMMARY_FILE).is_file():
            raise ConfigurationError(f"cannot resume {folder.name}: that training finished; start a new one instead")
        return _check_checkpoint(folder)
    for folder in reversed(folders.all(RUN_FILE)):
        if (folder / "weights/last.pt").is_file() and not (folder / SUMMARY_FILE).is_file():
            return _check_checkpoint(folder)
    raise ConfigurationError(
        f"training.resume is set but no interrupted training (a run folder with weights/last.pt and no "
        f"{SUMMARY_FILE}) exists in {training_dir}; set training.resume: false to start a new one"
    )


def _check_checkpoint(folder: Path) -> Path:
    """``folder`` if its ``weights/last.pt`` is a whole checkpoint (a zip whose members all read back)."""
    import zipfile

    last = folder / "weights/last.pt"
    try:
        with zipfile.ZipFile(last) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        damaged = str(exc)
    if damaged is not None:
        raise ConfigurationError(
            f"cannot resume {folder.name}: its weights/last.pt is not a whole checkpoint ({damaged}); "
            "start a new training with training.resume: false"
        )
    return folder


def _write_checkpoints_atomically(trainer) -> None:
    """Make the Ultralytics ``trainer`` write ``last.pt`` and ``best.pt`` whole or not at all.

    Ultralytics rewrites them in place at every epoch, so a kill during a write would
    leave a torn ``last.pt`` to resume from; here each is written beside itself and
    renamed over the old one (``os.replace`` is atomic).
    """
    import os

    save_model = trainer.save_model

    def save_model_atomically() -> bool:
        final = {"last": trainer.last, "best": trainer.best}
        partial = {name: path.with_name(f".{path.name}.partial") for name, path in final.items()}
        for path in partial.values():
            path.unlink(missing_ok=True)  # left by a kill: best.pt is written only when it improves
        trainer.last, trainer.best = partial["last"], partial["best"]
        try:
            saved = save_model()
        finally:
            trainer.last, trainer.best = final["last"], final["best"]
        for name, path in partial.items():
            if path.exists():
                os.replace(path, final[name])
        return saved

    trainer.save_model = save_model_atomically


# --- metrics ------------------------------------------------------------------------------

#: What ``train_yolo`` calls after each epoch: the epoch (counted from 1, as in
#: ``results.csv``) and its metrics, named by ``metric_name``.
EpochCallback = Callable[[int, dict[str, float]], None]

_VALIDATION_METRIC = re.compile(r"metrics/(.+)\(B\)")


def metric_name(column: str) -> str | None:
    """An MLflow metric name for one of Ultralytics' metric keys (a column of its ``results.csv``).

    MLflow refuses parentheses in names: ``metrics/mAP50(B)`` becomes ``val/mAP50``;
    ``time`` (seconds since training started) becomes ``train/elapsed_s``; ``epoch`` is
    the step, not a metric (None).
    """
    column = column.strip()
    if column == "epoch":
        return None
    if column == "time":
        return "train/elapsed_s"
    match = _VALIDATION_METRIC.fullmatch(column)
    name = f"val/{match.group(1)}" if match else column
    return re.sub(r"[^\w./\- :]", "_", name)


def epoch_metrics(trainer, *, validated: bool = True) -> dict[str, float]:
    """The metrics of the epoch an Ultralytics ``trainer`` just finished, named by ``metric_name``.

    The same values ``results.csv`` gets for that epoch, taken where Ultralytics' own
    MLflow callback takes them: the training losses, the validation metrics and the
    learning rates of the trainer, plus the seconds since training started. Without
    ``validated`` (the epoch was not validated: ``val: false`` validates the last epoch
    only) the validation metrics are left out rather than reported as the zeros that
    Ultralytics keeps in their place.
    """
    values: dict[str, Any] = {"time": time.time() - trainer.train_time_start}
    if trainer.tloss is not None:  # None when no batch ran: label_loss_items would give bare names
        values |= trainer.label_loss_items(trainer.tloss, prefix="train")
    if validated:
        values |= trainer.metrics or {}
    values |= trainer.lr or {}
    return {name: float(value) for key, value in values.items() if (name := metric_name(key)) is not None}


class EpochReporter:
    """Ultralytics callbacks that hand each finished epoch to an ``EpochCallback`` and keep count.

    ``last_epoch`` is the last epoch reported (0 before the first): on a resumed
    training it counts the epochs before the resume too, as Ultralytics numbers them.
    """

    def __init__(self, on_epoch_end: EpochCallback | None = None) -> None:
        self._on_epoch_end = on_epoch_end
        self._trained_epoch: int | None = None
        self._metrics_before_validation: object = None
        self.last_epoch = 0

    def register(self, model) -> None:
        """Hook into the training of the Ultralytics ``model`` (``model.add_callback``)."""
        model.add_callback("on_train_epoch_end", self.on_train_epoch_end)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    def on_train_epoch_end(self, trainer) -> None:
        """Note the epoch whose training passes just ended; its validation follows."""
        self._trained_epoch = trainer.epoch
        self._metrics_before_validation = trainer.metrics

    def on_fit_epoch_end(self, trainer) -> None:
        """Report the epoch just trained and validated."""
        # Ultralytics fires on_fit_epoch_end once more after the last epoch, for its final
        # validation of best.pt, with the epoch counter moved one on; on_train_epoch_end
        # fires for epochs only, so that call reports nothing.
        if trainer.epoch != self._trained_epoch:
            return
        self._trained_epoch = None
        # A validation replaces trainer.metrics with a new dict; an epoch it skipped
        # (``val: false``) keeps the placeholder of zeros set up before the first epoch.
        validated = trainer.metrics is not self._metrics_before_validation
        self.report(trainer.epoch + 1, epoch_metrics(trainer, validated=validated))

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        """Count ``epoch`` done and pass it and its ``metrics`` on."""
        self.last_epoch = epoch
        if self._on_epoch_end is not None:
            self._on_epoch_end(epoch, metrics)


class LiveTraining:
    """Ultralytics callbacks that keep a row of the live progress display on a training.

    The row moves on batch by batch and shows the epoch, the running training losses and
    the last validation's mAP; Ultralytics' own per-batch bars stay off (see
    ``config.console``).
    """

    def __init__(self, row: StepTask) -> None:
        self._row = row
        self._batches_done = 0
        self._validation = ""

    def register(self, model) -> None:
        """Hook into the training of the Ultralytics ``model`` (``model.add_callback``)."""
        model.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        model.add_callback("on_train_batch_end", self.on_train_batch_end)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    def on_train_epoch_start(self, trainer) -> None:
        """A new epoch: count its batches from 0 (a resumed training starts past its checkpoint's epochs)."""
        self._batches_done = 0
        self._row.update(total=trainer.epochs, completed=trainer.epoch, status=self._status(trainer))

    def on_train_batch_end(self, trainer) -> None:
        """Move on by one batch and show the epoch's running losses."""
        self._batches_done += 1
        batches = max(len(trainer.train_loader), 1)
        self._row.update(completed=trainer.epoch + self._batches_done / batches, status=self._status(trainer))

    def on_fit_epoch_end(self, trainer) -> None:
        """An epoch validated: keep its mAP for the rows that follow."""
        metrics = trainer.metrics or {}
        if "metrics/mAP50-95(B)" in metrics:
            self._validation = (
                f"  val mAP50 {metrics['metrics/mAP50(B)']:.3f} mAP50-95 {metrics['metrics/mAP50-95(B)']:.3f}"
            )
        self._row.update(completed=min(trainer.epoch + 1, trainer.epochs), status=self._status(trainer))

    def _status(self, trainer) -> str:
        epoch = f"epoch {min(trainer.epoch + 1, trainer.epochs)}/{trainer.epochs}"
        if trainer.tloss is None or not self._batches_done:
            return epoch + self._validation
        losses = trainer.label_loss_items(trainer.tloss, prefix="")
        running = "  ".join(f"{name.strip('/').removesuffix('_loss')} {value:.3f}" for name, value in losses.items())
        return f"{epoch}  {running}{self._validation}"


def _watched_model(model: str | Path, family: str, reporter: EpochReporter, row: StepTask) -> Any:
    """The Ultralytics model of ``model``, its checkpoints written atomically, its epochs reported and shown."""
    yolo = ultralytics_model(model, family)
    yolo.add_callback("on_pretrain_routine_start", _write_checkpoints_atomically)
    reporter.register(yolo)
    LiveTraining(row).register(yolo)
    return yolo


def results_csv_epochs(results_csv: Path) -> Iterator[tuple[int, dict[str, float]]]:
    """The epochs of Ultralytics' ``results.csv`` as an ``EpochCallback`` receives them, in order."""
    with open(results_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            row = {key.strip(): value for key, value in row.items() if key is not None}
            metrics = {
                name: float(value)
                for column, value in row.items()
                if (name := metric_name(column)) is not None and value not in (None, "")
            }
            yield int(float(row["epoch"])), metrics


# --- training -----------------------------------------------------------------------------


@dataclass
class TrainingResult:
    """One finished (or resumed) Ultralytics training: its folder, weights, epochs, time and last metrics.

    ``epochs_done`` counts the epochs before a resume too; ``final_metrics`` are those of
    Ultralytics' final validation of ``best``.
    """

    run_dir: Path
    best: Path
    last: Path
    epochs_done: int
    seconds: float
    final_metrics: dict[str, float]


def train_yolo(
    *,
    model: str,
    data_yaml: Path,
    run_dir: Path,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    seed: int,
    patience: int,
    workers: int,
    extra_args: Mapping[str, Any] | None = None,
    resume: bool = False,
    project_root: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainingResult:
    """Train (or resume) one Ultralytics run into ``run_dir``; Ultralytics' own tracking off.

    ``model`` is a YOLO or RT-DETR model YAML or weights file (see ``model_family``).
    ``on_epoch_end`` is called after each epoch, while training goes on, with the epoch
    (from 1; a resumed training goes on from the epoch after its checkpoint's) and the
    epoch's metrics (see ``epoch_metrics``).
    """
    from cv_pipelines.config.console import step_progress
    from cv_pipelines.config.offline import no_font_download, ultralytics_settings_offline

    ultralytics_settings_offline(project_root)
    family = model_family(model)
    reporter = EpochReporter(on_epoch_end)
    started = time.perf_counter()
    with no_font_download(), step_progress("epochs", total=epochs) as row:
        if resume:
            # Ultralytics restores every argument (data, epochs, optimizer state, folder)
            # from the checkpoint; only the device may change.
            yolo = _watched_model(run_dir / "weights/last.pt", family, reporter, row)
            yolo.train(resume=True, device=device)
        else:
            arguments = {
                **dict(extra_args or {}),
                "data": str(data_yaml),
                "epochs": epochs,
                "imgsz": imgsz,
                "batch": batch,
                "device": device,
                "seed": seed,
                "deterministic": True,
                "patience": patience,
                "workers": workers,
                "project": str(run_dir.parent),
                "name": run_dir.name,
                "exist_ok": True,  # the folder is ours: made empty by new_run_dir
                "plots": True,
                "verbose": False,
            }
            yolo = _watched_model(model, family, reporter, row)
            yolo.train(**arguments)
    trainer = yolo.trainer
    if trainer.ddp:
        # Several GPUs: Ultralytics trains in child processes started with its default
        # callbacks only, so ours never ran; the children's results.csv is the one record
        # of the epochs.
        for epoch, metrics in results_csv_epochs(run_dir / "results.csv"):
            reporter.report(epoch, metrics)
    final = {
        metric_name(key) or key: float(value)
        for key, value in (getattr(trainer, "metrics", None) or {}).items()
        if isinstance(value, (int, float))
    }
    return TrainingResult(
        run_dir=run_dir,
        best=run_dir / "weights/best.pt",
        last=run_dir / "weights/last.pt",
        epochs_done=reporter.last_epoch,
        seconds=time.perf_counter() - started,
        final_metrics=final,
    )
