"""Decide whether a file is an image we can train on, and read what later steps need.

The checks are the ones Ultralytics applies to a data set (``PIL.Image.verify`` plus
the JPEG end-of-image marker, see ``ultralytics.data.utils.verify_image_label``), done
once at the door instead of at every training run, and extended to the PNG trailer.
``mode="decode"`` decodes every pixel instead, for drops that come from sources that
corrupt files in the middle rather than truncate them.
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

#: Formats the store accepts, by PIL format name, with the extension used in the store.
STORE_EXTENSIONS: dict[str, str] = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "MPO": "jpg",  # multi-picture JPEG from phones; its first frame is a plain JPEG
}

_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")  # MPO opens through JPEG
Image.init()  # register every bundled plugin now: `formats=` only knows registered ones


def _original_pil_open():
    """PIL's own ``Image.open``.

    Ultralytics replaces ``PIL.Image.open`` process-wide with a version that, on a file
    PIL cannot identify, tries to install and register an HEIF plugin (a download
    attempt, which fails offline). A check of untrusted input must not do that.
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", None) or Image.open


_pil_open = _original_pil_open()

#: The smallest side Ultralytics trains on: ``ultralytics.data.utils.check_image`` (used by
#: ``verify_image_label``) refuses an image unless both sides exceed 9 pixels (8.4.190:
#: ``assert (shape[0] > 9) & (shape[1] > 9)``). Mirrored, not imported: importing
#: ``ultralytics.data.utils`` pulls in torch (about 3 s per process, in every check
#: worker). Every format in ``STORE_EXTENSIONS`` is in its ``IMG_FORMATS``, and its
#: corrupt-JPEG rule (no end-of-image marker) is refused here rather than repaired at
#: every training run; tests/test_image_checks.py holds both rules against Ultralytics'.
MIN_IMAGE_SIDE = 10

#: File name extensions considered at all (matched case-insensitively).
CANDIDATE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"})

#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

ValidationMode = Literal["header", "decode"]


@dataclass(frozen=True)
class ImageFacts:
    """What the registry records about a valid image."""

    format: str  # store extension: jpg, png, webp, bmp, tiff
    width: int  # after EXIF orientation, as a model will see it
    height: int
    exif_orientation: int


class InvalidImageError(ValueError):
    """The bytes are not an image the project can use; the message says why."""


def inspect_image(data: bytes, *, max_pixels: int = 89_478_485, mode: ValidationMode = "header") -> ImageFacts:
    """Validate ``data`` as an image and return its facts, or raise ``InvalidImageError``.

    >>> from PIL import Image; import io
    >>> buf = io.BytesIO(); Image.new("RGB", (40, 30)).save(buf, "PNG")
    >>> inspect_image(buf.getvalue())
    ImageFacts(format='png', width=40, height=30, exif_orientation=1)
    """
    if not data:
        raise InvalidImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL only warns between max_pixels and twice that; a bomb is a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the formats we store: other plugins (an HEIF opener some libraries
            # register without its module installed) must not turn "not an image" into
            # an import error.
            image = _pil_open(io.BytesIO(data), formats=_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImageError(_unidentified_reason(data)) from None
    except Exception as exc:  # PIL raises many types for damaged headers
        raise InvalidImageError(f"damaged image header: {exc}") from None

    with image:
        fmt = STORE_EXTENSIONS.get(image.format or "")
        if fmt is None:
            raise InvalidImageError(f"unsupported image format {image.format!r}; accepted: JPEG, PNG, WebP, BMP, TIFF")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidImageError(f"image has no pixels ({width}x{height})")
        if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
            raise InvalidImageError(
                f"image is {width}x{height} pixels; Ultralytics trains only on images of at least "
                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
            )
        if width * height > max_pixels:
            raise InvalidImageError(
                f"decompression bomb refused: {width}x{height} = {width * height} pixels "
                f"exceeds the limit of {max_pixels} (parameter ingestion.max_pixels)"
            )
        try:
            orientation = int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
        except Exception:  # a broken EXIF block does not make the pixels unusable
            orientation = 1
        if orientation not in range(1, 9):
            orientation = 1
        if mode == "decode":
            _decode_fully(image)
        else:
            _check_structure(image, data)

    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageFacts(format=fmt, width=width, height=height, exif_orientation=orientation)


def _unidentified_reason(data: bytes) -> str:
    """Name the format of an image we do not store, or say it is no image at all."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _pil_open(io.BytesIO(data)) as other:
                return f"unsupported image format {other.format!r}; accepted: JPEG, PNG, WebP, BMP, TIFF"
    except Exception:
        return "not an image PIL can identify (wrong or unsupported format)"


def _check_structure(image: Image.Image, data: bytes) -> None:
    """Cheap checks that catch truncation and broken chunks without decoding pixels."""
    if image.format in ("JPEG", "MPO"):
        # A complete JPEG ends with the EOI marker; truncated uploads and interrupted
        # copies do not. Some cameras append padding after EOI, so look a little back.
        if b"\xff\xd9" not in data[-1024:]:
            raise InvalidImageError("truncated JPEG: no end-of-image marker")
        return
    try:
        # verify() must be the first call on an image object, hence a fresh open.
        with _pil_open(io.BytesIO(data), formats=_PIL_FORMATS) as fresh:
            fresh.verify()  # PNG: every chunk CRC up to IEND; others: header sanity
    except Exception as exc:
        raise InvalidImageError(f"corrupt {image.format} data: {exc}") from None
    if image.format == "PNG" and not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        raise InvalidImageError("truncated PNG: no IEND chunk")
    if image.format in ("WEBP", "TIFF", "BMP"):
        # verify() checks little for these formats; decoding them is cheap enough.
        _decode_fully(_pil_open(io.BytesIO(data), formats=_PIL_FORMATS))


def _decode_fully(image: Image.Image) -> None:
    try:
        image.load()
    except Exception as exc:
        raise InvalidImageError(f"image data cannot be decoded: {exc}") from None
