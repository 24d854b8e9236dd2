"""RandAugment with timm's semantics (`rand-m9-mstd0.5-inc1` and friends).

timm's `rand_augment_transform`: each image gets `num_layers` ops drawn uniformly with
replacement from the op set; each op then applies with probability `prob` (0.5) at a
magnitude drawn from N(m, mstd) and clipped to [0, mmax] (10 by default); signed ops negate
their argument with probability 0.5. Magnitudes map to op arguments as timm's LEVEL_TO_ARG.

Ops run on HWC uint8 arrays. Where MindSpore's C++ op computes the same thing as timm's PIL
op (Invert, Posterize, Solarize, AutoContrast) the C++ op is used. Where it does not, PIL is
used as in timm: the geometric ops (MindSpore's Affine shears and rotates about the image
centre with torchvision's conventions, timm's PIL transforms shear and translate about the
origin and pick bilinear or bicubic at random), Equalize (MindSpore's histogram mapping differs
from PIL's), the ImageEnhance blends (PIL rounds its degenerate images differently from
MindSpore's Adjust* ops) and SolarizeAdd (no C++ op).
"""
import re

import mindspore.dataset.vision as vision
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from src.data.augment import ProcessLocalRandom
from src.errors import UserInputError

LEVEL_DENOM = 10.0
FILL = (128, 128, 128)
TRANSLATE_PCT = 0.45

RAND_TRANSFORMS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                   "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
RAND_INCREASING_TRANSFORMS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                              "TranslateYRel"]


# ----- magnitude -> op arguments (timm's LEVEL_TO_ARG) ----- #

def _signed(value, rng):
    return -value if rng.random() > 0.5 else value


def _enhance(level, rng):
    return (level / LEVEL_DENOM) * 1.8 + 0.1


def _enhance_increasing(level, rng):
    return max(0.1, 1.0 + _signed((level / LEVEL_DENOM) * 0.9, rng))


def _posterize(level, rng):
    return int((level / LEVEL_DENOM) * 4)


def _solarize(level, rng):
    return min(256, int((level / LEVEL_DENOM) * 256))


LEVEL_TO_ARG = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": lambda level, rng: _signed((level / LEVEL_DENOM) * 30.0, rng),
    "Posterize": _posterize,
    "PosterizeIncreasing": lambda level, rng: 4 - _posterize(level, rng),
    "Solarize": _solarize,
    "SolarizeIncreasing": lambda level, rng: 256 - _solarize(level, rng),
    "SolarizeAdd": lambda level, rng: min(128, int((level / LEVEL_DENOM) * 110)),
    "Color": _enhance,
    "ColorIncreasing": _enhance_increasing,
    "Contrast": _enhance,
    "ContrastIncreasing": _enhance_increasing,
    "Brightness": _enhance,
    "BrightnessIncreasing": _enhance_increasing,
    "Sharpness": _enhance,
    "SharpnessIncreasing": _enhance_increasing,
    "ShearX": lambda level, rng: _signed((level / LEVEL_DENOM) * 0.3, rng),
    "ShearY": lambda level, rng: _signed((level / LEVEL_DENOM) * 0.3, rng),
    "TranslateXRel": lambda level, rng: _signed((level / LEVEL_DENOM) * TRANSLATE_PCT, rng),
    "TranslateYRel": lambda level, rng: _signed((level / LEVEL_DENOM) * TRANSLATE_PCT, rng),
}


# ----- the ops, on HWC uint8 arrays ----- #

def _pil_op(function):
    def apply(image, arg, rng):
        return np.asarray(function(Image.fromarray(image), arg, rng))
    return apply


def _affine(matrix_of):
    """A PIL affine transform as timm applies it: fill grey, bilinear or bicubic at random."""
    def transform(img, arg, rng):
        resample = Image.BILINEAR if rng.random() < 0.5 else Image.BICUBIC
        return img.transform(img.size, Image.AFFINE, matrix_of(img, arg), resample=resample, fillcolor=FILL)
    return _pil_op(transform)


def _rotate(img, degrees, rng):
    resample = Image.BILINEAR if rng.random() < 0.5 else Image.BICUBIC
    return img.rotate(degrees, resample=resample, fillcolor=FILL)


def _solarize_add(image, add, rng):
    lut = np.arange(256)
    lut = np.where(lut < 128, np.minimum(255, lut + add), lut).astype(np.uint8)
    return lut[image]


def _enhance_op(enhancer):
    return _pil_op(lambda img, factor, rng: enhancer(img).enhance(factor))


