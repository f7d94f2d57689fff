"""The packaged detector: images in, detections out, pre- and post-processing inside.

This file is logged *as code* into every registered model version (MLflow's "models
from code"), so whoever loads ``models:/<name>@champion`` needs MLflow, numpy, pandas,
Pillow and onnxruntime (Ultralytics and torch only for ``use_onnx: false``), never this
project. Hence it imports nothing from ``cv_pipelines``, and the heavy libraries only in
the functions that use them.

Input: a DataFrame with one column ``image`` of encoded image bytes (JPEG, PNG, WebP,
BMP, TIFF), one row per image. MLflow's scoring server (``mlflow models serve``) takes
that column base64-encoded in JSON (``{"dataframe_split": {"columns": ["image"],
"data": [["<base64>"]]}}``), since the signature declares it ``binary``.

Output: a DataFrame with one row per detection, columns ``image_index`` (the input
row), ``class_id``, ``class_name``, ``score``, ``x1``, ``y1``, ``x2``, ``y2``: the box in
pixels of the original image after its EXIF orientation, (x1, y1) top left. An image
with nothing detected contributes no row.

Inference runs through ONNX Runtime on the exported ``best.onnx`` (``use_onnx: true``,
the default: a lean numpy letterbox and NMS written here, the same geometry as
Ultralytics'; for RT-DETR a stretched input and no NMS) or through Ultralytics' own
``predict`` on ``best.pt``. Both letterbox to the exported square (``imgsz``), the
geometry the evaluation measured. Optional per-call params: ``conf``, ``iou``,
``max_det``, ``multi_label`` (a box may carry every class above ``conf``, as
Ultralytics' validator counts it for mAP; off by default, as Ultralytics' predict).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd  # at module level: MLflow resolves predict's type hint in this module's globals

# ONNX Runtime (1.29 on) sends usage events to Microsoft from every platform unless this
# is set before its environment is created: wherever this model is served, it is.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

INPUT_COLUMN = "image"
OUTPUT_COLUMNS = ["image_index", "class_id", "class_name", "score", "x1", "y1", "x2", "y2"]
#: The formats the project stores (``image_checks``); anything else is refused as "not an image".
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
DEFAULT_CONFIG: dict[str, Any] = {
    "use_onnx": True,
    "family": "yolo",  # or "rtdetr": which Ultralytics class reads best.pt
    "conf": 0.25,
    "iou": 0.45,
    "max_det": 300,
    "multi_label": False,
    "max_image_bytes": 20_000_000,
    "max_image_pixels": 40_000_000,
    # ONNX Runtime's intra-op threads; 0: its own choice (one per core). On a CPU shared
    # with other work, 1 avoids threads spinning against each other.
    "onnx_threads": 0,
}
#: Ultralytics pads letterboxed images with this grey; the ONNX path does the same.
PAD_VALUE = 114

#: A detector's answer for one image: boxes (N, 4) as x1, y1, x2, y2 in its pixels, scores (N,), class ids (N,).
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


class Detector(Protocol):
    """What ``PackagedDetector`` runs on each decoded image: ONNX Runtime or Ultralytics."""

    def __call__(self, rgb: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool = False) -> Detections:
        """Detections in ``rgb`` (H, W, 3, uint8) above ``conf``, after NMS at ``iou``, at most ``max_det``;
        with ``multi_label`` one box per class above ``conf`` at each anchor, before NMS."""
        ...


class ImageRejected(ValueError):
    """An input that is not a usable image; ``http_status`` says which 4xx it deserves."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


