r"""Convert published checkpoints (PyTorch .pth, .safetensors, BiT's .npz, DALL-E's encoder.pkl) into MindSpore
.ckpt files, by name or from a file:

    python conv_pt2ckpt.py --list_pretrained
    python conv_pt2ckpt.py --pth_file bit_m_r101x3 --ckpt_file bit_m_r101x3.ckpt
    python conv_pt2ckpt.py --pth_file beitv2_large_patch16_224_pt1k_ft22k_in1k --ckpt_file beitv2_large.ckpt

    python conv_pt2ckpt.py --pth_file BiT-M-R101x3.npz --ckpt_file bit_m_r101x3.ckpt [--arch bit_m_r101x3]
    python conv_pt2ckpt.py --pth_file beit_base_patch16_224_pt22k_ft22k.pth --ckpt_file pretrained_beit.ckpt \
        --arch beit_base_patch16_224_pt22k_ft22k [--img_size 384]
    python conv_pt2ckpt.py --pth_file encoder.pkl --ckpt_file dall_e_encoder.ckpt
    python conv_pt2ckpt.py --pth_file vqkd_encoder_base_decoder_3x768x12_clip-d5036aa7.pth \
        --ckpt_file vqkd_encoder_base_decoder_3x768x12_clip.ckpt --arch vqkd_encoder_base_decoder_3x768x12_clip

A published name is downloaded once (see src/weights/zoo.py) and converted for its architecture. From a file,
BiT's and DALL-E's sizes are read off the weights; transformers need --arch (and --img_size to resize position
embeddings and relative position tables for another resolution; --model_args for sizes a variant does not
have, e.g. "{num_heads: 2}"). BEiT pretraining checkpoints (mask_token, lm_head) convert to the `*_8k_vocab`
models; VQ-KD checkpoints lose their teacher.
"""
import argparse

import numpy as np

from src.configs.parser import yaml_value
from src.errors import UserInputError, report_user_errors
from src.weights.checkpoint import save_checkpoint
from src.weights.convert import convert_checkpoint
from src.weights.pretrained import fetch_published_file, model_arguments, published_entry
from src.weights.zoo import published_table


@report_user_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pth_file", help="a published name (--list_pretrained) or a checkpoint file: .pth / .pt / "
                                           ".bin / .safetensors / .npz / DALL-E's encoder.pkl")
    parser.add_argument("--ckpt_file", help="MindSpore checkpoint to write")
    parser.add_argument("--arch", default=None, help="the registered model the weights are for")
    parser.add_argument("--img_size", type=int, default=None, help="transformers: target resolution")
    parser.add_argument("--model_args", type=yaml_value, default=None,
                        help='constructor overrides as YAML, e.g. "{num_heads: 2}"')
    parser.add_argument("--list_pretrained", action="store_true", help="print the published names and exit")
    args = parser.parse_args(argv)
    if args.list_pretrained:
        print(published_table())
        return
    if not args.pth_file or not args.ckpt_file:
        raise UserInputError("conv_pt2ckpt.py needs --pth_file and --ckpt_file (or --list_pretrained)")
    if args.model_args is not None and not isinstance(args.model_args, dict):
        raise UserInputError(f"--model_args must be a YAML mapping, got {args.model_args!r}")
    model_args, path, arch = args.model_args or {}, args.pth_file, args.arch
    entry = published_entry(path)
    if entry is not None:
        arch = arch or entry.arch
        defaults = model_arguments(entry)
        if args.img_size:
            defaults.pop("img_size", None)
        model_args, path = {**defaults, **model_args}, fetch_published_file(entry)
    network = convert_checkpoint(path, arch, args.img_size, model_args)
    save_checkpoint(network, args.ckpt_file)
    sizes = [int(np.prod(param.shape)) for param in network.get_parameters()]
    print(f"wrote {args.ckpt_file}: {len(sizes)} tensors, {sum(sizes) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
