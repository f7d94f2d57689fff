"""Turn a training run's ``best.pt`` into the packaged ``mlflow.pyfunc`` detector.

Two steps: export ONNX with Ultralytics (offline: no ``onnxslim``, whose absence would
make Ultralytics try to pip-install it), then log ``packaged_model.py`` as code with
both weights files as its artifacts, a signature, an input example and pinned
requirements, into the active MLflow run. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cv_pipelines.config.parameters import DeploymentParams
from cv_pipelines.models.training import ultralytics_model

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

PACKAGED_MODEL_CODE = Path(__file__).with_name("packaged_model.py")
#: What the packaged model imports, pinned to the versions it was logged with, so
#: ``mlflow models serve`` with a virtualenv manager rebuilds the same environment (and
#: MLflow need not infer requirements by loading the model in a subprocess).
REQUIREMENTS = ("mlflow", "numpy", "pandas", "pillow", "opencv-python", "onnxruntime", "ultralytics", "torch")


#: Model families (the training run's ``cv_pipelines.model_family`` tag) that can be packaged.
FAMILIES = ("yolo", "rtdetr")


def checkpoint_info(weights: Path, family: str = "yolo") -> dict[str, Any]:
    """Class names (by id) and training image size recorded in an Ultralytics checkpoint."""
    from cv_pipelines.config.offline import ultralytics_settings_offline

    ultralytics_settings_offline()
    model = ultralytics_model(weights, family)
    names = model.names
    imgsz = (model.ckpt or {}).get("train_args", {}).get("imgsz") or model.overrides.get("imgsz") or 640
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    return {"names": [names[i] for i in sorted(names)], "imgsz": int(imgsz)}


def export_onnx(weights: Path, imgsz: int, project_root: Path | None = None, family: str = "yolo") -> Path:
    """``best.onnx`` next to ``weights``: fixed (1, 3, imgsz, imgsz) input, the head's own output, no NMS."""
    from cv_pipelines.config.offline import no_font_download, ultralytics_settings_offline

    ultralytics_settings_offline(project_root)
    with no_font_download(), _without_one_to_one_head_warning():
        # simplify=False: onnxslim is not installed and Ultralytics would pip-install it.
        exported = ultralytics_model(weights, family).export(
            format="onnx",
            imgsz=imgsz,
            simplify=False,
            dynamic=False,
            nms=False,
            device="cpu",
            verbose=False,
        )
    return Path(exported)


@contextmanager
def _without_one_to_one_head_warning() -> Iterator[None]:
    """Ultralytics' export warns "This model has no one-to-one head" for models without one (YOLOv8's).

    The packaged model decodes the one-to-many outputs with its own NMS, as designed, so
    the warning says nothing the user could act on.
    """
    ultralytics_logger = logging.getLogger("ultralytics")
    only_other_records = _DropMessage("This model has no one-to-one head")
    ultralytics_logger.addFilter(only_other_records)
    try:
        yield
    finally:
        ultralytics_logger.removeFilter(only_other_records)


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self._start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._start)


def example_image(export_dir: Path | None, imgsz: int) -> bytes:
    """One test image of the export as bytes (a grey PNG when the export is gone)."""
    if export_dir is not None:
        candidates = sorted((export_dir / "images" / "test").glob("*")) or sorted((export_dir / "images").rglob("*.*"))
        for path in candidates:
            if path.is_file():
                return path.read_bytes()
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (imgsz, imgsz), (114, 114, 114)).save(buffer, format="PNG")
    return buffer.getvalue()


def signature(conf: float = 0.25, iou: float = 0.45, max_det: int = 300) -> ModelSignature:
    """Input: a column ``image`` of encoded bytes; output: one row per detection; params: thresholds."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, "image")]),
        outputs=Schema(
            [
                ColSpec(DataType.long, "image_index"),
                ColSpec(DataType.long, "class_id"),
                ColSpec(DataType.string, "class_name"),
                ColSpec(DataType.double, "score"),
                ColSpec(DataType.double, "x1"),
                ColSpec(DataType.double, "y1"),
                ColSpec(DataType.double, "x2"),
                ColSpec(DataType.double, "y2"),
            ]
        ),
        params=ParamSchema(
            [
                ParamSpec("conf", DataType.double, float(conf)),
                ParamSpec("iou", DataType.double, float(iou)),
                ParamSpec("max_det", DataType.long, int(max_det)),
                # A box per class above conf, as Ultralytics' validator counts boxes for mAP.
                ParamSpec("multi_label", DataType.boolean, False),
            ]
        ),
    )


def pinned_requirements() -> list[str]:
    """``REQUIREMENTS`` pinned to the versions installed here (``name==x.y.z``); a package not installed stays unpinned."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def log_packaged_model(
    *, weights: Path, onnx: Path, config: dict[str, Any], example: bytes, name: str = "model"
) -> ModelInfo:
    """Log the packaged detector into the active run; returns MLflow's ``ModelInfo``."""
    import mlflow
    import pandas as pd

    # The params' defaults are the thresholds this version was deployed with.
    sig = signature(config["conf"], config["iou"], config["max_det"])
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PACKAGED_MODEL_CODE),
        artifacts={"weights": str(weights), "onnx": str(onnx)},
        model_config=config,
        signature=sig,
        input_example=pd.DataFrame({"image": [example]}),
        pip_requirements=pinned_requirements(),
    )


def build_package(weights: Path, family: str, work_dir: Path, deployment: DeploymentParams, project_root: Path):
    """The files and config of a packaged model, in ``work_dir``: ``(weights, onnx, config)``.

    The weights are copied first, so the ONNX file Ultralytics writes beside them lands
    in this deployment's folder, never in the training run's.
    """
    from cv_pipelines.files.atomic import copy_atomically

    staged = work_dir / "weights" / weights.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    copy_atomically(weights, staged)
    info = checkpoint_info(staged, family)
    onnx = export_onnx(staged, info["imgsz"], project_root, family)
    config = {
        "use_onnx": deployment.use_onnx,
        "family": family,
        "names": info["names"],
        "imgsz": info["imgsz"],
        # Logged so a consumer can override it at load time (MLflow drops keys the model was not logged with).
        "onnx_threads": 0,
        **deployment.model_dump(include={"conf", "iou", "max_det", "max_image_bytes", "max_image_pixels"}),
    }
    return staged, onnx, config


@dataclass(frozen=True)
class PackagedModel:
    """The files and config of a packaged detector before it is logged; ``weights`` None: nothing to package.

    ``model_uri`` is set once the model is logged into an MLflow run (``runs:/<run>/model``).
    ``registered_version`` (with its ``registered_aliases`` and ``registered_tags``) is the registry version that
    already holds the training run, when that is why nothing was packaged: the one
    registry query of a deployment, handed on to the registration.
    """

    weights: Path | None = None
    onnx: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    example: bytes = b""
    model_uri: str | None = None
    registered_version: str | None = None
    registered_aliases: tuple[str, ...] = ()
    registered_tags: dict[str, str] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        """True when the deployment packages nothing (a rollback, or a model already registered)."""
        return self.weights is None
