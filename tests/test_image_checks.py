import pytest

from cv_pipelines.images.checks import InvalidImageError, inspect_image
from tests.support.images import image_bytes, png_with_declared_size


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")],
)
def test_accepts_every_supported_format(fmt, expected):
    facts = inspect_image(image_bytes(1, size=(40, 30), fmt=fmt))
    assert (facts.format, facts.width, facts.height) == (expected, 40, 30)


@pytest.mark.parametrize("mode", ["header", "decode"])
def test_exif_rotation_swaps_width_and_height(mode):
    facts = inspect_image(image_bytes(2, size=(40, 30), exif_orientation=6), mode=mode)
    assert (facts.width, facts.height, facts.exif_orientation) == (30, 40, 6)


@pytest.mark.parametrize("mode", ["header", "decode"])
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: b"", "empty"),
        (lambda: b"just some text, not an image\n", "not an image"),
        (lambda: image_bytes(3, size=(64, 64))[:-200], "truncated"),
        (lambda: image_bytes(3, size=(64, 64), fmt="PNG")[:-30], "truncated|corrupt PNG"),
        (lambda: image_bytes(4, fmt="GIF"), "unsupported image format"),
        (lambda: png_with_declared_size(60_000, 60_000), "decompression bomb"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "gif", "bomb"],
)
def test_rejects_what_cannot_be_trained_on(make, reason, mode):
    with pytest.raises(InvalidImageError, match=reason):
        inspect_image(make(), mode=mode)


def test_pixel_limit_is_a_parameter():
    data = image_bytes(5, size=(100, 100), fmt="PNG")
    assert inspect_image(data, max_pixels=10_000).width == 100
    with pytest.raises(InvalidImageError, match="exceeds the limit of 9999"):
        inspect_image(data, max_pixels=9_999)


def test_verdicts_do_not_change_after_ultralytics_registers_its_image_openers():
    """Importing Ultralytics registers extra PIL openers (HEIF) whose module may be missing."""
    import ultralytics.data.utils  # noqa: F401

    with pytest.raises(InvalidImageError, match="not an image"):
        inspect_image(b"just some text, not an image\n")
    with pytest.raises(InvalidImageError, match="unsupported image format 'GIF'"):
        inspect_image(image_bytes(4, fmt="GIF"))
    assert inspect_image(image_bytes(5, fmt="WEBP")).format == "webp"
