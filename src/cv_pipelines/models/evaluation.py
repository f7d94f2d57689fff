"""Evaluate Ultralytics YOLO weights on an export's frozen split, and compare two models.

Every number comes from Ultralytics' own validator (``YOLO.val``): mAP50, mAP50-95,
precision, recall, its per-class summary, its confusion matrix, its precision-recall
curves and its per-image true/false positive counts, so the figures here are the ones
``yolo val`` prints. This module draws them as matplotlib figures for the catalog
(kedro-viz previews them) and ranks the images a human should look at.

Heavy imports (torch, ultralytics, matplotlib) stay inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The headline metrics, as MLflow names them (no parentheses allowed there).
HEADLINE = ("mAP50", "mAP50-95", "precision", "recall")
PER_CLASS_COLUMNS = ["class", "images", "instances", "precision", "recall", "mAP50", "mAP50-95"]


@dataclass
class Evaluation:
    """What Ultralytics' validator measured for one model on one split."""

    metrics: dict[str, float]
    per_class: pd.DataFrame  # one row per class of the data set, in class-id order
    recall_grid: np.ndarray  # x of the precision-recall curves
    precision_curves: dict[str, np.ndarray]  # class -> precision at each recall
    classes: list[str]
    save_dir: Path


def evaluate_weights(
    weights: Path,
    data_yaml: Path,
    *,
    split: str,
    conf: float,
    iou: float,
    device: str,
    batch: int,
    out_dir: Path,
    family: str = "yolo",
    project_root: Path | None = None,
    plots: bool = True,
) -> Evaluation:
    """Run Ultralytics' validator on ``split``; its plots (if ``plots``) land in ``out_dir``.

    The curves the project draws itself are computed either way.
    """
    results = _validate(
        weights,
        data_yaml,
        family,
        project_root,
        split=split,
        conf=conf,
        iou=iou,
        device=device,
        batch=batch,
        out_dir=out_dir,
        plots=plots,
    )
    classes = [results.names[i] for i in sorted(results.names)]
    precision, recall, map50, map50_95 = (float(v) for v in results.mean_results())
    metrics = {"mAP50": map50, "mAP50-95": map50_95, "precision": precision, "recall": recall}

    rows = {row["Class"]: row for row in results.summary(decimals=6)}
    per_class = pd.DataFrame(
        [
            {
                "class": name,
                "images": int(rows[name]["Images"]) if name in rows else 0,
                "instances": int(rows[name]["Instances"]) if name in rows else 0,
                "precision": rows[name]["Box-P"] if name in rows else np.nan,
                "recall": rows[name]["Box-R"] if name in rows else np.nan,
                "mAP50": rows[name]["mAP50"] if name in rows else np.nan,
                "mAP50-95": rows[name]["mAP50-95"] if name in rows else np.nan,
            }
            for name in classes
        ],
        columns=PER_CLASS_COLUMNS,
    )
    recall_grid, precision_values = results.box.curves_results[0][:2]
    curves = {
        results.names[int(index)]: np.asarray(precision_values[row]) for row, index in enumerate(results.ap_class_index)
    }
    return Evaluation(
        metrics=metrics,
        per_class=per_class,
        recall_grid=np.asarray(recall_grid),
        precision_curves=curves,
        classes=classes,
        save_dir=Path(results.save_dir),
    )


@dataclass
class Errors:
    """Detections at a working confidence: per-image errors and the confusion matrix."""

    per_image: pd.DataFrame  # image_id, file, missed, spurious, correct, errors; worst first
    confusion: np.ndarray  # (nc + 1, nc + 1): rows predicted, columns true; last = background
    conf: float


