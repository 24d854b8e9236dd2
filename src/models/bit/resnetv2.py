"""BiT (Big Transfer): ResNetV2 with weight-standardised convolutions and GroupNorm.

Follows google-research/big_transfer: pre-activation bottleneck units with the stride on the
3x3 conv, a 7x7 root conv followed by zero padding and a 3x3/2 max-pool, and a head of
GroupNorm + ReLU + global average pool + 1x1 conv, zero-initialised for transfer.
Parameter names mirror big_transfer's PyTorch model (root / body.blockN.unitMM / head), so its
published weights map one to one.
"""
from collections import OrderedDict

from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, Zero

from src.errors import UserInputError
from src.models.registry import model_family, register_model
from src.ops.conv import Conv2d
from src.ops.cpu_kernels import GroupNorm, Standardize, ZeroPaddedMaxPool

GROUPS = 32


class StdConv2d(Conv2d):
    """Conv2d whose filters are standardised to zero mean and unit variance before use."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, eps=1e-10, input_grad=True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         pad_mode="pad" if padding else "valid", padding=padding, has_bias=False,
                         weight_init=HeNormal(mode="fan_out", nonlinearity="relu"), input_grad=input_grad)
        self.standardize = Standardize(self.weight.shape[1:], eps)

    def construct(self, x):
        weight = self.standardize(self.weight.astype("float32"))  # in float32 even under mixed precision
        return self.convolve(x, weight.astype(x.dtype))


class GlobalAvgPool(nn.Cell):
    """Mean over the spatial dimensions, kept as 1 x 1 (a mean exports to ONNX; AdaptiveAvgPool2D does not)."""

    def construct(self, x):
        return x.mean(axis=(2, 3), keep_dims=True)


class PreActBottleneck(nn.Cell):
    """Pre-activation bottleneck: GN-ReLU-conv1x1, GN-ReLU-conv3x3(stride), GN-ReLU-conv1x1 (each GN-ReLU one
    GroupNorm cell, fused on the CPU)."""

    recompute_unit = True  # see src.models.layers.recompute_units

    def __init__(self, in_channels, out_channels, mid_channels, stride=1):
        super().__init__()
        self.gn1 = GroupNorm(GROUPS, in_channels, relu=True)
        self.conv1 = StdConv2d(in_channels, mid_channels, 1)
        self.gn2 = GroupNorm(GROUPS, mid_channels, relu=True)
        self.conv2 = StdConv2d(mid_channels, mid_channels, 3, stride=stride, padding=1)
        self.gn3 = GroupNorm(GROUPS, mid_channels, relu=True)
        self.conv3 = StdConv2d(mid_channels, out_channels, 1)
        self.has_downsample = stride != 1 or in_channels != out_channels
        if self.has_downsample:
            # the projection shortcut sees the pre-activated input, as in BiT
            self.downsample = StdConv2d(in_channels, out_channels, 1, stride=stride)

    def construct(self, x):
        out = self.gn1(x)
        shortcut = self.downsample(out) if self.has_downsample else x
        out = self.conv1(out)
        out = self.conv2(self.gn2(out))
        out = self.conv3(self.gn3(out))
        return out + shortcut


def make_stage(num_units, in_channels, out_channels, mid_channels, stride):
    units = [(f"unit{index:02d}", PreActBottleneck(in_channels if index == 1 else out_channels,
                                                   out_channels, mid_channels, stride if index == 1 else 1))
             for index in range(1, num_units + 1)]
    return nn.SequentialCell(OrderedDict(units))


class ResNetV2(nn.Cell):
    """BiT ResNetV2; `layers` gives the units of the four stages, `width_factor` widens every conv."""

    classifier_name = "head.conv"  # dropped when a checkpoint's class count differs

    def __init__(self, layers=(3, 4, 6, 3), width_factor=1, num_classes=1000, zero_head=True):
        super().__init__()
        # a fractional width_factor gives the small models used on CPUs and in tests
        width = int(64 * width_factor)
        self.num_classes = num_classes
        self.root = nn.SequentialCell(OrderedDict([
            ("conv", StdConv2d(3, width, 7, stride=2, padding=3, input_grad=False)),
            ("pool", ZeroPaddedMaxPool(kernel_size=3, stride=2, padding=1)),
        ]))
        stage_widths = [int(c * width_factor) for c in (256, 512, 1024, 2048)]
        mid_widths = [int(c * width_factor) for c in (64, 128, 256, 512)]
        if any(c % GROUPS for c in stage_widths + mid_widths):
            raise UserInputError(f"width_factor {width_factor} gives channel counts that GroupNorm({GROUPS}) "
                                 "cannot split")
        in_widths = [width] + stage_widths[:-1]
        self.body = nn.SequentialCell(OrderedDict([
            (f"block{index + 1}", make_stage(layers[index], in_widths[index], stage_widths[index], mid_widths[index],
                                             stride=1 if index == 0 else 2))
            for index in range(4)]))
        self.num_features = stage_widths[-1]
        head_init = Zero() if zero_head else "normal"
        self.head = nn.SequentialCell(OrderedDict([
            ("gn", GroupNorm(GROUPS, self.num_features, relu=True)),
            ("avg", GlobalAvgPool()),
            ("conv", nn.Conv2d(self.num_features, num_classes, 1, has_bias=True,
                               weight_init=head_init, bias_init="zeros")),
        ]))

    def construct(self, x):
        x = ops.stop_gradient(x)  # images: the root conv computes no gradient for them
        x = self.head(self.body(self.root(x)))
        return x.reshape(x.shape[0], -1)


BIT = model_family("bit", {"num_classes": "num_classes", "layers": "layers", "width_factor": "width_factor"},
                   ResNetV2)


def _bit(default_layers, default_width_factor, **kwargs):
    kwargs.setdefault("layers", default_layers)
    kwargs.setdefault("width_factor", default_width_factor)
    return ResNetV2(**kwargs)


@register_model(BIT)
def bit_m_r50x1(**kwargs):
    return _bit([3, 4, 6, 3], 1, **kwargs)


@register_model(BIT)
def bit_m_r50x3(**kwargs):
    return _bit([3, 4, 6, 3], 3, **kwargs)


@register_model(BIT)
def bit_m_r101x1(**kwargs):
    return _bit([3, 4, 23, 3], 1, **kwargs)


@register_model(BIT)
def bit_m_r101x3(**kwargs):
    return _bit([3, 4, 23, 3], 3, **kwargs)


@register_model(BIT)
def bit_m_r152x2(**kwargs):
    return _bit([3, 8, 36, 3], 2, **kwargs)


@register_model(BIT)
def bit_m_r152x4(**kwargs):
    return _bit([3, 8, 36, 3], 4, **kwargs)
