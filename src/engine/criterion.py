"""Losses: label-smoothing cross-entropy for hard labels, soft-target cross-entropy for mixed ones."""
from mindspore import nn, ops


class SoftTargetCrossEntropy(nn.LossBase):
    """mean over the batch of -sum(target * log_softmax(logits)); targets are probability vectors."""

    def construct(self, logits, target):
        return (-target * ops.log_softmax(logits.astype("float32"), axis=-1)).sum(axis=-1).mean()


class LabelSmoothingCrossEntropy(nn.LossBase):
    """Cross-entropy with integer labels, smoothed: (1 - s) * NLL + s * mean over classes of -log p."""

    def __init__(self, smoothing=0.1):
        super().__init__()
        self.smoothing = smoothing

    def construct(self, logits, label):
        log_probs = ops.log_softmax(logits.astype("float32"), axis=-1)
        nll = -ops.gather_elements(log_probs, 1, label.astype("int32").reshape(-1, 1)).squeeze(1)
        return ((1.0 - self.smoothing) * nll - self.smoothing * log_probs.mean(axis=-1)).mean()


def create_criterion(args, soft_targets):
    """Soft-target CE when mixup/cutmix produce mixed targets (smoothing is in them), else smoothed CE."""
    if soft_targets:
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(args.label_smoothing)
