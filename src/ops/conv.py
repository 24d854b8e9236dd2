"""2-d convolution that stays fast on the CPU.

MindSpore 2.10's CPU kernels for convolutions other than 1x1 with stride 1 measured 70-300x slower than
PyTorch's (a 3x3, 64-channel convolution at 32x32, batch 16: 1.1 s against 3.4 ms; a strided 1x1 one 1.4 s).
On the CPU this cell runs the fused kernels of cpu_kernels.py (csrc/cpu_conv_kernels.cc: oneDNN's convolution
primitives, im2col + sgemm for 1x1 convolutions of large inputs and for patch embeddings); where they cannot be
built, unfold + one matmul (the same arithmetic, ~5x slower than the fused kernels). On Ascend and GPU the native
kernels are the fast ones and are kept, and so they are in a graph for export (`use_portable_operators`).
"""
import mindspore as ms
from mindspore import nn, ops

from src.ops.cpu_kernels import convolution_op, portable_operators


def _symmetric_padding(conv):
    """(pad_h, pad_w) of a "pad" / "valid" nn.Conv2d, or None for other modes and uneven padding."""
    if conv.pad_mode == "valid":
        return 0, 0
    if conv.pad_mode != "pad":
        return None
    if isinstance(conv.padding, int):
        return conv.padding, conv.padding
    top, bottom, left, right = conv.padding
    return (top, left) if top == bottom and left == right else None


class Conv2d(nn.Conv2d):
    """nn.Conv2d computed by the fused CPU kernels (or unfold + matmul) on the CPU where it has one group, no
    dilation and "pad" / "valid" padding; same parameters and names as nn.Conv2d. `input_grad=False` (for
    images) spares the fused backward the input's gradient: it gives zeros. `tokens=True` gives (B, OH * OW,
    O), a ViT's patch tokens, which the fused kernel writes directly."""

    def __init__(self, *args, input_grad=True, tokens=False, **kwargs):
        super().__init__(*args, **kwargs)
        padding = _symmetric_padding(self)
        rewrite = (ms.get_context("device_target") == "CPU" and padding is not None and self.group == 1
                   and self.dilation == (1, 1) and not portable_operators())
        self.fused_conv = convolution_op(self.stride, padding, input_grad, tokens) if rewrite else None
        self.geometry = ms.Tensor([*self.stride, *(padding or (0, 0)), int(tokens)], ms.int32)
        self.padding_hw = padding
        self.tokens = tokens
        self.as_matmul = (rewrite and self.fused_conv is None
                          and (self.kernel_size != (1, 1) or self.stride != (1, 1)))

    def convolve(self, x, weight):
        """x convolved with `weight`, without the bias: (B, O, OH, OW), or (B, OH * OW, O) with `tokens`."""
        if self.fused_conv is not None and x.dtype == ms.float32:
            return self.fused_conv(x, weight, self.geometry)
        if self.as_matmul:
            out = self.unfold_matmul(x, weight)
        else:
            out = ops.conv2d(x, weight, stride=self.stride, pad_mode=self.pad_mode, padding=self.padding,
                             dilation=self.dilation, groups=self.group)
        if self.tokens:
            return out.reshape(out.shape[0], out.shape[1], -1).transpose(0, 2, 1)
        return out

    def unfold_matmul(self, x, weight):
        out_channels = weight.shape[0]
        batch, _, height, width = x.shape
        (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = self.kernel_size, self.stride, self.padding_hw
        out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
        out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
        columns = ops.unfold(x, self.kernel_size, 1, self.padding_hw, self.stride)  # (B, C * kh * kw, out_h * out_w)
        out = ops.matmul(weight.reshape(out_channels, -1), columns)
        return out.reshape(batch, out_channels, out_h, out_w)

    def construct(self, x):
        out = self.convolve(x, self.weight)
        if self.has_bias:
            out = out + self.bias if self.tokens else ops.bias_add(out, self.bias)
        return out
