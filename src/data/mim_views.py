"""The per-image views of BEiT / BEiT v2 masked-image-modeling pretraining (unilm `datasets.py`
DataAugmentationForBEiT): optional colour jitter, a flip, one random resized crop taken at two
sizes (the backbone's image and the tokenizer's), and a block-wise mask."""
import io
import math
import random

import numpy as np
from PIL import Image, ImageEnhance

from src.data.masking import BlockMaskingGenerator
from src.data.transforms import pil_interpolation


def random_resized_crop_box(width, height, scale, ratio, rng):
    """(left, top, right, bottom) as torchvision's RandomResizedCrop.get_params: ten tries at a random
    area and log-uniform aspect ratio, then the centred crop clamped to the ratio range."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect_ratio)))
        crop_h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = rng.randint(0, height - crop_h)
            left = rng.randint(0, width - crop_w)
            return left, top, left + crop_w, top + crop_h
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def color_jitter(image, strength, rng):
    """torchvision ColorJitter(strength, strength, strength) on a PIL image: brightness, contrast and
    saturation factors uniform in [1 - s, 1 + s], applied in random order."""
    enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    rng.shuffle(enhancers)
    for enhancer in enhancers:
        image = enhancer(image).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
    return image


def to_chw(image):
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


class MaskedImageModelingViews:
    """Encoded image bytes -> (image: normalised CHW float32 at `image_size`,
    tokenizer_image: CHW float32 in [0, 1] at `second_input_size`, bool_masked_pos: (patches,) bool).

    The tokenizer does its own input scaling (DALL-E's logit-Laplace map, VQ-KD's [-1, 1]).
    """

    def __init__(self, args, seed=None):
        grid = args.image_size // args.patch_size
        self.size, self.second_size = args.image_size, args.second_input_size
        self.interpolation = pil_interpolation(args.interpolation)
        self.second_interpolation = pil_interpolation(args.second_interpolation)
        self.scale = (args.crop_min_scale, 1.0)
        self.color_jitter = args.color_jitter
        self.hflip = args.hflip
        self.mean = np.asarray(args.mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(args.std, np.float32).reshape(3, 1, 1)
        self.rng = random.Random(seed)
        self.masking = BlockMaskingGenerator(grid, args.num_mask_patches, args.min_mask_patches_per_block,
                                             args.max_mask_patches_per_block, seed=seed)

    def __call__(self, encoded):
        image = Image.open(io.BytesIO(encoded.tobytes())).convert("RGB")
        if self.color_jitter > 0:
            image = color_jitter(image, self.color_jitter, self.rng)
        if self.rng.random() < self.hflip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        box = random_resized_crop_box(image.width, image.height, self.scale, (3 / 4, 4 / 3), self.rng)
        patches = image.resize((self.size, self.size), self.interpolation, box=box)
        for_tokenizer = image.resize((self.second_size, self.second_size), self.second_interpolation, box=box)
        return ((to_chw(patches) - self.mean) / self.std, to_chw(for_tokenizer),
                self.masking().reshape(-1))
