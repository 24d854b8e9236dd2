"""Convert published PyTorch (.pth) and BiT (.npz) checkpoints into MindSpore .ckpt files.

    python conv_pt2ckpt.py --pth_file BiT-M-R101x3.npz --ckpt_file bit_m_r101x3.ckpt [--arch bit_m_r101x3]
    python conv_pt2ckpt.py --pth_file beit_base_patch16_224_pt22k_ft22k.pth --ckpt_file pretrained_beit.ckpt \
        --arch beit_base_patch16_224_pt22k_ft22k [--img_size 384]

BiT's depths and width are read off the weights; transformers need --arch (and --img_size to
resize position embeddings and relative position tables for another resolution).
"""
import argparse
import os

import numpy as np

from src.errors import UserInputError, report_user_errors
from src.models import create_model
from src.models.bit.convert import convert_bit_weights
from src.models.vit_convert import convert_vit_weights, is_vit_state_dict
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
    parser.add_argument("--arch", default=None, help="the registered model the weights are for")
    parser.add_argument("--img_size", type=int, default=None, help="transformers: target resolution")
    args = parser.parse_args(argv)

    published = read_published_weights(args.pth_file)
    if is_vit_state_dict(published):
        if not args.arch:
            raise UserInputError("a transformer checkpoint needs --arch (e.g. beit_base_patch16_224)")
        head = published.get("head.weight")
        network = create_model(args.arch, img_size=args.img_size,
                               num_classes=None if head is None else head.shape[0])
        weights = convert_vit_weights(published, network)
        # a pretraining checkpoint has no classifier: it starts anew
        load_weights(network, weights, args.pth_file, missing_ok=("head.", "fc_norm."))
    else:
        weights = convert_bit_weights(published)
        model_kwargs = bit_arch_kwargs(weights)
        if args.arch:
            model_kwargs = {"num_classes": model_kwargs["num_classes"]}
        network = create_model(args.arch or "bit_m_r50x1", **model_kwargs)
        load_weights(network, weights, args.pth_file)
    save_checkpoint(network, args.ckpt_file)
    sizes = [int(np.prod(param.shape)) for param in network.get_parameters()]
    print(f"wrote {args.ckpt_file}: {len(sizes)} tensors, {sum(sizes) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
