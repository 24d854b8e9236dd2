"""Mixed precision levels O0-O3, with normalisation layers optionally kept in float32."""
import mindspore as ms
from mindspore import amp, nn

from src.errors import UserInputError

NORM_CELLS = [nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm]


def amp_level_name(value):
    """'O2' for 'o2', 'O2', '02' or 2: the BEiT seed writes `amp_level: 01`, which YAML reads as the number 1."""
    text = str(value).upper()
    return f"O{int(text)}" if text.isdigit() else text


def apply_amp(network, amp_level, keep_bn_fp32=True):
    """O0: float32. O1: white-listed ops in float16. O2/O3: the whole network in float16, norms kept in
    float32 under O2 or when `keep_bn_fp32` is set. On the CPU only O0 is fast: O1 fails there and
    O2/O3 run about 2x slower."""
    level = amp_level_name(amp_level)
    if level == "O0":
        return network
    if level == "O1":
        return amp.auto_mixed_precision(network, "O1")
    if level in ("O2", "O3"):
        if level == "O2" or keep_bn_fp32:
            return amp.custom_mixed_precision(network, black_list=NORM_CELLS, dtype=ms.float16)
        return amp.auto_mixed_precision(network, "O3")
    raise UserInputError(f"unknown amp_level '{amp_level}', expected O0, O1, O2 or O3")
