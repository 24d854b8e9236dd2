"""RandAugment and AutoAugment with timm's semantics (`rand-m9-mstd0.5-inc1`, `original`, `v0`).

timm's `rand_augment_transform`: each image gets `num_layers` ops drawn uniformly with
replacement from the op set; each op then applies with probability `prob` (0.5) at a
magnitude drawn from N(m, mstd) and clipped to [0, mmax] (10 by default); signed ops negate
their argument with probability 0.5. Magnitudes map to op arguments as timm's LEVEL_TO_ARG.

Ops run on HWC uint8 arrays, one image at a time inside the pipeline's Python stage, so they are
written for that: the point ops (Invert, Posterize, Solarize, SolarizeAdd) as NumPy lookups, the
geometric ops (Rotate, Shear, Translate) with a compiled kernel that computes Pillow's affine transform
to the bit (src/ops/image_kernels.py), the rest with PIL exactly as timm does. MindSpore's C++ vision
ops are not used here: called on one
image from Python each costs 0.1-0.5 ms of dispatch, more than the NumPy op, and their
semantics differ for the geometric ops (MindSpore's Affine shears and rotates about the image
centre with torchvision's conventions; timm's PIL transforms shear and translate about the origin
and pick bilinear or bicubic at random), Equalize (another histogram mapping) and the enhance
blends (other rounding of the degenerate image). The tests check every op against timm's.
"""
import re

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from src.errors import UserInputError
from src.ops.image_kernels import affine_transform, rotate

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


def _posterize_bits(level, rng):
    return int((level / LEVEL_DENOM) * 4)


def _solarize_threshold(level, rng):
    return min(256, int((level / LEVEL_DENOM) * 256))


LEVEL_TO_ARG = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": lambda level, rng: _signed((level / LEVEL_DENOM) * 30.0, rng),
    "Posterize": _posterize_bits,
    "PosterizeIncreasing": lambda level, rng: 4 - _posterize_bits(level, rng),
    "PosterizeOriginal": lambda level, rng: _posterize_bits(level, rng) + 4,
    "Solarize": _solarize_threshold,
    "SolarizeIncreasing": lambda level, rng: 256 - _solarize_threshold(level, rng),
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

class GeometryStyle:
    """How the geometric ops fill and resample: timm fills with the mean colour and uses the configured
    interpolation, or bilinear / bicubic at random when none is given."""

    def __init__(self, fill=FILL, resample=None):
        self.fill = tuple(int(c) for c in fill)
        self.resample = resample

    def pick_resample(self, rng):
        if self.resample is not None:
            return self.resample
        return Image.BILINEAR if rng.random() < 0.5 else Image.BICUBIC


def _pil_op(function):
    def apply(image, arg, rng, style):
        return np.asarray(function(Image.fromarray(image), arg, rng, style))
    return apply


def _affine(matrix_of):
    """An op applying the affine matrix `matrix_of(width, height, arg)`, as PIL's Image.transform."""
    def transform(image, arg, rng, style):
        height, width = image.shape[:2]
        return affine_transform(image, matrix_of(width, height, arg), style.pick_resample(rng), style.fill)
    return transform


def _rotate(image, degrees, rng, style):
    return rotate(image, degrees, style.pick_resample(rng), style.fill)


def _solarize_add(image, add, *_):
    lut = np.arange(256)
    return np.where(lut < 128, np.minimum(255, lut + add), lut).astype(np.uint8).take(image)


def _solarize(image, threshold, *_):
    return np.where(image >= threshold, 255 - image, image)


def _posterize(image, bits, *_):
    # 0 bits gives black, as older Pillow did (Pillow >= 10 refuses 0, which timm's magnitude 10 asks for)
    return image if bits >= 8 else image & np.uint8(~(2 ** (8 - bits) - 1) & 0xFF)


def _enhance_op(enhancer):
    return _pil_op(lambda img, factor, *_: enhancer(img).enhance(factor))


OPS = {
    "AutoContrast": _pil_op(lambda img, *_: ImageOps.autocontrast(img)),
    "Equalize": _pil_op(lambda img, *_: ImageOps.equalize(img)),
    "Invert": lambda image, *_: 255 - image,
    "Rotate": _rotate,
    "Posterize": _posterize,
    "PosterizeIncreasing": _posterize,
    "PosterizeOriginal": _posterize,
    "Solarize": _solarize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _enhance_op(ImageEnhance.Color),
    "ColorIncreasing": _enhance_op(ImageEnhance.Color),
    "Contrast": _enhance_op(ImageEnhance.Contrast),
    "ContrastIncreasing": _enhance_op(ImageEnhance.Contrast),
    "Brightness": _enhance_op(ImageEnhance.Brightness),
    "BrightnessIncreasing": _enhance_op(ImageEnhance.Brightness),
    "Sharpness": _enhance_op(ImageEnhance.Sharpness),
    "SharpnessIncreasing": _enhance_op(ImageEnhance.Sharpness),
    "ShearX": _affine(lambda width, height, factor: (1, factor, 0, 0, 1, 0)),
    "ShearY": _affine(lambda width, height, factor: (1, 0, 0, factor, 1, 0)),
    "TranslateXRel": _affine(lambda width, height, pct: (1, 0, pct * width, 0, 1, 0)),
    "TranslateYRel": _affine(lambda width, height, pct: (1, 0, 0, 0, 1, pct * height)),
}


