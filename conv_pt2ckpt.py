"""Convert published PyTorch (.pth) and BiT (.npz) checkpoints into MindSpore .ckpt files.

    python conv_pt2ckpt.py --pth_file BiT-M-R101x3.npz --ckpt_file bit_m_r101x3.ckpt [--arch bit_m_r101x3]
"""
import argparse
import os

import numpy as np

from src.errors import UserInputError, report_user_errors
from src.models import create_model
from src.models.bit.convert import convert_bit_weights
from src.tools.checkpoint import load_weights, save_checkpoint


def read_published_weights(path):
    """{name: numpy array} from a .npz or a PyTorch checkpoint (never executing pickled code)."""
    if not os.path.isfile(path):
        raise UserInputError(f"input checkpoint not found: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot read {path} as .npz: {err}") from None
    import torch  # only conversion needs PyTorch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad or unsafe files
        raise UserInputError(f"cannot read {path} as a PyTorch checkpoint: {str(err).splitlines()[0]}") from None
    for wrapper_key in ("model", "module", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper_key), dict):
            checkpoint = checkpoint[wrapper_key]
            break
    if not isinstance(checkpoint, dict):
        raise UserInputError(f"{path} holds no state dict")
    return {key: value.float().numpy() for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def bit_arch_kwargs(weights):
    """Stage depths, width and class count read off converted BiT weights."""
    layers = [len({name.split(".")[2] for name in weights if name.startswith(f"body.block{stage}.")})
              for stage in range(1, 5)]
    width_factor = weights["root.conv.weight"].shape[0] // 64
    return {"layers": layers, "width_factor": width_factor, "num_classes": weights["head.conv.bias"].shape[0]}


@report_user_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pth_file", required=True, help="published checkpoint: .pth / .pt / .npz")
    parser.add_argument("--ckpt_file", required=True, help="MindSpore checkpoint to write")
    parser.add_argument("--arch", default=None, help="check the result against this registered model")
    args = parser.parse_args(argv)

    weights = convert_bit_weights(read_published_weights(args.pth_file))
    model_kwargs = bit_arch_kwargs(weights)
    if args.arch:
        model_kwargs = {"num_classes": model_kwargs["num_classes"]}
    network = create_model(args.arch or "bit_m_r50x1", **model_kwargs)
    load_weights(network, weights, args.pth_file)
    save_checkpoint(network, args.ckpt_file)
    print(f"wrote {args.ckpt_file}: {len(weights)} tensors, "
          f"{sum(int(np.prod(v.shape)) for v in weights.values()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