def errors_at_confidence(
    weights: Path,
    data_yaml: Path,
    *,
    split: str,
    conf: float,
    iou: float,
    device: str,
    batch: int,
    out_dir: Path,
    family: str = "yolo",
    project_root: Path | None = None,
) -> Errors:
    """Missed and spurious boxes per image, and the confusion matrix, at ``conf``.

    Ultralytics' validator counts true positives, false positives (spurious boxes) and
    false negatives (missed boxes) per image at IoU 0.5. At the mAP pass's confidence
    (0.001) every image is full of low-score boxes, so this second pass runs at the
    confidence a deployed model would use. It draws no plots: Ultralytics' curves of
    detections cut at ``conf`` would mislead, and plotting was a quarter of its time.
    """
    results = _validate(
        weights,
        data_yaml,
        family,
        project_root,
        split=split,
        conf=conf,
        iou=iou,
        device=device,
        batch=batch,
        out_dir=out_dir,
        plots=False,
    )
    frame = pd.DataFrame(
        [
            {
                "image_id": Path(name).stem,
                "file": f"images/{split}/{name}",
                "missed": int(counts["fn"]),
                "spurious": int(counts["fp"]),
                "correct": int(counts["tp"]),
                "errors": int(counts["fn"]) + int(counts["fp"]),
            }
            for name, counts in results.box.image_metrics.items()
        ],
        columns=["image_id", "file", "missed", "spurious", "correct", "errors"],
    )
    frame = frame.sort_values(["errors", "missed", "image_id"], ascending=[False, False, True], ignore_index=True)
    return Errors(per_image=frame, confusion=np.asarray(results.confusion_matrix.matrix), conf=conf)


def _validate(
    weights: Path, data_yaml: Path, family: str, project_root: Path | None, *, out_dir: Path, plots: bool = True, **args
):
    """Ultralytics' validator on ``weights``, offline, its plots (if ``plots``) into ``out_dir``.

    The image size comes from the checkpoint's training arguments. The confusion matrix
    is counted either way.
    """
    from cv_pipelines.config.offline import no_font_download, ultralytics_settings_offline
    from cv_pipelines.models.training import ultralytics_model

    ultralytics_settings_offline(project_root)
    model = ultralytics_model(weights, family)
    validator = _served_validator(model.task_map[model.task]["validator"], count_confusion=not plots)
    with no_font_download():
        return model.val(
            validator=validator,
            data=str(data_yaml),
            # Square letterbox at imgsz, not YOLO.val's default rectangular batches (padded by
            # half a stride more): what the exported fixed-shape ONNX model sees when served,
            # so the test metrics describe the model served (the deployment's parity gate).
            rect=False,
            plots=plots,
            project=str(out_dir.parent),
            name=out_dir.name,
            exist_ok=True,
            verbose=False,
            **args,
        )


def _served_validator(validator_class: type, *, count_confusion: bool) -> type:
    """``validator_class`` scoring the boxes a served model returns: clipped to the image.

    Ultralytics' validator scores boxes as NMS left them, reaching past the image's edges;
    its predict, and the packaged model, clip them to the image. Clipped here too, so the
    test metrics are those of the model served (0.003 mAP50-95 on a weak model, measured).
    With ``count_confusion`` the confusion matrix is counted without plots (Ultralytics
    counts it only for them).
    """

    class ServedBoxesValidator(validator_class):
        def update_metrics(self, preds, batch):
            for index, pred in enumerate(preds):
                _clip_to_image(pred["bboxes"], batch["ori_shape"][index], batch["ratio_pad"][index])
            return super().update_metrics(preds, batch)

        def _process_batch(self, preds, batch):
            if count_confusion:
                # What DetectionValidator.update_metrics does with plots on, for every image,
                # with or without predictions, with the same boxes.
                self.confusion_matrix.process_batch(preds, batch, conf=self.args.conf)
            return super()._process_batch(preds, batch)

    return ServedBoxesValidator


