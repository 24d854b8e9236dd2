"""Random erasing with timm's semantics, on normalised CHW float32 images.

With probability `prob` erase 1..`max_count` boxes (count drawn uniformly); each box tries 10 times
to fit an area of U(0.02, 1/3) of the image divided by the count, with a log-uniform aspect ratio in
(0.3, 1/0.3). Mode 'pixel' fills with per-pixel N(0, 1) noise, 'rand' with one N(0, 1) colour per
channel, 'const' with zeros (the normalised mean).
"""
import math

import numpy as np

from src.errors import UserInputError

MODES = ("pixel", "rand", "const")


class RandomErasing:
    def __init__(self, prob=0.25, mode="pixel", max_count=1, min_area=0.02, max_area=1 / 3, min_aspect=0.3,
                 seed=None):
        if mode not in MODES:
            raise UserInputError(f"unknown re_mode '{mode}', expected one of {list(MODES)}")
        self.prob = prob
        self.mode = mode
        self.max_count = max_count
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
        self.rng = np.random.default_rng(seed)

    def fill(self, channels, height, width):
        if self.mode == "pixel":
            return self.rng.standard_normal((channels, height, width), dtype=np.float32)
        if self.mode == "rand":
            return self.rng.standard_normal((channels, 1, 1), dtype=np.float32)
        return np.zeros((channels, 1, 1), np.float32)

    def boxes(self, height, width):
        """(top, left, h, w) of the boxes to erase in one image."""
        if self.rng.random() > self.prob:
            return []
        count = 1 if self.max_count == 1 else int(self.rng.integers(1, self.max_count + 1))
        boxes = []
        for _ in range(count):
            for _attempt in range(10):
                target_area = self.rng.uniform(self.min_area, self.max_area) * height * width / count
                aspect = math.exp(self.rng.uniform(*self.log_aspect))
                box_h = int(round(math.sqrt(target_area * aspect)))
                box_w = int(round(math.sqrt(target_area / aspect)))
                if box_w < width and box_h < height:
                    boxes.append((int(self.rng.integers(0, height - box_h + 1)),
                                  int(self.rng.integers(0, width - box_w + 1)), box_h, box_w))
                    break
        return boxes

    def __call__(self, image):
        channels, height, width = image.shape
        boxes = self.boxes(height, width)
        if not boxes:  # most images: no copy
            return image
        image = np.array(image, dtype=np.float32)
        for top, left, box_h, box_w in boxes:
            image[:, top:top + box_h, left:left + box_w] = self.fill(channels, box_h, box_w)
        return image
