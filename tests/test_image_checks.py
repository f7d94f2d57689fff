import pytest

from cv_pipelines.images.checks import MIN_IMAGE_SIDE, STORE_EXTENSIONS, InvalidImageError, inspect_image
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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [(1, 1), (9, 40), (40, 9), (9, 9), (10, 10), (10, 40)])
def test_the_smallest_size_is_ultralytics_own(tmp_path, size, fmt):
    """Ultralytics' check_image (what verify_image_label runs on every training image) gives the same verdict."""
    from ultralytics.data.utils import check_image

    data = image_bytes(6, size=size, fmt=fmt)
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data)
    try:
        check_image(str(path))
        ultralytics_accepts = True
    except AssertionError:
        ultralytics_accepts = False
    try:
        facts = inspect_image(data)
        accepted = True
    except InvalidImageError as exc:
        accepted = False
        assert str(exc) == (
            f"image is {size[0]}x{size[1]} pixels; Ultralytics trains only on images of at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
        )
    assert accepted == ultralytics_accepts == (min(size) >= 10)
    if accepted:
        assert (facts.width, facts.height) == size


def test_every_stored_format_is_one_ultralytics_trains_on():
    from ultralytics.data.utils import IMG_FORMATS

    assert {name.lower() for name in STORE_EXTENSIONS} <= IMG_FORMATS
    assert set(STORE_EXTENSIONS.values()) <= IMG_FORMATS