def decode_image(data: bytes | str, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """RGB pixels (H, W, 3, uint8) of an encoded image, upright as its EXIF says.

    Refuses empty data, data over ``max_bytes``, anything PIL does not identify as one
    of ``IMAGE_FORMATS``, and images over ``max_pixels`` (checked from the header,
    before decoding, so a decompression bomb costs nothing).
    """
    from PIL import Image, ImageOps

    if isinstance(data, str):  # base64 text, as JSON clients send bytes
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            raise ImageRejected("the image is a string but not valid base64", 400) from None
    if data is None or len(data) == 0:
        raise ImageRejected("the image is empty (0 bytes)", 400)
    if len(data) > max_bytes:
        raise ImageRejected(f"the image has {len(data)} bytes, more than the limit of {max_bytes}", 413)
    # PIL's own open: Ultralytics replaces Image.open process-wide with one that tries
    # to install an HEIF plugin on data PIL cannot identify (a download, offline a hang).
    pil_open = getattr(_ultralytics_patches(), "_image_open", None) or Image.open
    try:
        image = pil_open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise ImageRejected(f"the image declares more pixels than the limit of {max_pixels}", 413) from None
    except Exception:
        raise ImageRejected(
            f"the data is not an image in a supported format ({', '.join(IMAGE_FORMATS)})", 415
        ) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                f"the image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}", 413
            )
        try:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            return np.asarray(upright)
        except Exception as exc:
            raise ImageRejected(f"the image could not be decoded ({exc.__class__.__name__})", 400) from None


def _ultralytics_patches() -> Any:
    import sys

    return sys.modules.get("ultralytics.utils.patches")


# --- ONNX Runtime path: letterbox, one session run, NMS, all in numpy ---------------------


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """A (1, 3, size, size) float32 tensor in [0, 1], the scale and the (x, y) padding.

    The same geometry as Ultralytics' ``LetterBox`` (centred, grey 114, bilinear
    resize), so the exported network sees what it saw in training.
    """
    import cv2

    height, width = rgb.shape[:2]
    gain = min(size / height, size / width)
    new_w, new_h = max(round(width * gain), 1), max(round(height * gain), 1)
    resized = (
        cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (width, height) else rgb
    )
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(tensor), gain, left, top


