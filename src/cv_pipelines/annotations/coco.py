"""Read COCO instances files (CVAT's "COCO 1.0" export, or any labeled data set) into
annotation rows of a label set.

The file is validated with pydantic models, record by record: a file that is not a
COCO instances file at all (unreadable, not JSON, no ``categories``) is refused with
one sentence naming it; a record that is wrong (a NaN or infinite coordinate, a
missing ``bbox`` or ``file_name``, an id shared by two different images, an unknown
category or image) is left out and counted with one sentence naming the file, the
record and the fix. Boxes are clipped to the image; boxes that are degenerate after
clipping, far outside the image, repeated, or labeled outside the label set are
left out the same way. Nothing a record holds can put a NaN, an infinite or a
duplicated box into the registries.

pycocotools is not used to read: it indexes annotations by their id (two sharing an
id come back as one of them twice), sorts mixed int/str ids into a ``TypeError`` and
checks no value.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

#: A box narrower or lower than this many pixels after clipping is not a box.
MIN_BOX_SIDE_PX = 1.0

#: How many left-out records are logged one by one; the rest are counted per reason.
LOGGED_PROBLEMS = 20

#: How many sentences per reason a summary keeps (the counts are always complete).
KEPT_SENTENCES_PER_REASON = 100

_REEXPORT = "export it again as COCO 1.0 (an instances JSON with images, annotations and categories)"


@dataclass
class CocoImportProblems:
    """What was left out of a COCO file: one sentence per record, grouped by reason."""

    left_out: dict[str, list[str]] = field(default_factory=dict)
    clipped_boxes: int = 0

    def add(self, reason: str, sentence: str) -> None:
        """Record one left-out record under ``reason`` (a short phrase such as ``"duplicate box"``)."""
        self.left_out.setdefault(reason, []).append(sentence)

    def sentences(self) -> list[str]:
        """Every problem as the sentence that names the record and what is wrong with it."""
        return [sentence for sentences in self.left_out.values() for sentence in sentences]

    def count(self) -> int:
        """How many records were left out, all reasons together."""
        return sum(len(sentences) for sentences in self.left_out.values())

    def counts(self) -> dict[str, int]:
        """How many records were left out, per reason."""
        return {reason: len(sentences) for reason, sentences in self.left_out.items()}

    def grouped(self, limit: int = KEPT_SENTENCES_PER_REASON) -> dict[str, list[str]]:
        """The first ``limit`` sentences of each reason, for a summary file."""
        return {reason: sentences[:limit] for reason, sentences in self.left_out.items()}

    def copy(self) -> CocoImportProblems:
        """An independent copy, to add to."""
        return CocoImportProblems({k: list(v) for k, v in self.left_out.items()}, self.clipped_boxes)

    def log(self, logger: logging.Logger, limit: int = LOGGED_PROBLEMS) -> None:
        """Each problem once, the first ``limit`` of them one by one and the rest as counts (no flood)."""
        sentences = self.sentences()
        for sentence in sentences[:limit]:
            logger.warning(sentence)
        if len(sentences) > limit:
            # sentences() runs reason by reason: the first ``limit`` are the first reasons' sentences.
            rest, budget = [], limit
            for reason, count in self.counts().items():
                if count > budget:
                    rest.append(f"{count - max(budget, 0)} {reason}")
                budget -= count
            rest_text = ", ".join(rest)
            logger.warning(
                "... and %d more record(s) left out (%s), listed in the summary", len(sentences) - limit, rest_text
            )


@dataclass(frozen=True)
class CocoFrame:
    """One image of a COCO file with its boxes (label, x_min, y_min, x_max, y_max, occluded).

    ``left_out_boxes`` counts the annotation records of this image left out while reading
    the file (invalid, or of an undeclared category): a frame whose boxes were all left
    out is not an image with no objects.
    """

    file_name: str
    width: int
    height: int
    boxes: tuple[tuple[str, float, float, float, float, bool], ...]
    left_out_boxes: int = 0


@dataclass(frozen=True)
class CocoFrames:
    """The frames of one COCO file, in file order, with the records left out while reading it.

    ``categories`` are the names of the file's categories, in file order.
    """

    frames: tuple[CocoFrame, ...]
    problems: CocoImportProblems = field(default_factory=CocoImportProblems)
    categories: tuple[str, ...] = ()


# --- the models: what a record must look like ------------------------------------------------


def _coco_id(value: Any) -> int | str:
    # An id is an integer (COCO) or a string (some tools); never a bool, a float or null,
    # and never silently converted, so ``1`` and ``"1"`` stay two different ids.
    if type(value) not in (int, str) or value == "":
        raise ValueError("should be an integer or a non-empty string")
    return value


CocoId = Annotated[int | str, PlainValidator(_coco_id)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
ImageSide = Annotated[StrictInt, Field(ge=0)]


class _Record(BaseModel):
    # Strict: "12" is not a number and 1.5 is not an id. Extra keys (area, iscrowd,
    # segmentation, license...) are allowed and ignored.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class CocoImage(_Record):
    """``images[i]``: which file, and its size as the labeling tool saw it (0 or absent: unknown)."""

    id: CocoId
    file_name: Annotated[StrictStr, Field(min_length=1)]
    width: ImageSide | None = None
    height: ImageSide | None = None


class CocoCategory(_Record):
    """``categories[i]``: a label's id and name."""

    id: CocoId
    name: Annotated[StrictStr, Field(min_length=1)]


