"""DALL-E's discrete VAE encoder (openai/DALL-E `dall_e/encoder.py`), BEiT's image tokenizer.

Four groups of pre-activation residual blocks (widths 1, 2, 4, 8 x n_hid, 2x2 max-pooling between
groups, residual branch scaled by 1 / n_layers^2) after a 7x7 input conv, and a 1x1 conv to vocabulary
logits: a 112x112 image becomes 14x14 token ids. Parameter names follow the published
`encoder.pkl` (`blocks.group_1.block_1.res_path.conv_1.w` -> `...conv_1.weight`).
"""
import math
from collections import OrderedDict

import mindspore as ms
from mindspore import nn
from mindspore.common.initializer import Normal

from src.models.registry import model_family, register_model
from src.ops.conv import Conv2d

LOGIT_LAPLACE_EPS = 0.1


def dalle_conv(n_in, n_out, kernel_size):
    return Conv2d(n_in, n_out, kernel_size, pad_mode="pad", padding=(kernel_size - 1) // 2, has_bias=True,
                  weight_init=Normal(1 / math.sqrt(n_in * kernel_size ** 2)), bias_init="zeros")


class EncoderBlock(nn.Cell):
    def __init__(self, n_in, n_out, n_layers):
        super().__init__()
        n_hid = n_out // 4
        self.post_gain = 1 / n_layers ** 2
        self.project_identity = n_in != n_out
        if self.project_identity:
            self.id_path = dalle_conv(n_in, n_out, 1)
        self.res_path = nn.SequentialCell(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", dalle_conv(n_in, n_hid, 3)),
            ("relu_2", nn.ReLU()), ("conv_2", dalle_conv(n_hid, n_hid, 3)),
            ("relu_3", nn.ReLU()), ("conv_3", dalle_conv(n_hid, n_hid, 3)),
            ("relu_4", nn.ReLU()), ("conv_4", dalle_conv(n_hid, n_out, 1))]))

    def construct(self, x):
        identity = self.id_path(x) if self.project_identity else x
        return identity + self.post_gain * self.res_path(x)


class DalleEncoder(nn.Cell):
    """`construct(images)`: (B, 3, H, W) in [0, 1] -> (B, H/8 * W/8) int32 token ids (argmax of the logits)."""

    def __init__(self, n_hid=256, n_blk_per_group=2, input_channels=3, vocab_size=8192):
        super().__init__()
        n_layers = 4 * n_blk_per_group
        widths = [n_hid, n_hid, 2 * n_hid, 4 * n_hid, 8 * n_hid]
        stages = OrderedDict(input=dalle_conv(input_channels, n_hid, 7))
        for group in range(1, 5):
            layers = OrderedDict(
                (f"block_{i + 1}",
                 EncoderBlock(widths[group - 1] if i == 0 else widths[group], widths[group], n_layers))
                for i in range(n_blk_per_group))
            if group < 4:
                layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
            stages[f"group_{group}"] = nn.SequentialCell(layers)
        stages["output"] = nn.SequentialCell(OrderedDict(relu=nn.ReLU(), conv=dalle_conv(8 * n_hid, vocab_size, 1)))
        self.blocks = nn.SequentialCell(stages)
        self.vocab_size = vocab_size

    def logits(self, pixels):
        """Vocabulary logits (B, vocab, H/8, W/8) of logit-Laplace-mapped pixels, as the published module."""
        return self.blocks(pixels)

    def construct(self, images):
        pixels = (1 - 2 * LOGIT_LAPLACE_EPS) * images + LOGIT_LAPLACE_EPS  # DALL-E's map_pixels
        logits = self.logits(pixels)
        return logits.argmax(axis=1).reshape(logits.shape[0], -1).astype(ms.int32)


# a tokenizer's common arguments (img_size, as_tokenizer) mean nothing to it: any size, only a tokenizer
DALLE = model_family("dall_e", {}, DalleEncoder, extra=("img_size", "as_tokenizer"))


@register_model(DALLE)
def dall_e_encoder(img_size=None, as_tokenizer=True, **kwargs):
    """The published 8192-token encoder (`encoder.pkl`); any input size (a multiple of 8), only a tokenizer."""
    del img_size, as_tokenizer
    return DalleEncoder(**kwargs)
