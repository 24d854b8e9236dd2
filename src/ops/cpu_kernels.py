"""Fused CPU kernels as MindSpore Custom ops: exact GELU, multi-head attention (also with an additive bias),
bias addition, the mean of a ViT's patch tokens, rows gathered by index, a per-row mean squared error, a max pool
over zero padding, LayerNorm (also as plain standardisation), GroupNorm (also with ReLU), convolutions and linear
layers, forward and backward; images cut into patches; squared sums, the EMA and the AdamW, momentum-SGD and RMSProp
updates for the train step.

MindSpore 2.10's own CPU kernels for these are far slower than PyTorch's on the same tensors (2 cores:
GELU forward 39 ms against 1.1 ms on (32, 197, 768); LayerNorm forward + backward 71 ms against 21 ms;
GroupNorm(32, 256) on (16, 256, 32, 32) 60 ms against 4 ms; a bias's gradient 3-8 ms, softmax's backward
~10 ms on (32, 3, 197, 197); a 3x3 convolution ~1 s against 3 ms; a linear layer's gradients 1.3-2.5x
PyTorch's time) and took most of a ViT's or BiT's CPU train step. `csrc/cpu_kernels.cc` does each in one or
two passes, in parallel; `csrc/cpu_conv_kernels.cc` does convolutions (used by conv.py),
`csrc/cpu_linear_kernels.cc` linear layers and `csrc/cpu_attention_kernels.cc` attention with the oneDNN library
MindSpore ships. They are compiled with the machine's g++ on first use and cached per source and machine
(`$XDG_CACHE_HOME`, else ~/.cache). The cells below are the nn cells they replace, with the same parameters; they
use MindSpore's kernels off the CPU, for inputs other than float32, where nothing can be compiled (a warning says
why) or when switched off (`use_fused_cpu_kernels(False)`, or FUSED_CPU_KERNELS=0 in the environment at start).
"""
import functools
import glob
import hashlib
import logging
import math
import os
import platform
import subprocess
import tempfile

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.ops import signature as sig

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
# No kernel reads errno or floating-point exception flags; without these two, g++ keeps the loops over exp, sqrt and
# erf (GELU, softmax, AdamW) scalar, since vector code could raise a flag the scalar code skips.
COMPILE_FLAGS = ["-O3", "-std=c++17", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno", "-pthread", "-shared",
                 "-fPIC"]
# tuned for the machine it runs on, which is also the one it is compiled on; retried without where refused.
# FUSED_CPU_KERNELS_MARCH names another target instead (e.g. haswell: the AVX2 code paths on an AVX-512 machine)
MARCH_VARIABLE = "FUSED_CPU_KERNELS_MARCH"
NATIVE_FLAGS = [f"-march={os.environ.get(MARCH_VARIABLE) or 'native'}"]
DISABLE_VARIABLE = "FUSED_CPU_KERNELS"
ONEDNN_LIBRARIES = {"cpu_conv_kernels": "convolutions", "cpu_linear_kernels": "linear layers",
                    "cpu_attention_kernels": "attention"}  # link oneDNN
# compiled without fusing a * b + c into one multiply-add: the image kernels repeat Pillow's arithmetic to the bit
EXACT_ARITHMETIC_LIBRARIES = {"image_kernels"}
_switch = {"enabled": os.environ.get(DISABLE_VARIABLE, "1") != "0", "portable": False}

logger = logging.getLogger(__name__)