def _clip_to_image(boxes, original_shape, ratio_pad) -> None:
    """Clip letterboxed boxes (x1, y1, x2, y2), in place, to the image inside the letterbox's padding."""
    (gain_h, gain_w), (left, top) = ratio_pad
    height, width = original_shape
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(left, left + width * gain_w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(top, top + height * gain_h)


def compare(challenger: Evaluation, champion: Evaluation) -> tuple[dict[str, float], pd.DataFrame]:
    """Differences challenger - champion, per headline metric and per class."""
    differences = {name: challenger.metrics[name] - champion.metrics[name] for name in HEADLINE}
    mine = challenger.per_class.set_index("class")
    theirs = champion.per_class.set_index("class").reindex(mine.index)
    table = pd.DataFrame(
        {
            "class": mine.index,
            "mAP50": mine["mAP50"].to_numpy(),
            "champion_mAP50": theirs["mAP50"].to_numpy(),
            "delta_mAP50": (mine["mAP50"] - theirs["mAP50"]).to_numpy(),
            "mAP50-95": mine["mAP50-95"].to_numpy(),
            "champion_mAP50-95": theirs["mAP50-95"].to_numpy(),
            "delta_mAP50-95": (mine["mAP50-95"] - theirs["mAP50-95"]).to_numpy(),
        }
    )
    return differences, table


# --- figures (matplotlib, for the catalog and kedro-viz) ----------------------------------


def confusion_figure(errors: Errors, classes: list[str], title: str):
    """The confusion matrix at the working confidence, normalised per true class, counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak into

    labels = [*classes, "background"]
    counts = errors.confusion
    column_sums = counts.sum(axis=0, keepdims=True)
    normalised = np.divide(counts, column_sums, out=np.zeros_like(counts, dtype=float), where=column_sums > 0)
    size = 1.0 + 0.7 * len(labels)
    figure = Figure(figsize=(size + 1.5, size))
    axes = figure.subplots()
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    for (row, column), value in np.ndenumerate(counts):
        if value:
            axes.text(
                column,
                row,
                f"{int(value)}",
                ha="center",
                va="center",
                color="white" if normalised[row, column] > 0.5 else "black",
                fontsize=8,
            )
    axes.set_title(f"{title}\n(boxes with confidence >= {errors.conf:g}, IoU >= 0.45)", fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of the true class")
    figure.tight_layout()
    return figure


def pr_figure(evaluation: Evaluation, title: str, champion: Evaluation | None = None):
    """Precision-recall curve per class, the mean, and the champion's mean when given."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak into

    figure = Figure(figsize=(6.5, 5))
    axes = figure.subplots()
    per_class = evaluation.per_class.set_index("class")["mAP50"]
    for name, curve in evaluation.precision_curves.items():
        axes.plot(evaluation.recall_grid, curve, linewidth=1, label=f"{name} {per_class[name]:.3f}")
    if evaluation.precision_curves:
        mean = np.mean(list(evaluation.precision_curves.values()), axis=0)
        axes.plot(
            evaluation.recall_grid,
            mean,
            color="black",
            linewidth=2.5,
            label=f"all classes {evaluation.metrics['mAP50']:.3f} mAP50",
        )
    if champion is not None and champion.precision_curves:
        mean = np.mean(list(champion.precision_curves.values()), axis=0)
        axes.plot(
            champion.recall_grid,
            mean,
            color="grey",
            linestyle="--",
            linewidth=2,
            label=f"champion {champion.metrics['mAP50']:.3f} mAP50",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title)
    axes.legend(loc="lower left", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def per_class_figure(table: pd.DataFrame, title: str):
    """AP50 per class (and the champion's, when the table has it), as horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak into

    figure = Figure(figsize=(6.5, 1.2 + 0.45 * len(table)))
    axes = figure.subplots()
    positions = np.arange(len(table))
    has_champion = "champion_mAP50" in table
    height = 0.4 if has_champion else 0.7
    axes.barh(positions, table["mAP50"].fillna(0), height=height, label="this model")
    if has_champion:
        axes.barh(positions + height, table["champion_mAP50"].fillna(0), height=height, color="grey", label="champion")
        axes.legend(loc="lower right", fontsize=8)
    axes.set_yticks(positions + (height / 2 if has_champion else 0), table["class"])
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("AP50")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def rounded(metrics: dict[str, Any], decimals: int = 5) -> dict[str, Any]:
    """``metrics`` with every value a float of ``decimals`` places (summaries and tags stay readable)."""
    return {key: round(float(value), decimals) for key, value in metrics.items()}
