"""BEiT's block-wise masking and the two-view pretraining transform."""
import io
import math
import random

import numpy as np
import pytest
from PIL import Image
from sample_photos import bundled_photos

from src.args import parse_args
from src.data.masking import BlockMaskingGenerator
from src.data.mim_views import MaskedImageModelingViews, random_resized_crop_box


def connected_components(mask):
    seen, count = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        while stack:
            y, x = stack.pop()
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return count


def test_masks_hold_the_requested_count_in_few_blocks():
    generator = BlockMaskingGenerator(14, 75, min_num_patches=16, seed=0)
    masks = [generator() for _ in range(500)]
    counts = np.array([mask.sum() for mask in masks])
    # unilm's algorithm stops a few patches short when ten tries fail near the target
    assert counts.max() == 75 and 0.6 < (counts == 75).mean() < 0.8 and counts.mean() > 74 and counts.min() >= 60
    # blocks, not scattered patches: 75 random patches of 196 make ~15 components
    components = np.mean([connected_components(mask) for mask in masks[:100]])
    assert components < 5, components
    scattered = np.zeros(196, bool)
    scattered[np.random.default_rng(0).permutation(196)[:75]] = True
    assert connected_components(scattered.reshape(14, 14)) > 2 * components
    # every position is masked sometimes; corners least often (blocks lie inside the grid)
    coverage = np.mean(masks, axis=0)
    assert coverage.min() > 0.01 and coverage[0, 0] < coverage[7, 7] and abs(coverage.mean() - 74.5 / 196) < 0.01


def test_one_block_has_the_drawn_area_and_a_log_uniform_aspect_ratio():
    generator = BlockMaskingGenerator(14, 75, min_num_patches=16, seed=1)
    areas, log_aspects = [], []
    for _ in range(3000):
        mask = np.zeros((14, 14), bool)
        added = generator.add_block(mask, 75)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        height, width = len(rows), len(cols)
        assert added == mask.sum() == height * width  # one filled rectangle
        areas.append(added)
        log_aspects.append(math.log(height / width))
    areas, log_aspects = np.array(areas), np.array(log_aspects)
    # area ~ uniform(16, 75) up to rounding of the sides, aspect ratio within (0.3, 1 / 0.3) up to rounding
    assert 9 <= areas.min() and areas.max() <= 84
    assert 38 < areas.mean() < 50
    assert abs(log_aspects.mean()) < 0.05 and np.abs(log_aspects).max() <= math.log(1 / 0.3) + 0.45
    assert np.std(log_aspects) > 0.5  # spread over the range, not square blocks only


def test_masking_follows_its_seed_and_respects_the_block_cap():
    first, second = BlockMaskingGenerator(14, 75, seed=3), BlockMaskingGenerator(14, 75, seed=3)
    assert all(np.array_equal(first(), second()) for _ in range(5))
    capped = BlockMaskingGenerator(14, 75, min_num_patches=4, max_num_patches=10, seed=0)
    mask = np.zeros((14, 14), bool)
    assert all(capped.add_block(mask.copy(), 10) <= 10 for _ in range(200))


@pytest.mark.parametrize("size", [(500, 375), (100, 700)])
def test_crop_boxes_stay_inside_the_image_with_the_requested_area(size):
    rng = random.Random(0)
    width, height = size
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(width, height, (0.2, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        fraction = (right - left) * (bottom - top) / (width * height)
        ratio = (right - left) / (bottom - top)
        assert 0.19 <= fraction <= 1.0 and 3 / 4 - 0.05 <= ratio <= 4 / 3 + 0.05 or fraction > 0.5


def encoded(image):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def test_views_share_one_crop_at_two_sizes():
    args = parse_args(["--task", "beit_pretrain", "--image_size", "64", "--patch_size", "8", "--second_input_size",
                       "32", "--num_mask_patches", "20", "--min_mask_patches_per_block", "4", "--mean",
                       "[0.5, 0.5, 0.5]", "--std", "[0.5, 0.5, 0.5]", "--crop_min_scale", "0.2",
                       "--interpolation", "bicubic", "--color_jitter", "0.4"])
    views = MaskedImageModelingViews(args, seed=0)
    photo = Image.fromarray(bundled_photos()[0])
    for _ in range(5):
        image, tokenizer_image, mask = views(encoded(photo))
        assert image.shape == (3, 64, 64) and tokenizer_image.shape == (3, 32, 32)
        assert image.dtype == tokenizer_image.dtype == np.float32 and mask.dtype == bool
        assert mask.shape == (64,) and mask.sum() == 20
        assert 0.0 <= tokenizer_image.min() and tokenizer_image.max() <= 1.0 and image.min() < -0.2
        # the tokenizer view is the same crop: the backbone view, un-normalised and halved, matches it
        halved = (image * 0.5 + 0.5).reshape(3, 32, 2, 32, 2).mean(axis=(2, 4))
        assert np.abs(halved - tokenizer_image).mean() < 0.03
