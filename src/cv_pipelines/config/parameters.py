"""The schema of ``conf/*/parameters_*.yml``: every key is known, typed and documented.

Checked before any node runs (see ``hooks.py``), so a typo in a parameter name or a
model file that does not exist stops the run with one sentence naming the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cv_pipelines.config.names import Revision, SafeName
from cv_pipelines.errors import ConfigurationError


class _Strict(BaseModel):
    """A frozen model that rejects unknown keys, so a typo stops the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoDataParams(_Strict):
    """``demo_data``: the synthetic data set's size and seed (its folder is the ``demo_dataset`` entry)."""

    num_images: int = Field(ge=1)
    image_size: int = Field(ge=32, le=4096)
    seed: int
    max_objects: int = Field(ge=0)
    empty_fraction: float = Field(ge=0.0, le=1.0)


class IngestionParams(_Strict):
    """``ingestion``: how files are checked and how long a writer waits for the lock.

    The folders are the catalog's: ``new_images`` (the drop zone) and ``images_registry``
    (the store, the registries and the quarantine). The defaults are those of
    ``conf/base/parameters_ingestion.yml``, which documents them.
    """

    source_id: str = Field(min_length=1)
    validation: Literal["header", "decode"]
    max_pixels: int = Field(gt=0)
    workers: int = Field(ge=1, le=64)
    lock_timeout_s: float = Field(ge=0)
    show_progress: bool


class CvatParams(_Strict):
    """``labeling.cvat``: the CVAT project, task settings, and how CVAT calls are retried."""

    project_name: str
    segment_size: int = Field(ge=1)
    image_quality: int = Field(ge=1, le=100)
    upload: Literal["upload", "share"]
    share_root: str | None
    exclude_tag: str
    request_timeout_s: float = Field(gt=0)
    status_check_period_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    retry_backoff_s: float = Field(ge=0)


class LabelingParams(_Strict):
    """``labeling``: the label set, batch selection and the loop's pace (batches folder: the catalog's)."""

    # Names export folders and dataset version tags (config.names).
    label_set: SafeName
    labels: list[str] = Field(min_length=1)
    batch_size: int = Field(ge=1)
    selection: Literal["newest", "random"]
    selection_seed: int
    max_open_batches: int = Field(ge=1)
    blocking: bool
    poll_interval_s: float = Field(gt=0)
    wait_timeout_s: float = Field(gt=0)
    snapshot_after_pull: bool
    exclusions_csv: str | None
    cvat: CvatParams

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        duplicated = sorted({name for name in labels if labels.count(name) > 1})
        if duplicated:
            raise ValueError(f"label names must be unique; repeated: {', '.join(duplicated)}")
        return labels