# AutoAugment sub-policies: (op, probability, magnitude), as published and as timm names them.
POLICY_V0 = [
    [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)], [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
    [("Color", 0.4, 1), ("Rotate", 0.6, 8)], [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
    [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)], [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
    [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)], [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
    [("Color", 0.6, 1), ("Equalize", 1.0, 2)], [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
    [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)], [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
    [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)], [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
    [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)], [("Rotate", 1.0, 7), ("TranslateYRel", 0.8, 9)],
    [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)], [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
    [("Color", 1.0, 0), ("Rotate", 0.6, 2)], [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
    [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)], [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
    [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)], [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
    [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
]
POLICY_ORIGINAL = [  # ImageNet policy of Cubuk et al., AutoAugment (2018)
    [("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)], [("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
    [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)], [("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)],
    [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)], [("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)], [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
    [("Color", 0.8, 8), ("Solarize", 0.8, 7)], [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
    [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)], [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]
POLICIES = {"v0": POLICY_V0, "original": POLICY_ORIGINAL}


class Augmentation:
    """Shared machinery: magnitude noise, level -> argument, and applying the drawn ops to an image."""

    def __init__(self, magnitude_std=0.0, magnitude_max=None, style=None, seed=None):
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.style = style or GeometryStyle()
        self.rng = np.random.default_rng(seed)

    def op_argument(self, name, magnitude):
        """timm's AugmentOp: noisy magnitude clipped to [0, mmax or 10], mapped to the op's argument."""
        if self.magnitude_std == float("inf"):
            magnitude = self.rng.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = self.rng.normal(magnitude, self.magnitude_std)
        magnitude = max(0.0, min(magnitude, self.magnitude_max or LEVEL_DENOM))
        level_to_arg = LEVEL_TO_ARG[name]
        return level_to_arg(magnitude, self.rng) if level_to_arg else None

    def sample(self):
        """[(op name, argument)] of the ops that apply to one image."""
        raise NotImplementedError

    def __call__(self, image):
        image = np.ascontiguousarray(image, dtype=np.uint8)
        for name, arg in self.sample():
            image = np.ascontiguousarray(OPS[name](image, arg, self.rng, self.style))
        return image


class RandAugment(Augmentation):
    """`num_layers` ops drawn uniformly with replacement, each applied with probability `prob`."""

    def __init__(self, magnitude=10.0, num_layers=2, prob=0.5, increasing=False, **kwargs):
        super().__init__(**kwargs)
        self.magnitude = magnitude
        self.num_layers = num_layers
        self.prob = prob
        self.transforms = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS

    def sample(self):
        chosen = []
        for index in self.rng.integers(0, len(self.transforms), self.num_layers):  # as rng.choice, without a copy
            if self.prob < 1.0 and self.rng.random() > self.prob:
                continue
            name = self.transforms[index]
            chosen.append((name, self.op_argument(name, self.magnitude)))
        return chosen


class AutoAugment(Augmentation):
    """One sub-policy drawn uniformly per image; each of its ops applies with its own probability."""

    def __init__(self, policy, **kwargs):
        super().__init__(**kwargs)
        self.policy = policy

    def sample(self):
        chosen = []
        for name, prob, magnitude in self.policy[self.rng.integers(len(self.policy))]:
            if prob < 1.0 and self.rng.random() > prob:
                continue
            chosen.append((name, self.op_argument(name, magnitude)))
        return chosen


def _policy_sections(policy, sections, keys):
    kwargs = {}
    for section in sections:
        match = re.fullmatch(r"([a-z]+)([0-9.]+|inf)", section)
        if not match or match.group(1) not in keys:
            raise UserInputError(f"auto_augment '{policy}': unknown section '{section}'")
        name, convert = keys[match.group(1)]
        kwargs[name] = convert(match.group(2))
    if kwargs.get("magnitude_std", 0) > 100:  # timm: a huge std means uniform sampling in [0, m]
        kwargs["magnitude_std"] = float("inf")
    return kwargs


def augmentation_from_string(policy, style=None, seed=None):
    """timm's `auto_augment` strings: 'rand-m9-mstd0.5-inc1', 'rand-m7-n3', 'original', 'v0-mstd0.5'."""
    name, *sections = policy.split("-")
    noise = {"mstd": ("magnitude_std", float), "mmax": ("magnitude_max", float)}
    if name == "rand":
        keys = dict(noise, m=("magnitude", float), n=("num_layers", int), p=("prob", float),
                    inc=("increasing", lambda value: bool(int(value))))
        return RandAugment(style=style, seed=seed, **_policy_sections(policy, sections, keys))
    if name in POLICIES:
        return AutoAugment(POLICIES[name], style=style, seed=seed, **_policy_sections(policy, sections, noise))
    raise UserInputError(f"auto_augment '{policy}': expected 'rand-...', 'original' or 'v0'")
