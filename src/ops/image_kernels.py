"""Per-image kernels for the data pipeline (csrc/image_kernels.cc, compiled on first use as the model kernels
are): Pillow's affine resampling and rotation, pixel for pixel, and normalisation of an HWC uint8 image into
CHW float32.

Pillow's bicubic affine transform took a fifth of the ImageNet training pipeline's time (the geometric ops of
RandAugment); the kernel repeats its arithmetic without the per-pixel overhead. They are called through ctypes,
which releases the GIL, so the pipeline's threads run them in parallel. Where nothing can be compiled or the
fused kernels are switched off (FUSED_CPU_KERNELS=0, `use_fused_cpu_kernels(False)`), Pillow and NumPy compute
the same results.
"""
import ctypes
import functools
import math

import numpy as np
from PIL import Image

from src.ops import cpu_kernels

_POINTER, _INT64 = ctypes.c_void_p, ctypes.c_int64


@functools.lru_cache(maxsize=None)
def _load():
    path = cpu_kernels.library_path("image_kernels")
    if path is None:
        return None
    library = ctypes.CDLL(path)
    library.AffineResampleRgb.argtypes = [_POINTER, _INT64, _INT64, _POINTER, ctypes.c_int32, _POINTER, _POINTER]
    library.NormalizeToChw.argtypes = [_POINTER, _INT64, _INT64, _POINTER, _POINTER, _POINTER]
    for function in (library.AffineResampleRgb, library.NormalizeToChw):
        function.restype = None
    return library


def kernels():
    """The compiled library, or None where it cannot be built or the fused kernels are switched off."""
    return _load() if cpu_kernels.fused_kernels_switched_on() else None


def affine_transform(image, matrix, resample, fill):
    """Pillow's `Image.fromarray(image).transform(size, AFFINE, matrix, resample, fillcolor=fill)` of an HWC
    uint8 image: output pixel (x, y) samples the input at matrix * (x + 0.5, y + 0.5, 1)."""
    library = kernels()
    if library is None or resample not in (Image.BILINEAR, Image.BICUBIC) or image.ndim != 3 or image.shape[2] != 3:
        pil_image = Image.fromarray(image)
        return np.asarray(pil_image.transform(pil_image.size, Image.AFFINE, tuple(matrix), resample=resample,
                                              fillcolor=fill))
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, _ = image.shape
    fill = np.broadcast_to(np.asarray(fill, np.uint8), (3,)).copy()
    coefficients = np.asarray(matrix, np.float64)
    out = np.empty_like(image)
    library.AffineResampleRgb(image.ctypes.data, height, width, coefficients.ctypes.data,
                              int(resample == Image.BICUBIC), fill.ctypes.data, out.ctypes.data)
    return out


def rotation_matrix(degrees, width, height):
    """The affine matrix of Pillow's `Image.rotate(degrees)` (counter-clockwise about the centre, same size)."""
    angle = -math.radians(degrees % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    center_x, center_y = width / 2, height / 2
    return a, b, a * -center_x + b * -center_y + center_x, d, e, d * -center_x + e * -center_y + center_y


def rotate(image, degrees, resample, fill):
    """Pillow's `Image.fromarray(image).rotate(degrees, resample, fillcolor=fill)` of an HWC uint8 image."""
    height, width = image.shape[:2]
    return affine_transform(image, rotation_matrix(degrees, width, height), resample, fill)


def normalize_to_chw(image, mean, std):
    """(image - mean) / std per channel of an HWC uint8 image, as a CHW float32 array (mean and std float32)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, channels = image.shape
    library = kernels()
    if library is None:
        return ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy()
    mean, std = (np.ascontiguousarray(values, np.float32) for values in (mean, std))
    out = np.empty((channels, height, width), np.float32)
    library.NormalizeToChw(image.ctypes.data, height * width, channels, mean.ctypes.data, std.ctypes.data,
                           out.ctypes.data)
    return out