def stretch(rgb: np.ndarray, size: int) -> np.ndarray:
    """A (1, 3, size, size) float32 tensor in [0, 1], resized without keeping the aspect (RT-DETR's ``scale_fill``)."""
    import cv2

    resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (x1, y1, x2, y2) kept by greedy NMS, best score first."""
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        overlap = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode_predictions(
    output: np.ndarray,
    *,
    conf: float,
    iou: float,
    max_det: int,
    gain: float,
    pad: tuple[float, float],
    shape: tuple[int, int],
    multi_label: bool = False,
) -> Detections:
    """Boxes (N, 4) in original pixels, scores (N,), class ids (N,) from YOLOv8's raw output.

    ``output`` is (1, 4 + classes, anchors): centre x, centre y, width, height in
    letterboxed pixels, then one score per class. Per-class NMS by offsetting each
    class's boxes, as Ultralytics' ``non_max_suppression`` does, ``multi_label`` included
    (every anchor-class pair above ``conf`` is a candidate).
    """
    prediction = output[0].T  # (anchors, 4 + classes)
    class_scores = prediction[:, 4:]
    if multi_label and class_scores.shape[1] > 1:
        anchors, class_ids = np.nonzero(class_scores > conf)
        scores = class_scores[anchors, class_ids]
    else:
        best = class_scores.argmax(axis=1)
        anchors = np.flatnonzero(class_scores[np.arange(len(best)), best] > conf)
        class_ids = best[anchors]
        scores = class_scores[anchors, class_ids]
    if not len(anchors):
        empty = np.zeros((0,), dtype=np.float32)
        return np.zeros((0, 4), dtype=np.float32), empty, empty.astype(np.int64)
    xywh = prediction[anchors, :4]
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    # Ultralytics looks at no more than 30,000 candidates before NMS either.
    if len(scores) > 30_000:
        top = scores.argsort()[::-1][:30_000]
        boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
    offsets = class_ids[:, None].astype(np.float32) * 7680.0
    keep = non_max_suppression(boxes + offsets, scores, iou)[:max_det]
    boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad[0]) / gain).clip(0, shape[1])
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad[1]) / gain).clip(0, shape[0])
    return boxes, scores, class_ids


def decode_end_to_end(
    output: np.ndarray, *, conf: float, max_det: int, gain: float, pad: tuple[float, float], shape: tuple[int, int]
) -> Detections:
    """Boxes, scores, class ids from an end-to-end head (YOLOv10/YOLO26): (1, N, 6) rows of
    x1, y1, x2, y2 (letterboxed pixels), score, class; already free of duplicates, no NMS."""
    rows = output[0]
    rows = rows[rows[:, 4] > conf]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det]
    boxes = rows[:, :4].copy()
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad[0]) / gain).clip(0, shape[1])
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad[1]) / gain).clip(0, shape[0])
    return boxes, rows[:, 4], rows[:, 5].astype(np.int64)


def decode_rtdetr(output: np.ndarray, *, conf: float, max_det: int, shape: tuple[int, int]) -> Detections:
    """Boxes, scores, class ids from RT-DETR: (1, N, 6) rows of centre x, centre y, width,
    height (fractions of the stretched input), score, class; top-k already, no NMS."""
    rows = output[0]
    rows = rows[rows[:, 4] > conf][:max_det]  # sorted by score by the decoder's top-k
    height, width = shape
    boxes = np.empty((len(rows), 4), dtype=np.float32)
    boxes[:, 0] = (rows[:, 0] - rows[:, 2] / 2) * width
    boxes[:, 1] = (rows[:, 1] - rows[:, 3] / 2) * height
    boxes[:, 2] = (rows[:, 0] + rows[:, 2] / 2) * width
    boxes[:, 3] = (rows[:, 1] + rows[:, 3] / 2) * height
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes, rows[:, 4], rows[:, 5].astype(np.int64)


class OnnxDetector:
    """``best.onnx`` in an ONNX Runtime CPU session, with numpy pre- and post-processing.

    The head Ultralytics exported (in the ONNX metadata) decides the decoding: YOLO's
    raw one-to-many output gets letterbox + NMS, an end-to-end head (YOLOv10, YOLO26)
    letterbox only, RT-DETR a stretched input and no NMS, as Ultralytics' predictors do.
    """

    def __init__(self, onnx_path: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_path, sess_options=options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.size = int(model_input.shape[2])  # exported with a fixed square input
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.kind = (
            "rtdetr"
            if metadata.get("head") == "RTDETRDecoder"
            else "end2end"
            if metadata.get("end2end") == "True"
            else "yolo"
        )

    def __call__(self, rgb: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool = False) -> Detections:
        """One session run on ``rgb`` (H, W, 3, uint8), decoded as its head needs; boxes in ``rgb``'s pixels."""
        if self.kind == "rtdetr":
            [output] = self.session.run(None, {self.input_name: stretch(rgb, self.size)})
            return decode_rtdetr(output, conf=conf, max_det=max_det, shape=rgb.shape[:2])
        tensor, gain, left, top = letterbox(rgb, self.size)
        [output] = self.session.run(None, {self.input_name: tensor})
        if self.kind == "end2end":
            return decode_end_to_end(
                output, conf=conf, max_det=max_det, gain=gain, pad=(left, top), shape=rgb.shape[:2]
            )
        return decode_predictions(
            output,
            conf=conf,
            iou=iou,
            max_det=max_det,
            gain=gain,
            pad=(left, top),
            shape=rgb.shape[:2],
            multi_label=multi_label,
        )