class ExportParams(_Strict):
    """``export.*``: what the export selects and how it splits; its folder is the catalog's ``yolo_export``."""

    label_set: SafeName
    format: Literal["yolo", "coco"]
    split_ratios: dict[Literal["train", "val", "test"], float]
    split_seed: int

    @field_validator("split_ratios")
    @classmethod
    def _ratios_sum_to_one(cls, ratios: dict[str, float]) -> dict[str, float]:
        if any(value < 0 for value in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must be non-negative and add up to 1, got {ratios}")
        return ratios


class TrainingParams(_Strict):
    """``training.*``: the model (a YAML, or a local ``.pt``: nothing is downloaded) and the training arguments.

    ``extra_args`` may add any other Ultralytics argument, but none the pipeline sets itself;
    ``device`` is kept as text (``--params training.device=0`` arrives as an integer).
    """

    model: str
    export_version: int | None = Field(ge=1)
    epochs: int = Field(ge=1)
    imgsz: int = Field(ge=32)
    batch: int = Field(ge=1)
    device: str
    seed: int
    patience: int = Field(ge=0)
    workers: int = Field(ge=0)
    # true: the newest interrupted run; a string: that run folder (or its last.pt).
    resume: bool | str
    extra_args: dict[str, Any]

    # `--params training.device=0` arrives as the integer 0.
    _device_text = field_validator("device", mode="before")(lambda value: _device_as_text(value))

    @field_validator("extra_args")
    @classmethod
    def _extra_args_do_not_override(cls, extra: dict[str, Any]) -> dict[str, Any]:
        # The run folder, the data and the tracking belong to the pipeline.
        owned = sorted(set(extra) & _PIPELINE_OWNED_TRAIN_ARGS)
        if owned:
            raise ValueError(
                f"extra_args may not set {', '.join(owned)}: the pipeline sets them (use the training parameters "
                "of the same name, or export_version for the data)"
            )
        return extra

    @field_validator("model")
    @classmethod
    def _model_is_local(cls, model: str) -> str:
        return check_model_source(model)


_PIPELINE_OWNED_TRAIN_ARGS = {
    "data",
    "project",
    "name",
    "exist_ok",
    "resume",
    "model",
    "epochs",
    "imgsz",
    "batch",
    "device",
    "seed",
    "deterministic",
    "patience",
    "workers",
}


def _device_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return value


class EvaluationParams(_Strict):
    """``evaluation.*``: which training run and split are evaluated, the thresholds, how many worst images are kept."""

    run_id: SafeName | None
    split: Literal["val", "test"]
    conf: float = Field(ge=0, le=1)
    iou: float = Field(ge=0, le=1)
    device: str
    batch: int = Field(ge=1)
    worst_images: int = Field(ge=0)
    worst_conf: float = Field(gt=0, le=1)

    _device_text = field_validator("device", mode="before")(lambda value: _device_as_text(value))


class ParityParams(_Strict):
    """``deployment.parity.*``: how closely the packaged model must reproduce the evaluated one to be registered."""

    max_map_difference: float = Field(ge=0)
    min_box_agreement: float = Field(ge=0, le=1)
    match_iou: float = Field(gt=0, le=1)


class ServingParams(_Strict):
    """``deployment.serving``: the HTTP server's worker pool, queue, batch limits and shutdown."""

    workers: int = Field(ge=1, le=64)
    max_queue: int = Field(ge=0)
    retry_after_s: int = Field(ge=1)
    max_batch_images: int = Field(ge=1)
    max_batch_bytes: int = Field(gt=0)
    backlog: int = Field(ge=1)
    graceful_timeout_s: float = Field(gt=0)


class DeploymentParams(_Strict):
    """``deployment.*``: the quality gate (metrics by their evaluation names), the packaged model and the server."""

    model_name: SafeName
    action: Literal["deploy", "rollback"]
    tolerance: float = Field(ge=0)
    gate_metrics: list[str]
    champion_floor: dict[str, float]
    parity: ParityParams
    use_onnx: bool
    conf: float = Field(gt=0, le=1)
    iou: float = Field(gt=0, le=1)
    max_det: int = Field(ge=1)
    max_image_bytes: int = Field(gt=0)
    max_image_pixels: int = Field(gt=0)
    canary_fraction: float = Field(ge=0, le=1)
    host: str
    port: int = Field(ge=0, le=65535)
    serving: ServingParams

    @field_validator("gate_metrics")
    @classmethod
    def _gate_metrics_known(cls, names: list[str]) -> list[str]:
        return [headline_metric(name) for name in names]

    @field_validator("champion_floor")
    @classmethod
    def _floor_metrics_known(cls, floor: dict[str, float]) -> dict[str, float]:
        return {headline_metric(name): value for name, value in floor.items()}


#: The evaluation's headline metrics, by a spelling-tolerant key (``map50``, ``mAP50-95``, ``map50_95``).
_HEADLINE_METRICS = {"map50": "mAP50", "map5095": "mAP50-95", "precision": "precision", "recall": "recall"}


def headline_metric(name: str) -> str:
    """The evaluation summary's name of a metric given as ``map50``, ``mAP50-95``, ``map50_95``..."""
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    if key not in _HEADLINE_METRICS:
        raise ValueError(f"{name!r} is not one of the evaluation's metrics ({', '.join(_HEADLINE_METRICS.values())})")
    return _HEADLINE_METRICS[key]


class MatrixParams(_Strict):
    """``matrix.*``: the training candidates and which of them run; every name listed must be a candidate."""

    # Candidate overrides are checked against TrainingParams by cv_pipelines.models.matrix,
    # where the candidate's name can be put in the message.
    candidates: dict[SafeName, dict[str, Any] | None]
    only: list[str]
    exclude: list[str]
    retries: int = Field(ge=0, le=10)
    fail_fast: bool
    required: Literal["all"] | list[str]
    rank_by: Literal["mAP50", "mAP50-95", "precision", "recall"]

    @field_validator("only", "exclude", mode="before")
    @classmethod
    def _names_as_list(cls, value: Any) -> Any:
        # `--params matrix.only=a+b` (a comma would end the --params entry)
        return [part for part in value.replace("+", " ").split() if part] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known_candidates(self) -> MatrixParams:
        names = set(self.candidates) or {"default"}
        required = [] if self.required == "all" else self.required
        unknown = sorted((set(self.only) | set(self.exclude) | set(required)) - names)
        if unknown:
            raise ValueError(
                f"unknown candidate(s) {', '.join(unknown)}; matrix.candidates has {', '.join(sorted(names))}"
            )
        return self


class SnapshotParams(_Strict):
    """``snapshot``: whether and where to push, and the commit message (folders: the catalog's)."""

    push: bool
    remote: SafeName | None  # a DVC remote's name in .dvc/config
    message: str | None


class ImportCocoParams(_Strict):
    """``import_coco``: the labeled folder to import (a run-time choice, so a parameter) and how."""

    source: str | None
    annotations: str | None
    images_dir: str | None
    name: SafeName | None
    unknown_categories: Literal["refuse", "append", "new_label_set"]
    label_set: SafeName | None
    annotator: str


class ProjectParams(_Strict):
    """Every top-level key the project's parameters may hold."""

    dataset_version: Revision | None
    demo_data: DemoDataParams
    ingestion: IngestionParams
    import_coco: ImportCocoParams
    snapshot: SnapshotParams
    labeling: LabelingParams
    export: ExportParams
    training: TrainingParams
    evaluation: EvaluationParams
    deployment: DeploymentParams
    matrix: MatrixParams


#: Model YAMLs that Ultralytics builds from scratch without downloading anything.
_MODEL_CONFIG_SUFFIXES = (".yaml", ".yml")


def check_model_source(model: str) -> str:
    """A model YAML name (trained from scratch) or an existing local ``.pt`` file.

    Ultralytics tries to download any ``.pt`` it cannot find; offline that fails deep
    inside the library after minutes of set-up, so refuse it here, before any work.
    """
    if model.endswith(_MODEL_CONFIG_SUFFIXES):
        return model
    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise ValueError(
                f"model weights {model!r} do not exist; give the path of a local .pt file to "
                "fine-tune, or a model YAML such as 'yolov8n.yaml' to train from scratch "
                "(nothing is downloaded)"
            )
        return model
    raise ValueError(f"model {model!r} is neither a model YAML (e.g. 'yolov8n.yaml') nor a local .pt file")


def validate_parameters(params: dict[str, Any]) -> ProjectParams:
    """Check all parameters, or raise ``ConfigurationError`` naming the key and the fix."""
    try:
        return ProjectParams.model_validate(params)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError, section: str | None = None) -> str:
    """One sentence per error in ``exc``: the parameter's dotted key, what is wrong, and where to fix it.

    ``section``: the top-level key ``exc`` was raised under, when a section's model was validated alone.
    """
    sentences = []
    for error in exc.errors():
        # A mapping's key is located as its value's location plus "[key]".
        loc = [*([section] if section else []), *(part for part in error["loc"] if part != "[key]")]
        error = {**error, "loc": tuple(loc)}
        key = ".".join(str(part) for part in loc)
        if error["type"] == "extra_forbidden":
            top = str(error["loc"][0])
            where = f"conf/base/parameters_{top}.yml" if len(error["loc"]) > 1 else "conf/*/parameters_*.yml"
            sentences.append(
                f"Unknown parameter '{key}' (from {where} or --params): check its spelling "
                "against conf/base/parameters_*.yml or remove it."
            )
        elif error["type"] == "missing":
            sentences.append(f"Parameter '{key}' is missing: add it to conf/base/parameters_{error['loc'][0]}.yml.")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            sentences.append(f"Parameter '{key}' is invalid: {message}.")
    return " ".join(sentences)
