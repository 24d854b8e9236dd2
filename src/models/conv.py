"""2-d convolution that stays fast on the CPU.

MindSpore 2.10's CPU kernels for convolutions other than 1x1 with stride 1 measured 70-300x slower than
PyTorch's (a 3x3, 64-channel convolution at 32x32, batch 16: 1.1 s against 3.4 ms; a strided 1x1 one 1.4 s);
unfold + one matmul does the same arithmetic in ~15 ms. On Ascend and GPU the native kernels are the fast
ones and are kept.
"""
import mindspore as ms
from mindspore import nn, ops


class Conv2d(nn.Conv2d):
    """nn.Conv2d (pad_mode "pad" or "valid", no dilation, one group) computed as unfold + matmul on the CPU
    unless it is 1x1 with stride 1; same parameters and names as nn.Conv2d."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.as_matmul = (ms.get_context("device_target") == "CPU"
                          and (self.kernel_size != (1, 1) or self.stride != (1, 1))
                          and self.group == 1 and self.dilation == (1, 1) and self.pad_mode in ("pad", "valid"))

    def convolve(self, x, weight):
        if not self.as_matmul:
            return self.conv2d(x, weight)
        out_channels = weight.shape[0]
        batch, _, height, width = x.shape
        padding = self.padding if self.pad_mode == "pad" else 0
        (kernel_h, kernel_w), (stride_h, stride_w) = self.kernel_size, self.stride
        out_h = (height + 2 * padding - kernel_h) // stride_h + 1
        out_w = (width + 2 * padding - kernel_w) // stride_w + 1
        columns = ops.unfold(x, self.kernel_size, 1, padding, self.stride)  # (B, C * kh * kw, out_h * out_w)
        out = ops.matmul(weight.reshape(out_channels, -1), columns)
        return out.reshape(batch, out_channels, out_h, out_w)

    def construct(self, x):
        out = self.convolve(x, self.weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out