class UltralyticsDetector:
    """``best.pt`` through Ultralytics' own ``predict`` (PyTorch), the reference path.

    ``rect=False``: letterboxed to the square ``imgsz``, as the exported ONNX input and
    the evaluation are (Ultralytics' predict would pad to the stride multiple instead).
    """

    def __init__(self, weights_path: str, imgsz: int, family: str = "yolo") -> None:
        # Nothing may be fetched at run time, wherever this model is loaded.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import RTDETR, YOLO

        self.weights_path, self.family = weights_path, family
        # A checkpoint does not say its family; YOLO() on RT-DETR weights would decode them wrongly.
        self.model = RTDETR(weights_path) if family == "rtdetr" else YOLO(weights_path, task="detect")
        self._multi_label_model: Any = None  # its own predictor, built on first use
        self.imgsz = imgsz
        self._lock = threading.Lock()  # a YOLO predictor is not thread-safe

    def __call__(self, rgb: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool = False) -> Detections:
        """Ultralytics' ``predict`` on CPU for ``rgb`` (H, W, 3, uint8), one image at a time."""
        from ultralytics.engine.results import Results

        with self._lock:
            model, predictor = self.model, None
            if multi_label and self.family != "rtdetr":  # RT-DETR has no NMS to label
                model, predictor = self._multi_label(), _multi_label_predictor()
            # Ultralytics takes numpy images as BGR, like OpenCV.
            [result] = model.predict(
                rgb[:, :, ::-1],
                predictor=predictor if model.predictor is None else None,
                imgsz=self.imgsz,
                conf=conf,
                iou=iou,
                max_det=max_det,
                rect=False,
                device="cpu",
                verbose=False,
            )
        boxes = result.boxes if isinstance(result, Results) else None
        if boxes is None:  # a classification or pose checkpoint: no detection head
            raise TypeError(f"Ultralytics returned no boxes for {type(self.model).__name__}: not a detection model")
        # CPU tensors (device="cpu"); np.asarray shares their memory, as .numpy() does.
        return np.asarray(boxes.xyxy), np.asarray(boxes.conf), np.asarray(boxes.cls).astype(np.int64)

    def _multi_label(self) -> Any:
        from ultralytics import YOLO

        if self._multi_label_model is None:
            self._multi_label_model = YOLO(self.weights_path, task="detect")
        return self._multi_label_model


@functools.cache
def _multi_label_predictor() -> type:
    """Ultralytics' detection predictor with its NMS in multi-label mode, as its validator runs it."""
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.utils import nms

    class MultiLabelPredictor(DetectionPredictor):
        def postprocess(self, preds, img, orig_imgs, **kwargs):
            kept = nms.non_max_suppression(
                preds,
                self.args.conf,
                self.args.iou,
                max_det=self.args.max_det,
                multi_label=True,
                end2end=getattr(self.model, "end2end", False),
            )
            return self.construct_results(kept, img, orig_imgs, **kwargs)

    return MultiLabelPredictor


def _mlflow_model_base() -> type:
    try:
        from mlflow.pyfunc import PythonModel
    except ImportError:  # the detector classes above are usable without MLflow (bench, tests)
        return object
    return PythonModel


if TYPE_CHECKING:
    from mlflow.pyfunc import PythonModel as _ModelBase
else:
    _ModelBase = _mlflow_model_base()


