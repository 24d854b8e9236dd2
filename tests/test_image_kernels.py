"""The data pipeline's compiled kernels against Pillow and MindSpore's own ops, and their fallbacks."""
import mindspore.dataset.vision as vision
import numpy as np
import pytest
from PIL import Image
from sample_photos import bundled_photos

from src.ops import image_kernels

FILL = (124, 116, 104)
RESAMPLES = [Image.BILINEAR, Image.BICUBIC]


@pytest.fixture(scope="module")
def photo():
    """A real photo crop, not square (rotations by 90 degrees take Pillow's general path too)."""
    return np.ascontiguousarray(bundled_photos()[1][40:200, 60:290])


@pytest.fixture(params=["compiled", "fallback"])
def kernels(request, monkeypatch):
    if request.param == "compiled":
        assert image_kernels.kernels() is not None, "image_kernels.cc did not compile"
    else:
        monkeypatch.setattr(image_kernels, "kernels", lambda: None)
    return request.param


def pil_affine(photo, matrix, resample):
    image = Image.fromarray(photo)
    return np.asarray(image.transform(image.size, Image.AFFINE, matrix, resample=resample, fillcolor=FILL))


def affine_matrices(width, height):
    """Shears, translations (whole and fractional pixels), scalings and general maps, some sampling
    outside the image, some exactly on pixel centres."""
    rng = np.random.default_rng(0)
    yield from [(1, 0, 0, 0, 1, 0), (1, 0.3, 0, 0, 1, 0), (1, 0, 0, -0.27, 1, 0), (1, 0, 0.45 * width, 0, 1, 0),
                (1, 0, 0, 0, 1, -0.3 * height), (1, 0, 7, 0, 1, -3), (0.5, 0, 10, 0, 2, -20), (-1, 0, width, 0, 1, 0)]
    for _ in range(6):
        yield tuple(rng.uniform(-1.5, 1.5, 6) * [1, 1, width, 1, 1, height])


@pytest.mark.parametrize("resample", RESAMPLES)
def test_affine_transform_equals_pillow_pixel_for_pixel(photo, resample, kernels):
    height, width = photo.shape[:2]
    for matrix in affine_matrices(width, height):
        ours = image_kernels.affine_transform(photo, matrix, resample, FILL)
        assert ours.dtype == np.uint8 and ours.shape == photo.shape
        np.testing.assert_array_equal(ours, pil_affine(photo, matrix, resample), err_msg=str(matrix))


@pytest.mark.parametrize("resample", RESAMPLES)
def test_rotate_equals_pillow_pixel_for_pixel(photo, resample, kernels):
    for degrees in (0, 90, 180, 270, -90, 360, 17.5, -29.0, 3.3):
        reference = np.asarray(Image.fromarray(photo).rotate(degrees, resample=resample, fillcolor=FILL))
        np.testing.assert_array_equal(image_kernels.rotate(photo, degrees, resample, FILL), reference,
                                      err_msg=str(degrees))


def test_nearest_resampling_and_non_rgb_images_are_left_to_pillow(photo):
    gray = np.ascontiguousarray(photo[..., 0])
    matrix = (1, 0.2, 3.5, 0.1, 1, -2)
    np.testing.assert_array_equal(image_kernels.affine_transform(photo, matrix, Image.NEAREST, FILL),
                                  pil_affine(photo, matrix, Image.NEAREST))
    reference = Image.fromarray(gray).transform(gray.shape[::-1], Image.AFFINE, matrix, resample=Image.BICUBIC,
                                                fillcolor=FILL[0])
    np.testing.assert_array_equal(image_kernels.affine_transform(gray, matrix, Image.BICUBIC, FILL[0]),
                                  np.asarray(reference))


def test_normalize_to_chw_equals_mindspores_normalize_and_hwc2chw(photo, kernels):
    mean, std = np.float32([123.675, 116.28, 103.53]), np.float32([58.395, 57.12, 57.375])
    reference = vision.HWC2CHW()(vision.Normalize(mean=mean.tolist(), std=std.tolist())(photo))
    ours = image_kernels.normalize_to_chw(photo[:, ::-1], mean, std)  # a non-contiguous view, too
    assert ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_allclose(ours, reference[:, :, ::-1], rtol=1e-6, atol=1e-6)