def _machine_signature():
    """What the compiled code depends on beyond its source: the processor's name and instruction sets."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags", "Features"))]
        details = "".join(sorted(set(lines)))
    except OSError:
        details = ""
    return platform.machine() + details


def _cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "beit_bit_mae_mindspore")


def _onednn_flags():
    """Link flags for the oneDNN library MindSpore ships (the convolutions' sgemm), or None."""
    lib_dir = os.path.join(os.path.dirname(ms.__file__), "lib")
    found = sorted(glob.glob(os.path.join(lib_dir, "libdnnl.so*")))
    if not found:
        return None
    return [f"-L{lib_dir}", f"-l:{os.path.basename(found[-1])}", f"-Wl,-rpath,{lib_dir}"]


def _compile(source, library_flags, target):
    """Compile `source` into `target` atomically (several ranks may compile at once); the error text or None."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
    os.close(handle)
    try:
        for extra in (NATIVE_FLAGS, []):
            done = subprocess.run(["g++", *COMPILE_FLAGS, *extra, "-o", partial, source, *library_flags],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                os.replace(partial, target)
                return None
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"g++ exited with {done.returncode}"
    except OSError as error:  # no g++
        return str(error)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


@functools.lru_cache(maxsize=None)
def library_path(name):
    """csrc/`name`.cc compiled, on first call; None (with one warning) where it cannot be built."""
    source = os.path.join(CSRC, f"{name}.cc")
    library_flags = _onednn_flags() if name in ONEDNN_LIBRARIES else []
    if library_flags is None:
        logger.warning("fused CPU %s unavailable: MindSpore ships no oneDNN library here", ONEDNN_LIBRARIES[name])
        return None
    if name in EXACT_ARITHMETIC_LIBRARIES:
        library_flags = library_flags + ["-ffp-contract=off"]
    digest = hashlib.sha256(_machine_signature().encode())
    for path in (source, *sorted(glob.glob(os.path.join(CSRC, "*.h")))):
        with open(path, "rb") as text:
            digest.update(text.read())
    digest.update(" ".join(COMPILE_FLAGS + NATIVE_FLAGS + library_flags).encode())
    target = os.path.join(_cache_dir(), f"{name}-{digest.hexdigest()[:16]}.so")
    if os.path.exists(target):
        return target
    error = _compile(source, library_flags, target)
    if error is None:
        return target
    logger.warning("fused CPU kernels unavailable, using MindSpore's slower ones: compiling %s failed: %s",
                   source, error)
    return None


def use_fused_cpu_kernels(enabled):
    """Switch the fused kernels on or off for the cells built from now on; returns the previous setting."""
    previous, _switch["enabled"] = _switch["enabled"], bool(enabled)
    return previous


def fused_kernels_switched_on():
    """False after `use_fused_cpu_kernels(False)` or with FUSED_CPU_KERNELS=0 at start."""
    return _switch["enabled"]


def use_portable_operators(enabled):
    """For the cells built from now on, MindSpore's standard operators only (an exported graph: ONNX and MINDIR
    hold neither the fused kernels nor the unfold path of a CPU convolution); returns the previous setting."""
    previous, _switch["portable"] = _switch["portable"], bool(enabled)
    return previous


def portable_operators():
    return _switch["portable"]


def fused_kernels_enabled(library="cpu_kernels"):
    """True when the fused kernels of `library` serve this process: CPU target, switched on, compiled."""
    return (ms.get_context("device_target") == "CPU" and _switch["enabled"] and not _switch["portable"]
            and library_path(library) is not None)


def _custom_op(entry, out_shape, out_dtype, bprop=None, library="cpu_kernels"):
    return ops.Custom(f"{library_path(library)}:{entry}", out_shape=out_shape, out_dtype=out_dtype,
                      func_type="aot", bprop=bprop)


def _in_place_op(entry, input_names, written):
    """Custom op that updates its first `written` inputs (parameters) in place and returns a dummy (1,) float32.
    The inputs are declared written, as Assign's are, so MindSpore keeps the op and orders the parameters' other
    reads and writes around it. (An update into new tensors, copied back by Assign, cost one more pass over each
    updated parameter and one more copy of it in memory.)"""
    signature = tuple(sig.make_sig(name, sig.sig_rw.RW_WRITE if index < written else sig.sig_rw.RW_READ)
                      for index, name in enumerate(input_names))
    op_class = type(entry, (ops.Custom,), {"__mindspore_signature__": signature})
    op = op_class(f"{library_path('cpu_kernels')}:{entry}", out_shape=lambda *shapes: [1],
                  out_dtype=lambda *dtypes: ms.float32, func_type="aot")
    op.add_prim_attr("side_effect_mem", True)
    return op


def _rows_of_layer_norm(x_shape, gamma_shape):
    """LayerNorm's kernels normalise x's trailing elements, as many as gamma has: one mean per row."""
    return [math.prod(x_shape) // math.prod(gamma_shape)]


def _groups_of_group_norm(x_shape, gamma_shape):
    """GroupNorm's kernels take x as (B, G, C / G, S): one mean per (sample, group)."""
    return x_shape[:2]