class CocoAttributes(_Record):
    """``annotations[i].attributes`` as CVAT writes them; only ``occluded`` is read."""

    occluded: StrictBool = False


class CocoAnnotation(_Record):
    """``annotations[i]``: one box, ``bbox = [x, y, width, height]`` in pixels."""

    id: CocoId | None = None
    image_id: CocoId
    category_id: CocoId
    bbox: Annotated[list[FiniteFloat], Field(min_length=4, max_length=4)]
    attributes: CocoAttributes | None = None

    @model_validator(mode="after")
    def _a_box(self) -> CocoAnnotation:
        x, y, w, h = self.bbox
        if w < 0 or h < 0:
            raise ValueError("bbox has a negative width or height (COCO boxes are [x, y, width, height])")
        if not (math.isfinite(x + w) and math.isfinite(y + h)):
            raise ValueError("bbox reaches beyond any finite coordinate")
        return self


class _CocoDocument(_Record):
    """The top level: three lists, read record by record."""

    images: list[Any]
    annotations: list[Any]
    categories: list[Any]


# --- reading a file ----------------------------------------------------------------------------


def read_coco_json(coco_file: Path) -> Any:
    """The JSON value of ``coco_file``: UTF-8 (a BOM is fine), UTF-16 or UTF-32 as ``json`` detects it.

    Raises:
        ValueError: one sentence naming the file, what is wrong and the fix.
    """
    try:
        data = coco_file.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"{coco_file} cannot be read ({exc.strerror or exc}); check the file and its permissions"
        ) from None
    if not data.strip():
        raise ValueError(f"{coco_file} is empty; {_REEXPORT}")
    encoding = json.detect_encoding(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{coco_file} is not {encoding.upper()} text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 and import again"
        ) from None
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{coco_file} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {_REEXPORT}"
        ) from None
    except RecursionError:
        raise ValueError(
            f"{coco_file} nests JSON deeper than it can be read (a COCO file is a few levels deep); {_REEXPORT}"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ValueError(f"{coco_file} holds a value JSON cannot read ({exc}); {_REEXPORT}") from None


def load_coco_frames(coco_file: Path) -> CocoFrames:
    """Every valid image of ``coco_file`` with its valid boxes, in file order, and what was left out.

    Raises:
        ValueError: the file is not a COCO instances file (one sentence naming it).
    """
    document = _document(coco_file, read_coco_json(coco_file))
    source = coco_file.name
    problems = CocoImportProblems()
    categories = _categories(coco_file, document.categories)
    images = _valid_images(source, document.images, problems)
    boxes: dict[int | str, list[tuple[str, float, float, float, float, bool]]] = {key: [] for key in images}
    left_out = dict.fromkeys(images, 0)
    image_of = _image_key_lookup(images)

    def leave_out_box_of(image_id: Any) -> None:
        # A record left out still says its image had a box: that image is no background.
        key = image_of(image_id)
        if key is not None:
            left_out[key] += 1

    for index, annotation in _valid_annotations(source, document.annotations, problems, leave_out_box_of):
        where = _record(source, "annotations", index, annotation.id)
        if annotation.image_id not in images:
            problems.add(*_missing_image(where, annotation.image_id, images, document.images))
            leave_out_box_of(annotation.image_id)
            continue
        if annotation.category_id not in categories:
            known = ", ".join(f"{key!r} {name!r}" for key, name in list(categories.items())[:10])
            problems.add(
                "unknown category",
                f"{where} names category_id {annotation.category_id!r}, which is not among the file's categories "
                f"({known}); it was left out: add the category or fix the annotation's category_id",
            )
            left_out[annotation.image_id] += 1
            continue
        x, y, w, h = annotation.bbox
        occluded = bool(annotation.attributes and annotation.attributes.occluded)
        boxes[annotation.image_id].append((categories[annotation.category_id], x, y, x + w, y + h, occluded))
    frames = tuple(
        CocoFrame(image.file_name, image.width or 0, image.height or 0, tuple(boxes[key]), left_out[key])
        for key, image in images.items()
    )
    return CocoFrames(frames, problems, tuple(dict.fromkeys(categories.values())))


def _image_key_lookup(images: Mapping[int | str, CocoImage]) -> Callable[[Any], int | str | None]:
    """The image an annotation's ``image_id`` most likely meant, even one of the wrong type (``"1"``, ``1.0``)."""
    by_text = {str(key): key for key in images}

    def lookup(image_id: Any) -> int | str | None:
        if type(image_id) in (int, str) and image_id in images:
            return image_id
        if isinstance(image_id, float) and image_id.is_integer():
            image_id = int(image_id)
        if isinstance(image_id, int | str) and not isinstance(image_id, bool):
            return by_text.get(str(image_id))
        return None

    return lookup


def _document(coco_file: Path, data: Any) -> _CocoDocument:
    if not isinstance(data, dict):
        raise ValueError(
            f"{coco_file} holds a JSON {_json_type(data)}, not an object with images, annotations and categories; "
            f"{_REEXPORT}"
        )
    try:
        return _CocoDocument.model_validate(data)
    except ValidationError as exc:
        hint = ' (a file whose images have no boxes still needs "annotations": [])' if "annotations" not in data else ""
        raise ValueError(f"{coco_file} is not a COCO instances file ({_describe(exc)}); {_REEXPORT}{hint}") from None


def _categories(coco_file: Path, raw: list[Any]) -> dict[int | str, str]:
    """Category id -> name; a bad category spoils every box of it, so it stops the import."""
    categories: dict[int | str, str] = {}
    for index, item in enumerate(raw):
        where = _record(str(coco_file), "categories", index, item.get("id") if isinstance(item, dict) else None)
        try:
            category = CocoCategory.model_validate(item)
        except ValidationError as exc:
            raise ValueError(f"{where} is not a category ({_describe(exc)}); give it an id and a name") from None
        if categories.get(category.id, category.name) != category.name:
            raise ValueError(
                f"{where} reuses id {category.id!r} of category {categories[category.id]!r} for {category.name!r}; "
                "give each category its own id"
            )
        categories[category.id] = category.name
    return categories


def _valid_images(source: str, raw: list[Any], problems: CocoImportProblems) -> dict[int | str, CocoImage]:
    """The images whose record is valid and unambiguous, by id; the others are left out with their reason."""
    valid: list[tuple[int, CocoImage]] = []
    for index, item in enumerate(raw):
        try:
            valid.append((index, CocoImage.model_validate(item)))
        except ValidationError as exc:
            where = _record(source, "images", index, item.get("id") if isinstance(item, dict) else None)
            problems.add(
                "invalid image record",
                f"{where} was left out with its boxes: {_describe(exc)}; give it an id and the file_name of its image",
            )
    kept = _unambiguous(source, valid, lambda image: image.id, "id", problems)
    kept = _unambiguous(source, kept, lambda image: image.file_name, "file_name", problems)
    return {image.id: image for _, image in kept}


def _unambiguous(
    source: str,
    records: list[tuple[int, CocoImage]],
    key: Callable[[CocoImage], Any],
    name: str,
    problems: CocoImportProblems,
) -> list[tuple[int, CocoImage]]:
    """Images whose ``key`` no other record shares; an exact repeat is kept once, a conflict left out."""
    groups: dict[Any, list[tuple[int, CocoImage]]] = {}
    for index, image in records:
        groups.setdefault(key(image), []).append((index, image))
    kept = []
    for value, group in groups.items():
        first_index, first = group[0]
        if all(image == first for _, image in group):
            kept.append(group[0])
            for index, _ in group[1:]:
                problems.add(
                    "repeated image record",
                    f"{_record(source, 'images', index, first.id)} repeats images[{first_index}]; it was counted once",
                )
            continue
        indexes = ", ".join(f"images[{index}]" for index, _ in group)
        for index, image in group:
            problems.add(
                f"image {name} shared by different images",
                f"{_record(source, 'images', index, image.id)} shares {name} {value!r} with another image "
                f"({indexes}), so its boxes cannot be told apart; it was left out with its boxes: "
                f"give each image its own {name}" + (" or merge the records" if name == "file_name" else ""),
            )
    kept.sort(key=lambda pair: pair[0])
    return kept


def _valid_annotations(
    source: str, raw: list[Any], problems: CocoImportProblems, left_out: Callable[[Any], None]
) -> Iterator[tuple[int, CocoAnnotation]]:
    """The valid annotations with their index; an exact repeat (same id, same content) only once.

    ``left_out(image_id)`` is told the raw ``image_id`` of each invalid record.
    """
    seen: dict[CocoAnnotation, int] = {}
    for index, item in enumerate(raw):
        try:
            annotation = CocoAnnotation.model_validate(item)
        except ValidationError as exc:
            where = _record(source, "annotations", index, item.get("id") if isinstance(item, dict) else None)
            problems.add(
                "invalid annotation record",
                f"{where} was left out: {_describe(exc)}; give it an image_id, a category_id and a bbox "
                "[x, y, width, height] of four finite pixel numbers",
            )
            if isinstance(item, dict):
                left_out(item.get("image_id"))
            continue
        frozen = annotation.model_copy(update={"bbox": tuple(annotation.bbox)})
        if frozen in seen:
            problems.add(
                "repeated annotation record",
                f"{_record(source, 'annotations', index, annotation.id)} repeats annotations[{seen[frozen]}]; "
                "its box was kept once",
            )
            continue
        seen[frozen] = index
        yield index, annotation


def _missing_image(
    where: str, image_id: int | str, images: Mapping[int | str, CocoImage], raw_images: list[Any]
) -> tuple[str, str]:
    """Why an annotation's image is not there: the image was left out, or the file has none with that id."""
    ids = {item.get("id") for item in raw_images if isinstance(item, dict) and isinstance(item.get("id"), int | str)}
    if image_id in ids:
        return "box of an image left out", f"{where} belongs to image {image_id!r}, which was left out; so was the box"
    hint = ""
    if any(str(other) == str(image_id) for other in ids):
        hint = f" (an image has id {str(image_id)!r} of another type: give ids one type, integers or strings)"
    return (
        "box of a missing image",
        f"{where} names image_id {image_id!r}, which is not among the file's images{hint}; "
        "it was left out: add the image record or fix the annotation's image_id",
    )


def _record(source: str, kind: str, index: int, record_id: Any) -> str:
    shown = f" (id {record_id!r})" if isinstance(record_id, int | str) and not isinstance(record_id, bool) else ""
    return f"{source}: {kind}[{index}]{shown}"


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: what is wrong`` phrases, with the field's location (``bbox[2]``)."""
    phrases = []
    for error in exc.errors(include_url=False)[:3]:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
        message = error["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if error["type"] == "missing":
            phrases.append(f"{where} is missing")
        elif error["type"] == "model_type" and not where:
            phrases.append(f"the record is a JSON {_json_type(error['input'])}, not an object")
        else:
            phrases.append(f"{where}: {message}" if where else message)
    return "; ".join(phrases)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# --- frames into rows --------------------------------------------------------------------------


def frames_to_rows(
    frames: CocoFrames,
    *,
    image_for_frame: Callable[[str], tuple[str, int, int] | None],
    labels: Sequence[str],
    source: str,
) -> tuple[list[dict], list[dict], CocoImportProblems]:
    """Annotation rows and labeled-image rows for ``frames``.

    ``image_for_frame(file_name)`` returns ``(image_id, width, height)`` of the stored
    image (size after EXIF orientation), or None when the frame is not one of ours.
    Every known frame becomes a labeled image, with no boxes if it has none: background
    images are data too. A frame whose boxes were all left out (here or while reading the
    file) is not one: it is left out with that reason, never recorded as an image with no
    objects, so it stays unlabeled for the label set. A frame labeled at another size than the stored image's (its
    EXIF-rotated size aside) is left out: its boxes are in other pixels. Two frames of the same stored image (the same bytes under two
    names) count once when their boxes agree and are left out when they do not. The
    problems start from those met while reading ``frames``.
    """
    problems = frames.problems.copy()
    by_image: dict[str, list[tuple[CocoFrame, int, int]]] = {}
    for frame in frames.frames:
        found = image_for_frame(frame.file_name)
        if found is None:
            problems.add(
                "frame without a stored image",
                f"{source}: frame {frame.file_name!r} matches no stored image; it was left out "
                "(was it renamed, or rejected at ingestion?)",
            )
            continue
        image_id, width, height = found
        if frame.width and frame.height and (frame.width, frame.height) not in ((width, height), (height, width)):
            problems.add(
                "image size differs from the stored image",
                f"{source}: frame {frame.file_name!r} was labeled as a {frame.width}x{frame.height} image but the "
                f"stored image is {width}x{height}, so its boxes would land elsewhere; it was left out: "
                "import the annotations made on these very files",
            )
            continue
        by_image.setdefault(image_id, []).append((frame, width, height))
    annotations: list[dict] = []
    labeled: list[dict] = []
    for image_id, entries in by_image.items():
        group, rows_of_group = [], []
        for entry in entries:
            rows = _frame_rows(source, image_id, *entry, labels, problems)
            frame = entry[0]
            if not rows and (frame.boxes or frame.left_out_boxes):
                had = len(frame.boxes) + frame.left_out_boxes
                problems.add(
                    "image whose boxes were all left out",
                    f"{source}: frame {frame.file_name!r} had {had} box(es), all left out (each for its reason), "
                    "so it was set aside, not recorded as an image with no objects: fix its boxes and import or "
                    "pull it again",
                )
                continue
            group.append(entry)
            rows_of_group.append(rows)
        if not group:
            continue
        if len(group) > 1 and not _same_boxes(rows_of_group):
            names = ", ".join(repr(frame.file_name) for frame, _, _ in group)
            for frame, _, _ in group:
                problems.add(
                    "frames of one image with different boxes",
                    f"{source}: frame {frame.file_name!r} is the same image (same bytes) as frames {names} "
                    "with different boxes; it was left out: keep one of them or make their boxes agree",
                )
            continue
        for frame, _, _ in group[1:]:
            problems.add(
                "frame repeating an image",
                f"{source}: frame {frame.file_name!r} is the same image (same bytes) as frame "
                f"{group[0][0].file_name!r} with the same boxes; it was counted once",
            )
        annotations.extend(rows_of_group[0])
        labeled.append({"image_id": image_id, "num_boxes": len(rows_of_group[0])})
    return annotations, labeled, problems


def _frame_rows(
    source: str,
    image_id: str,
    frame: CocoFrame,
    width: int,
    height: int,
    labels: Sequence[str],
    problems: CocoImportProblems,
) -> list[dict]:
    """The box rows of one frame on its stored image: labeled in the set, clipped, each box once."""
    rows: list[dict] = []
    seen: set[tuple[str, float, float, float, float]] = set()
    for label, x1, y1, x2, y2, occluded in frame.boxes:
        where = f"{source}: frame {frame.file_name!r} has a {label!r} box [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if label not in labels:
            problems.add(
                "label not in the label set",
                f"{where} labeled outside the label set ({', '.join(labels)}); it was left out: "
                "add the label to labeling.labels or fix it in the labeling tool",
            )
            continue
        if x1 < -width or y1 < -height or x2 > 2 * width or y2 > 2 * height:
            problems.add(
                "box far outside the image",
                f"{where} that reaches more than the image's own size beyond the {width}x{height} image; "
                "it was left out: are its coordinates in pixels of this image?",
            )
            continue
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 - cx1 < MIN_BOX_SIDE_PX or cy2 - cy1 < MIN_BOX_SIDE_PX:
            problems.add(
                "degenerate box",
                f"{where} that is degenerate (less than {MIN_BOX_SIDE_PX:g} px inside the {width}x{height} image); "
                "it was left out",
            )
            continue
        if (label, cx1, cy1, cx2, cy2) in seen:
            problems.add("duplicate box", f"{where} twice; it was kept once")
            continue
        seen.add((label, cx1, cy1, cx2, cy2))
        problems.clipped_boxes += (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
        row = {"image_id": image_id, "label": label, "x_min": cx1, "y_min": cy1, "x_max": cx2, "y_max": cy2}
        rows.append(row | {"occluded": occluded})
    return rows


def _same_boxes(rows_of_group: list[list[dict]]) -> bool:
    def key(rows: list[dict]) -> list[tuple]:
        return sorted((r["label"], r["x_min"], r["y_min"], r["x_max"], r["y_max"], r["occluded"]) for r in rows)

    return all(key(rows) == key(rows_of_group[0]) for rows in rows_of_group[1:])


def image_lookup_by_stem(images: Mapping[str, tuple[int, int]]) -> Callable[[str], tuple[str, int, int] | None]:
    """Frame names of tasks this project created are ``<image_id>.<ext>`` (or a path to it)."""

    def lookup(file_name: str) -> tuple[str, int, int] | None:
        stem = Path(file_name).name.rsplit(".", 1)[0]
        size = images.get(stem)
        return (stem, *size) if size else None

    return lookup