def _solarize_op(image, threshold, rng):
    # PIL inverts pixels >= threshold; MindSpore's Solarize inverts those within [low, high]
    return image if threshold >= 256 else vision.Solarize((float(threshold), 255.0))(image)


def _posterize_op(image, bits, rng):
    return image if bits >= 8 else vision.Posterize(int(bits))(image)


OPS = {
    "AutoContrast": lambda image, arg, rng: vision.AutoContrast()(image),
    "Equalize": _pil_op(lambda img, arg, rng: ImageOps.equalize(img)),
    "Invert": lambda image, arg, rng: vision.Invert()(image),
    "Rotate": _pil_op(_rotate),
    "Posterize": _posterize_op,
    "PosterizeIncreasing": _posterize_op,
    "Solarize": _solarize_op,
    "SolarizeIncreasing": _solarize_op,
    "SolarizeAdd": _solarize_add,
    "Color": _enhance_op(ImageEnhance.Color),
    "ColorIncreasing": _enhance_op(ImageEnhance.Color),
    "Contrast": _enhance_op(ImageEnhance.Contrast),
    "ContrastIncreasing": _enhance_op(ImageEnhance.Contrast),
    "Brightness": _enhance_op(ImageEnhance.Brightness),
    "BrightnessIncreasing": _enhance_op(ImageEnhance.Brightness),
    "Sharpness": _enhance_op(ImageEnhance.Sharpness),
    "SharpnessIncreasing": _enhance_op(ImageEnhance.Sharpness),
    "ShearX": _affine(lambda img, factor: (1, factor, 0, 0, 1, 0)),
    "ShearY": _affine(lambda img, factor: (1, 0, 0, factor, 1, 0)),
    "TranslateXRel": _affine(lambda img, pct: (1, 0, pct * img.size[0], 0, 1, 0)),
    "TranslateYRel": _affine(lambda img, pct: (1, 0, 0, 0, 1, pct * img.size[1])),
}


class RandAugment:
    """Callable on an HWC uint8 image; `sample()` exposes the random choices for testing."""

    def __init__(self, magnitude=10.0, num_layers=2, prob=0.5, magnitude_std=0.0, magnitude_max=None,
                 increasing=False, seed=None):
        self.magnitude = magnitude
        self.num_layers = num_layers
        self.prob = prob
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.transforms = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
        self.random = ProcessLocalRandom(seed)

    def sample_magnitude(self):
        magnitude = self.magnitude
        if self.magnitude_std == float("inf"):
            magnitude = self.random.rng.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = self.random.rng.normal(magnitude, self.magnitude_std)
        return max(0.0, min(magnitude, self.magnitude_max or LEVEL_DENOM))

    def sample(self):
        """[(op name, argument)] of the ops that apply to one image (after the per-op coin flips)."""
        chosen = []
        for name in self.random.rng.choice(self.transforms, self.num_layers, replace=True):
            if self.prob < 1.0 and self.random.rng.random() > self.prob:
                continue
            magnitude = self.sample_magnitude()
            level_to_arg = LEVEL_TO_ARG[name]
            chosen.append((str(name), level_to_arg(magnitude, self.random.rng) if level_to_arg else None))
        return chosen

    def __call__(self, image):
        image = np.ascontiguousarray(image, dtype=np.uint8)
        for name, arg in self.sample():
            image = np.ascontiguousarray(OPS[name](image, arg, self.random.rng))
        return image


def rand_augment_from_string(policy, seed=None):
    """A RandAugment from timm's policy string, e.g. 'rand-m9-mstd0.5-inc1' or 'rand-m7-n3'."""
    sections = policy.split("-")
    if sections[0] != "rand":
        raise UserInputError(f"auto_augment '{policy}': only RandAugment policies ('rand-...') are supported")
    kwargs = {}
    for section in sections[1:]:
        match = re.fullmatch(r"([a-z]+)([0-9.]+|inf)", section)
        keys = {"m": ("magnitude", float), "n": ("num_layers", int), "p": ("prob", float),
                "mstd": ("magnitude_std", float), "mmax": ("magnitude_max", float),
                "inc": ("increasing", lambda v: bool(int(v)))}
        if not match or match.group(1) not in keys:
            raise UserInputError(f"auto_augment '{policy}': unknown section '{section}'")
        name, convert = keys[match.group(1)]
        kwargs[name] = convert(match.group(2))
    if kwargs.get("magnitude_std", 0) > 100:  # timm: a huge std means uniform sampling in [0, m]
        kwargs["magnitude_std"] = float("inf")
    return RandAugment(seed=seed, **kwargs)