def _normalization_ops(name, stats_shape, relu=False):
    """The Custom op forward(x, gamma, beta, eps) -> (y, mean, rstd) of a normalisation, differentiated by
    its backward kernel (dy, x, mean, rstd, gamma) -> (dx, dgamma, dbeta); `stats_shape(x_shape, gamma_shape)`
    is mean's. With `relu`, the `name`Relu kernels: y is ReLU'd, and the backward also takes y."""
    if relu:
        name += "Relu"
    backward = _custom_op(f"{name}Backward", lambda dy, x, mean, rstd, gamma, *y: (dy, gamma, gamma),
                          lambda dy, x, mean, rstd, gamma, *y: (dy, gamma, gamma))

    def bprop(x, gamma, beta, eps, out, dout):
        relu_output = (out[0],) if relu else ()
        dx, dgamma, dbeta = backward(dout[0], x, out[1], out[2], gamma, *relu_output)
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    forward = _custom_op(f"{name}Forward",
                         lambda x, gamma, beta, eps: (x, stats_shape(x, gamma), stats_shape(x, gamma)),
                         lambda x, gamma, beta, eps: (x, x, x), bprop)
    return forward


def _unary_op(name, bprop_from, out_shape=lambda shape: shape):
    """Custom op `name`Forward(x) -> y, differentiated by `name`Backward(dy, bprop_from(x, y)) -> dx, where
    bprop_from gives a tensor of x's shape; `out_shape(x_shape)` is y's."""
    backward = _custom_op(f"{name}Backward", lambda dy, saved: saved, lambda dy, saved: saved)

    def bprop(x, out, dout):
        return (backward(dout, bprop_from(x, out)),)
    return _custom_op(f"{name}Forward", out_shape, lambda x: x, bprop)


def _binary_op(name, bprop_from):
    """Custom op `name`Forward(x, p) -> y of x's shape, with p a tensor broadcast over x (a bias, a scale),
    differentiated by `name`Backward(dy, bprop_from(x, y), p) -> (dx, dp)."""
    backward = _custom_op(f"{name}Backward", lambda dy, saved, p: (dy, p), lambda dy, saved, p: (dy, p))

    def bprop(x, p, out, dout):
        return backward(dout, bprop_from(x, out), p)
    return _custom_op(f"{name}Forward", lambda x, p: x, lambda x, p: x, bprop)


def _input(x, out):
    return x


class _UnaryCell(nn.Cell):
    """fused_forward(x) on float32 inputs where the fused kernels serve, else self.native(x)."""

    def __init__(self, name, bprop_from, out_shape=lambda shape: shape):
        super().__init__()
        self.fused = fused_kernels_enabled()
        if self.fused:
            self.fused_forward = _unary_op(name, bprop_from, out_shape)

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x)
        return self.native(x)


class _BinaryCell(nn.Cell):
    """fused_forward(x, p) (see _binary_op) where both are float32 and the fused kernels serve, else
    self.native(x, p)."""

    def __init__(self, name, bprop_from):
        super().__init__()
        self.fused = fused_kernels_enabled()
        if self.fused:
            self.fused_forward = _binary_op(name, bprop_from)

    def construct(self, x, p):
        if self.fused and x.dtype == ms.float32 and p.dtype == ms.float32:
            return self.fused_forward(x, p)
        return self.native(x, p)


# Abramowitz & Stegun 7.1.26: erfc(z) = poly(1 / (1 + p z)) exp(-z^2) for z >= 0, within 1.5e-7
_ERFC_P = 0.3275911
_ERFC_POLY = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


class GELU(_UnaryCell):
    """Exact (erf) GELU. With portable operators (export), x * Phi(x) from exp and a polynomial, within 1e-6
    of it: MindSpore's ONNX export has no Erf."""

    def __init__(self):
        super().__init__("Gelu", _input)
        self.portable = portable_operators()

    def native(self, x):
        if not self.portable:
            return ops.gelu(x, approximate="none")
        z = ops.abs(x) * (1 / math.sqrt(2))
        t = ops.ones_like(z) / (1 + _ERFC_P * z)
        poly = _ERFC_POLY[0]
        for coefficient in _ERFC_POLY[1:]:
            poly = poly * t + coefficient
        tail = 0.5 * poly * t * ops.exp(-z * z)  # P(N(0, 1) > |x|)
        return x * ops.select(x >= 0, 1 - tail, tail)


