"""Mixup and CutMix on whole batches, with timm's `Mixup` semantics (mode 'batch').

Per batch: with probability `prob` mix; when both alphas are set, CutMix is chosen with
`switch_prob`. Each image is paired with the batch flipped end to end. CutMix's lambda is
corrected to the area of the box actually pasted (after clipping at the border). Targets are
label-smoothed one-hot vectors mixed with the same lambda.
"""
import numpy as np


def smoothed_one_hot(labels, num_classes, smoothing):
    off_value = smoothing / num_classes
    targets = np.full((len(labels), num_classes), off_value, dtype=np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off_value
    return targets


def mixup_targets(labels, num_classes, lam, smoothing):
    targets = smoothed_one_hot(labels, num_classes, smoothing)
    return (targets * lam + targets[::-1] * (1.0 - lam)).astype(np.float32)


def cutmix_box(height, width, lam, rng):
    """A box covering about (1 - lam) of the image, centred uniformly, clipped at the borders."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    centre_y, centre_x = rng.integers(0, height), rng.integers(0, width)
    top, bottom = np.clip([centre_y - cut_h // 2, centre_y + cut_h // 2], 0, height)
    left, right = np.clip([centre_x - cut_w // 2, centre_x + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


class Mixup:
    """Callable on a batch: (images NCHW float32, labels int) -> (mixed images, soft targets)."""

    def __init__(self, num_classes, mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5,
                 label_smoothing=0.1, seed=None):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.rng = np.random.default_rng(seed)

    def sample_params(self):
        """(lam, use_cutmix) for one batch."""
        if self.rng.random() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, images, labels):
        lam, use_cutmix = self.sample_params()
        images = np.array(images, dtype=np.float32)
        if use_cutmix:
            height, width = images.shape[-2:]
            top, bottom, left, right = cutmix_box(height, width, lam, self.rng)
            images[..., top:bottom, left:right] = images[::-1, ..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        elif lam < 1.0:
            images = images * lam + images[::-1] * (1.0 - lam)
        return images, mixup_targets(np.asarray(labels), self.num_classes, lam, self.label_smoothing)