class PackagedDetector(_ModelBase):
    """The ``mlflow.pyfunc`` model: ``load_context`` builds a detector, ``predict`` runs it.

    Its configuration (``model_config`` when logged, overridable at load time with
    ``mlflow.pyfunc.load_model(uri, model_config={"use_onnx": False})``): ``use_onnx``,
    ``family`` (``yolo`` or ``rtdetr``), ``onnx_threads``, ``names`` (class names by id), ``imgsz``, ``conf``, ``iou``, ``max_det``,
    ``max_image_bytes``, ``max_image_pixels``.
    """

    def load_context(self, context) -> None:
        """Build the detector from the logged artifacts (``onnx`` or ``weights``) and the merged configuration."""
        self.config = {**DEFAULT_CONFIG, **(context.model_config or {})}
        self.names = list(self.config["names"])
        self.detector: Detector
        if self.config["use_onnx"]:
            self.detector = OnnxDetector(context.artifacts["onnx"], int(self.config["onnx_threads"]) or None)
        else:
            self.detector = UltralyticsDetector(
                context.artifacts["weights"], int(self.config["imgsz"]), self.config["family"]
            )

    # The hint is what the pyfunc wrapper hands over (it enforces the column signature into
    # a DataFrame); a DataFrame hint also tells MLflow not to infer or validate from it,
    # where no hint at all warned on every log and load.
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        """Detections for a DataFrame of encoded images (also one image's bytes or base64 text, or a list of them).

        Returns one row per detection (``OUTPUT_COLUMNS``). An input that is not a usable
        image raises MLflow's ``INVALID_PARAMETER_VALUE`` with the 4xx it deserves in
        ``http_status``, naming the image when several were sent.
        """

        params = params or {}
        conf = float(params.get("conf", self.config["conf"]))
        iou = float(params.get("iou", self.config["iou"]))
        max_det = int(params.get("max_det", self.config["max_det"]))
        multi_label = bool(params.get("multi_label", self.config["multi_label"]))
        if isinstance(model_input, pd.DataFrame):
            if INPUT_COLUMN not in model_input.columns:
                raise _rejected(ImageRejected(f"the input has no '{INPUT_COLUMN}' column of image bytes"))
            images = list(model_input[INPUT_COLUMN])
        elif isinstance(model_input, (bytes, bytearray, str)):
            images = [model_input]
        else:
            images = list(model_input)
        parts = []
        for index, data in enumerate(images):
            try:
                rgb = decode_image(
                    bytes(data) if isinstance(data, bytearray) else data,
                    max_bytes=int(self.config["max_image_bytes"]),
                    max_pixels=int(self.config["max_image_pixels"]),
                )
            except ImageRejected as exc:
                prefix = f"image {index}: " if len(images) > 1 else ""
                raise _rejected(ImageRejected(prefix + str(exc), exc.http_status)) from None
            boxes, scores, class_ids = self.detector(rgb, conf, iou, max_det, multi_label)
            parts.append(
                (
                    np.full(len(scores), index, dtype=np.int64),
                    class_ids.astype(np.int64),
                    np.asarray(scores, dtype=np.float64),
                    np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                )
            )
        # Typed columns built once (not row tuples then astype): pandas costs more than NMS here.
        # Each part is the same four columns, so the transposition is strict.
        image_index, class_id, score, box = (
            (np.concatenate(column) for column in zip(*parts, strict=True))
            if parts
            else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
        )
        return pd.DataFrame(
            {
                "image_index": image_index,
                "class_id": class_id,
                "class_name": np.asarray([self._name(i) for i in class_id.tolist()], dtype=object),
                "score": score,
                "x1": box[:, 0],
                "y1": box[:, 1],
                "x2": box[:, 2],
                "y2": box[:, 3],
            },
            columns=OUTPUT_COLUMNS,
        )

    def _name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)


def _rejected(error: ImageRejected) -> Exception:
    """An MLflow ``INVALID_PARAMETER_VALUE`` (``mlflow models serve`` answers 400) keeping the 4xx status."""
    try:
        rejection = _invalid_image_error()
    except ImportError:
        return error
    return rejection(str(error), error.http_status)


@functools.cache
def _invalid_image_error() -> Callable[[str, int], MlflowException]:
    """MLflow's exception for a bad input, carrying the ``http_status`` the serving command answers."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class InvalidImageError(MlflowException):
        """An image the model refuses: ``INVALID_PARAMETER_VALUE``, and which 4xx it deserves."""

        def __init__(self, message: str, http_status: int = 400) -> None:
            super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
            self.http_status = http_status

    return InvalidImageError


# Loaded by MLflow as code (a top-level module with no package), this file names its model.
if not __package__:
    import mlflow

    mlflow.models.set_model(PackagedDetector())