class ScaledDotProductAttention(nn.Cell):
    """qkv (B, N, 3 * H * d) -> (B, N, H * d): softmax(q k^T * scale (+ bias)) v for each of the H heads of
    [q | k | v], the heads' outputs side by side; `bias` (H, N, N) is added to every sample's logits (BEiT's
    relative position bias). On the CPU one kernel each way (csrc/cpu_attention_kernels.cc); elsewhere heads are
    split out, multiplied and merged back with MindSpore's operators."""

    def __init__(self, num_heads, scale):
        super().__init__()
        self.num_heads = num_heads
        self.scale = scale
        self.fused = fused_kernels_enabled("cpu_attention_kernels")
        if self.fused:
            self.scale_tensor = ms.Tensor([scale], ms.float32)
            self.heads_tensor = ms.Tensor([num_heads], ms.int32)
            self.fused_forward, self.fused_inference = self._fused_ops(with_bias=False)
            self.fused_biased_forward, self.fused_biased_inference = self._fused_ops(with_bias=True)
        self.matmul_transpose_b = ops.BatchMatMul(transpose_b=True)
        self.matmul = ops.BatchMatMul()

    def _fused_ops(self, with_bias):
        """(training forward, inference forward). The first, (qkv, scale[, bias]) -> (out, probabilities
        (B, H, N, N)), is differentiated by the backward kernel (dout, qkv, probabilities, scale[, bias]) ->
        (dqkv[, dbias]). The second, (qkv, scale, bias or the head count) -> out, keeps the probabilities in
        cache; a gradient through it (a network in eval mode) runs the first again for them."""
        num_heads = self.num_heads
        name = "AttentionBias" if with_bias else "Attention"

        def grad_shapes(dout, qkv, probs, scale, *bias):  # (also their dtypes)
            return (qkv, *bias) if bias else qkv
        backward = _custom_op(f"{name}Backward", grad_shapes, grad_shapes, library="cpu_attention_kernels")

        def bprop(qkv, scale, out, dout):
            return backward(dout[0], qkv, out[1], scale), ops.zeros_like(scale)

        def bprop_with_bias(qkv, scale, bias, out, dout):
            dqkv, dbias = backward(dout[0], qkv, out[1], scale, bias)
            return dqkv, ops.zeros_like(scale), dbias

        def out_shapes(qkv, scale, *bias):
            batch, tokens, width = qkv
            return (batch, tokens, width // 3), (batch, num_heads, tokens, tokens)
        forward = _custom_op(f"{name}Forward", out_shapes, lambda qkv, scale, *bias: (qkv, qkv),
                             bprop_with_bias if with_bias else bprop, library="cpu_attention_kernels")

        def inference_bprop(qkv, scale, heads, out, dout):
            probs = forward(qkv, scale)[1]
            return backward(dout, qkv, probs, scale), ops.zeros_like(scale), ops.zeros_like(heads)

        def biased_inference_bprop(qkv, scale, bias, out, dout):
            dqkv, dbias = backward(dout, qkv, forward(qkv, scale, bias)[1], scale, bias)
            return dqkv, ops.zeros_like(scale), dbias

        inference = _custom_op(f"{name}InferenceForward", lambda qkv, scale, third: out_shapes(qkv, scale)[0],
                               lambda qkv, scale, third: qkv,
                               biased_inference_bprop if with_bias else inference_bprop,
                               library="cpu_attention_kernels")
        # a graph shares one shape function and bprop among Custom ops of equal attributes: one per head count
        for op in (forward, backward, inference):
            op.add_prim_attr("num_heads", num_heads)
        return forward, inference

    def construct(self, qkv, bias=None):
        if self.fused and qkv.dtype == ms.float32:
            if self.training:
                if bias is None:
                    return self.fused_forward(qkv, self.scale_tensor)[0]
                return self.fused_biased_forward(qkv, self.scale_tensor, bias.astype(ms.float32))[0]
            if bias is None:
                return self.fused_inference(qkv, self.scale_tensor, self.heads_tensor)
            return self.fused_biased_inference(qkv, self.scale_tensor, bias.astype(ms.float32))
        batch, tokens, width = qkv.shape
        # one 4-d transpose and a split: a 5-d transpose and indexing measured ~3x slower on the CPU
        qkv = qkv.reshape(batch, tokens, 3 * self.num_heads, -1).transpose(0, 2, 1, 3)
        q, k, v = ops.split(qkv, self.num_heads, axis=1)
        logits = self.matmul_transpose_b(q * self.scale, k)
        if bias is not None:
            logits = logits + bias.astype(logits.dtype)
        out = self.matmul(ops.softmax(logits, axis=-1), v)
        return out.transpose(0, 2, 1, 3).reshape(batch, tokens, width // 3)


class RowMeanSquaredError(nn.Cell):
    """(pred (..., D), target (..., D)) -> (...), the mean of (pred - target)^2 over the last dimension; the target
    gets no gradient (MAE's per-patch loss)."""

    def __init__(self):
        super().__init__()
        self.fused = fused_kernels_enabled()
        if self.fused:
            backward = _custom_op("SquaredErrorBackward", lambda dy, pred, target: pred,
                                  lambda dy, pred, target: pred)

            def bprop(pred, target, out, dout):
                return backward(dout, pred, target), ops.zeros_like(target)
            self.fused_forward = _custom_op("SquaredErrorForward", lambda pred, target: pred[:-1],
                                            lambda pred, target: pred, bprop)

    def construct(self, pred, target):
        target = ops.stop_gradient(target)
        if self.fused and pred.dtype == ms.float32 and target.dtype == ms.float32:
            return self.fused_forward(pred, target)
        return ops.square(pred - target).mean(axis=-1)


class PatchTokenMean(_UnaryCell):
    """x (B, 1 + N, D) -> (B, D): the mean of the N tokens after the class token (a ViT's mean pooling); on the
    CPU one pass each way, without the slice's copy (MindSpore's CPU ReduceMean over a middle axis is slow)."""

    def __init__(self):
        super().__init__("PatchTokenMean", _input, out_shape=lambda shape: (shape[0], shape[2]))

    def native(self, x):
        return x[:, 1:].mean(axis=1)


class GatherRows(nn.Cell):
    """(x (B, L, D), index (B, K)) -> (B, K, D), row index[b, k] of sample b: MAE's visible tokens, and the
    decoder's tokens back in place. On the CPU one copy per row each way (MindSpore's GatherD takes an index per
    element, broadcast to (B, K, D), and its gradient scatters them one by one)."""

    def __init__(self):
        super().__init__()
        self.fused = fused_kernels_enabled()
        if self.fused:
            backward = _custom_op("GatherRowsBackward", lambda dy, index, x: x, lambda dy, index, x: x)

            def bprop(x, index, out, dout):
                return backward(dout, index, x), ops.zeros_like(index)
            self.fused_forward = _custom_op("GatherRowsForward", lambda x, index: (x[0], index[1], x[2]),
                                            lambda x, index: x, bprop)

    def construct(self, x, index):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, index.astype(ms.int32))
        batch, keep = index.shape
        return ops.gather_elements(x, 1, index.expand_dims(-1).broadcast_to((batch, keep, x.shape[2])))


class Patchify(nn.Cell):
    """images (N, C, H, W) -> (N, L, p * p * C): the p x p patches in row-major order, each patch's pixels in
    (row, column, channel) order, as MAE's pixel targets; no gradient. On the CPU one pass (else a 6-d
    transpose)."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size
        self.fused = fused_kernels_enabled()
        if self.fused:
            def out_shape(images):
                return (images[0], (images[2] // patch_size) * (images[3] // patch_size),
                        patch_size * patch_size * images[1])
            self.fused_forward = _custom_op("PatchifyForward", out_shape, lambda images: images)
            self.fused_forward.add_prim_attr("patch_size", patch_size)  # a shape function each

    def construct(self, images):
        return ops.stop_gradient(self.patches(images))

    def patches(self, images):
        if self.fused and images.dtype == ms.float32:
            return self.fused_forward(images)
        batch, channels, height, width = images.shape
        grid_h, grid_w, size = height // self.patch_size, width // self.patch_size, self.patch_size
        x = images.reshape(batch, channels, grid_h, size, grid_w, size).transpose(0, 2, 4, 3, 5, 1)
        return x.reshape(batch, grid_h * grid_w, size * size * channels)


class ZeroPaddedMaxPool(nn.Cell):
    """Max pool (kernel_size, stride) over x (B, C, H, W) with `padding` zeros around it, as timm's BiT root (zeros,
    not -inf). On the CPU one kernel each way, the forward keeping where each maximum was (MindSpore's MaxPoolGrad
    searches the windows again: 62 ms of a BiT-R50 train step at batch 8, the padding and its gradient 18 ms more)."""

    def __init__(self, kernel_size, stride, padding):
        super().__init__()
        self.padding = padding
        self.pool = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, pad_mode="valid")
        self.fused = fused_kernels_enabled()
        if self.fused:
            self.geometry = ms.Tensor([kernel_size, stride, padding], ms.int32)
            backward = _custom_op("ZeroPaddedMaxPoolBackward", lambda dy, argmax, x: x, lambda dy, argmax, x: x)

            def bprop(x, geometry, out, dout):
                return backward(dout[0], out[1], x), ops.zeros_like(geometry)

            def out_shape(x, geometry):
                return ([x[0], x[1], *((x[axis] + 2 * padding - kernel_size) // stride + 1 for axis in (2, 3))],) * 2
            self.fused_forward = _custom_op("ZeroPaddedMaxPoolForward", out_shape,
                                            lambda x, geometry: (x, ms.int32), bprop)
            self.fused_forward.add_prim_attr("geometry", [kernel_size, stride, padding])  # a shape function each

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, self.geometry)[0]
        # zeros by concatenation: MindSpore's CPU Pad took 50 ms on a (16, 64, 64, 64) batch, this 2.4 ms
        batch, channels, height, width = x.shape
        column = ops.zeros((batch, channels, height, self.padding), x.dtype)
        x = ops.concat((column, x, column), axis=3)
        row = ops.zeros((batch, channels, self.padding, width + 2 * self.padding), x.dtype)
        return self.pool(ops.concat((row, x, row), axis=2))


class BiasAdd(nn.Cell):
    """x (..., D) + bias (D), whose backward sums dy over the rows in one pass."""

    def __init__(self):
        super().__init__()
        self.fused = fused_kernels_enabled()
        if self.fused:
            bias_grad = _custom_op("BiasGrad", lambda dy: dy[-1:], lambda dy: dy)

            def bprop(x, bias, out, dout):
                return dout, bias_grad(dout)
            self.fused_forward = _custom_op("BiasAddForward", lambda x, bias: x, lambda x, bias: x, bprop)

    def construct(self, x, bias):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, bias)
        return x + bias


class ChannelScale(_BinaryCell):
    """x (..., D) * gamma (D), a layer scale; on the CPU its backward gives x's and gamma's gradients in one
    pass (MindSpore's CPU Mul keeps two 8-byte indices per element for a broadcast operand: 0.9 GiB of a
    BEiT-B train step at batch 8)."""

    def __init__(self):
        super().__init__("Scale", _input)

    def native(self, x, gamma):
        return gamma * x


def _linear_op(has_bias):
    """Custom op (x (M, K), weight (N, K)[, bias (N)]) -> x weight^T [+ bias], with all gradients from one backward
    kernel."""
    name = "LinearBias" if has_bias else "Linear"
    backward = _custom_op(f"{name}Backward", lambda dy, x, weight, *bias: (x, weight, *bias),
                          lambda dy, x, weight, *bias: (x, weight, *bias), library="cpu_linear_kernels")

    def bprop(x, weight, out, dout):
        return backward(dout, x, weight)

    def bprop_with_bias(x, weight, bias, out, dout):
        return backward(dout, x, weight, bias)
    return _custom_op(f"{name}Forward", lambda x, weight, *bias: [x[0], weight[0]], lambda x, weight, *bias: x,
                      bprop_with_bias if has_bias else bprop, library="cpu_linear_kernels")


class Dense(nn.Dense):
    """nn.Dense without activation whose matrix products and bias addition are fused on the CPU; same
    parameters and names. `affine(x, bias)` applies the weight with another bias (BEiT's q / v biases)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.activation_flag:
            raise ValueError("Dense takes no activation")
        self.matmul_transposed = ops.MatMul(transpose_b=True)  # weight is (out, in), as nn.Dense's
        self.fused = fused_kernels_enabled("cpu_linear_kernels")
        if self.fused:
            self.fused_linear, self.fused_linear_bias = _linear_op(False), _linear_op(True)
        self.bias_add = BiasAdd()

    def construct(self, x):
        return self.affine(x, self.bias if self.has_bias else None)

    def affine(self, x, bias):
        """x weight^T, plus `bias` unless it is None, in x's dtype (called from outside, the cell's mixed-precision
        casts do not apply)."""
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        if self.fused and x.dtype == ms.float32:
            with_bias = bias is not None
            out = self.fused_linear_bias(rows, self.weight, bias) if with_bias else self.fused_linear(rows, self.weight)
        else:
            out = self.matmul_transposed(rows, self.weight.astype(x.dtype))
            if bias is not None:
                out = self.bias_add(out, bias.astype(x.dtype))
        return out.reshape(shape[:-1] + (out.shape[-1],))


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension; parameters gamma / beta, as nn.LayerNorm."""

    def __init__(self, dim, eps=1e-5):
        super().__init__((dim,), epsilon=eps)
        self.fused = fused_kernels_enabled()
        if self.fused:
            self.eps_tensor = ms.Tensor([eps], ms.float32)
            self.fused_forward = _normalization_ops("LayerNorm", _rows_of_layer_norm)

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, self.gamma, self.beta, self.eps_tensor)[0]
        return super().construct(x)


class Standardize(nn.Cell):
    """(x - mean) / sqrt(var + eps) over the trailing dimensions `normalized_shape`, with the biased var or
    torch's unbiased one: BiT's weight standardisation (over all but a weight's first dimension), MAE's
    normalised pixel targets (over the last). The fused path is LayerNorm's kernel, which normalises as many
    trailing elements as its constant scale has, so no reshape is needed."""

    def __init__(self, normalized_shape, eps, unbiased=False):
        super().__init__()
        self.axes = tuple(range(-len(normalized_shape), 0))
        self.size = math.prod(normalized_shape)
        self.eps = eps
        self.ddof = 1 if unbiased else 0
        self.fused = fused_kernels_enabled()
        if self.fused:
            # LayerNorm's biased var v: with the unbiased v * n / (n - 1), (x - mean) / sqrt(v * n / (n - 1) + eps)
            # = sqrt((n - 1) / n) * (x - mean) / sqrt(v + eps * (n - 1) / n)
            shrink = (self.size - 1) / self.size if unbiased else 1.0
            self.scale = ms.Tensor(np.full(self.size, math.sqrt(shrink), np.float32))
            self.shift = ms.Tensor(np.zeros(self.size, np.float32))
            self.eps_tensor = ms.Tensor([eps * shrink], ms.float32)
            self.fused_forward = _normalization_ops("LayerNorm", _rows_of_layer_norm)

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            return self.fused_forward(x, self.scale, self.shift, self.eps_tensor)[0]
        mean = x.mean(axis=self.axes, keep_dims=True)
        var = ops.square(x - mean).sum(axis=self.axes, keepdims=True) / (self.size - self.ddof)
        return (x - mean) / ops.sqrt(var + self.eps)


class GroupNorm(nn.GroupNorm):
    """GroupNorm over (B, C, ...) inputs; parameters gamma / beta, as nn.GroupNorm. `relu=True` applies ReLU
    to its output, fused on the CPU (as timm's GroupNormAct): MindSpore's CPU ReLU and its gradient took ~5% of
    a BiT-R50 train step."""

    def __init__(self, num_groups, num_channels, eps=1e-5, relu=False):
        super().__init__(num_groups, num_channels, eps=eps)
        self.relu = relu
        self.portable = portable_operators()
        self.fused = fused_kernels_enabled()
        if self.fused:
            self.eps_tensor = ms.Tensor([eps], ms.float32)
            self.fused_forward = _normalization_ops("GroupNorm", _groups_of_group_norm, relu)

    def construct(self, x):
        if self.fused and x.dtype == ms.float32:
            batch, channels = x.shape[:2]
            grouped = x.reshape(batch, self.num_groups, channels // self.num_groups, -1)
            return self.fused_forward(grouped, self.gamma, self.beta, self.eps_tensor)[0].reshape(x.shape)
        out = self.portable_group_norm(x) if self.portable else super().construct(x)
        return ops.relu(out) if self.relu else out

    def portable_group_norm(self, x):
        """GroupNorm from means and a square root: MindSpore's ONNX export has no GroupNorm."""
        grouped = x.reshape(x.shape[0], self.num_groups, -1)
        centred = grouped - grouped.mean(axis=-1, keep_dims=True)
        normalised = centred / ops.sqrt(ops.square(centred).mean(axis=-1, keep_dims=True) + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return normalised.reshape(x.shape) * self.gamma.reshape(shape) + self.beta.reshape(shape)


def squared_sum_op():
    """Custom op x -> (1,) float32 sum of x's squares (float32 x), for the train step's global norm;
    None where the fused kernels are unavailable."""
    if not fused_kernels_enabled():
        return None
    return _custom_op("SquaredSum", lambda x: [1], lambda x: x)


def ema_update_op():
    """Custom op (ema, weight, decay): ema = decay * ema + (1 - decay) * weight (float32 parameters), in place and
    in one pass; None where the fused kernels are unavailable."""
    if not fused_kernels_enabled():
        return None
    return _in_place_op("EmaUpdate", ("ema", "weight", "decay"), written=1)


def adamw_update_op():
    """Custom op (param, exp_avg, exp_avg_sq, grad, hyper): one AdamW step of the three float32 parameters from
    grad x grad_scale, in place and in one pass (hyper: 1 - lr x weight decay, lr, beta1, beta2, eps, the two bias
    corrections, grad_scale); None where the fused kernels are unavailable."""
    if not fused_kernels_enabled():
        return None
    return _in_place_op("AdamWUpdate", ("param", "exp_avg", "exp_avg_sq", "grad", "hyper"), written=3)


def momentum_update_op():
    """Custom op (param, moment, grad, hyper): one step of SGD with momentum of the two float32 parameters from
    grad x grad_scale + weight_decay x param, in place and in one pass (hyper: lr, momentum, weight_decay,
    grad_scale); None where the fused kernels are unavailable."""
    if not fused_kernels_enabled():
        return None
    return _in_place_op("MomentumUpdate", ("param", "moment", "grad", "hyper"), written=2)


def rmsprop_update_op():
    """Custom op (param, mean_square, moment, grad, hyper): one TensorFlow-style RMSProp step of the three float32
    parameters from grad x grad_scale + weight_decay x param, in place and in one pass (hyper: lr, weight_decay,
    decay, momentum, eps, grad_scale); None where the fused kernels are unavailable."""
    if not fused_kernels_enabled():
        return None
    return _in_place_op("RmsPropUpdate", ("param", "mean_square", "moment", "grad", "hyper"), written=3)


def convolution_op(stride, padding, input_grad=True, tokens=False):
    """Custom op (x, weight, geometry) -> NCHW convolution with one group, where geometry is the int32
    tensor (stride_h, stride_w, pad_h, pad_w, tokens); with `tokens` its output is (B, OH * OW, O). Its
    backward skips x's gradient (zeros) unless `input_grad`. None where the fused convolutions are unavailable."""
    if not fused_kernels_enabled("cpu_conv_kernels"):
        return None
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding

    def out_shape(x, weight, geometry):
        out_h = (x[2] + 2 * pad_h - weight[2]) // stride_h + 1
        out_w = (x[3] + 2 * pad_w - weight[3]) // stride_w + 1
        return [x[0], out_h * out_w, weight[0]] if tokens else [x[0], weight[0], out_h, out_w]

    if input_grad:
        backward = _custom_op("ConvBackward", lambda dy, x, weight, geometry: (x, weight),
                              lambda dy, x, weight, geometry: (x, weight), library="cpu_conv_kernels")

        def bprop(x, weight, geometry, out, dout):
            dx, dweight = backward(dout, x, weight, geometry)
            return dx, dweight, ops.zeros_like(geometry)
    else:
        weight_backward = _custom_op("ConvWeightBackward", lambda dy, x, weight, geometry: weight,
                                     lambda dy, x, weight, geometry: weight, library="cpu_conv_kernels")

        def bprop(x, weight, geometry, out, dout):
            return ops.zeros_like(x), weight_backward(dout, x, weight, geometry), ops.zeros_like(geometry)

    forward = _custom_op("ConvForward", out_shape, lambda x, weight, geometry: x, bprop, library="cpu_conv_kernels")
    # PyNative caches Custom ops by their attributes: each geometry and backward must be its own
    forward.add_prim_attr("geometry", [stride_h, stride_w, pad_h, pad_w, int(tokens), int(input_grad)])
    return forward
