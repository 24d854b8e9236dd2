"""Convert published PyTorch (.pth) and BiT (.npz) checkpoints into MindSpore .ckpt files.

    python conv_pt2ckpt.py --pth_file BiT-M-R101x3.npz --ckpt_file bit_m_r101x3.ckpt [--arch bit_m_r101x3]
    python conv_pt2ckpt.py --pth_file beit_base_patch16_224_pt22k_ft22k.pth --ckpt_file pretrained_beit.ckpt \
        --arch beit_base_patch16_224_pt22k_ft22k [--img_size 384]

    python conv_pt2ckpt.py --pth_file encoder.pkl --ckpt_file dall_e_encoder.ckpt
    python conv_pt2ckpt.py --pth_file vqkd_encoder_base_decoder_3x768x12_clip-d5036aa7.pth \
        --ckpt_file vqkd_encoder_base_decoder_3x768x12_clip.ckpt --arch vqkd_encoder_base_decoder_3x768x12_clip

BiT's and DALL-E's sizes are read off the weights; transformers need --arch (and --img_size to
resize position embeddings and relative position tables for another resolution; --model_args for
sizes a variant does not have, e.g. "{num_heads: 2}"). BEiT pretraining checkpoints (mask_token,
lm_head) convert to the `*_8k_vocab` models; VQ-KD checkpoints lose their teacher.
"""
import argparse

import numpy as np
import yaml

from src.errors import UserInputError, report_user_errors
from src.models import create_model
from src.weights.checkpoint import save_checkpoint
from src.weights.loading import load_weights
from src.weights.published import convert_published_weights, published_family, read_published_weights


def dalle_arch_kwargs(weights):
    """Width, blocks per group and vocabulary read off converted DALL-E encoder weights."""
    blocks = {name.split(".")[2] for name in weights if name.startswith("blocks.group_1.block_")}
    return {"n_hid": weights["blocks.input.weight"].shape[0], "n_blk_per_group": len(blocks),
            "vocab_size": weights["blocks.output.conv.weight"].shape[0]}


def vqkd_arch_kwargs(weights):
    """Sizes read off converted VQ-KD weights (attention heads excepted)."""
    def depth(prefix):
        return len({name.split(".")[2] for name in weights if name.startswith(f"{prefix}.blocks.")})

    codebook_size, codebook_dim = weights["quantize.embedding.weight"].shape
    patch_size = weights["encoder.patch_embed.proj.weight"].shape[-1]
    grid = int(round((weights["encoder.pos_embed"].shape[1] - 1) ** 0.5))
    kwargs = {"embed_dim": weights["encoder.cls_token"].shape[-1], "depth": depth("encoder"),
              "patch_size": patch_size, "img_size": grid * patch_size,
              "codebook_size": codebook_size, "codebook_dim": codebook_dim}
    if "decode_task_layer.2.weight" in weights:
        kwargs.update(decoder_depth=depth("decoder"), decoder_out_dim=weights["decode_task_layer.2.weight"].shape[0])
    else:
        kwargs["as_tokenizer"] = True
    return kwargs


def bit_arch_kwargs(weights):
    """Stage depths, width and class count read off converted BiT weights."""
    layers = [len({name.split(".")[2] for name in weights if name.startswith(f"body.block{stage}.")})
              for stage in range(1, 5)]
    width_factor = weights["root.conv.weight"].shape[0] // 64
    return {"layers": layers, "width_factor": width_factor, "num_classes": weights["head.conv.bias"].shape[0]}


# sizes read off the converted weights, per family
ARCH_KWARGS = {"dall_e": dalle_arch_kwargs, "vqkd": vqkd_arch_kwargs, "bit": bit_arch_kwargs}
DEFAULT_ARCH = {"dall_e": "dall_e_encoder", "bit": "bit_m_r50x1"}
REQUIRED_ARCH = {"vit": ("a transformer", "beit_base_patch16_224"),
                 "vqkd": ("a VQ-KD", "vqkd_encoder_base_decoder_3x768x12_clip")}


@report_user_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pth_file", required=True,
                        help="published checkpoint: .pth / .pt / .bin / .safetensors / .npz / DALL-E's encoder.pkl")
    parser.add_argument("--ckpt_file", required=True, help="MindSpore checkpoint to write")
    parser.add_argument("--arch", default=None, help="the registered model the weights are for")
    parser.add_argument("--img_size", type=int, default=None, help="transformers: target resolution")
    parser.add_argument("--model_args", type=yaml.safe_load, default=None,
                        help='constructor overrides as YAML, e.g. "{num_heads: 2}"')
    args = parser.parse_args(argv)
    if args.model_args is not None and not isinstance(args.model_args, dict):
        raise UserInputError(f"--model_args must be a YAML mapping, got {args.model_args!r}")
    model_args = args.model_args or {}

    published = read_published_weights(args.pth_file)
    family = published_family(published)
    if family in REQUIRED_ARCH and not args.arch:
        what, example = REQUIRED_ARCH[family]
        raise UserInputError(f"{what} checkpoint needs --arch (e.g. {example})")
    if family == "vit":  # converted once the network exists: its tables are fitted to the network's grid
        weights, head = None, published.get("head.weight")
        inferred = {} if head is None else {"num_classes": head.shape[0]}
    else:
        weights = convert_published_weights(published, network=None, show_progress=True)
        inferred = ARCH_KWARGS[family](weights)
        if family == "bit" and args.arch:  # the registered variant's depths and width are checked against them
            inferred = {"num_classes": inferred["num_classes"]}
    network = create_model(args.arch or DEFAULT_ARCH[family], **{"img_size": args.img_size, **inferred, **model_args})
    if weights is None:
        weights = convert_published_weights(published, network, show_progress=True)
    overridden = {key: value for key, value in model_args.items() if key in inferred and value != inferred[key]}
    try:
        # a transformer pretraining checkpoint has no classifier: it starts anew
        load_weights(network, weights, args.pth_file, missing_ok=("head.", "fc_norm.") if family == "vit" else ())
    except UserInputError as err:
        if not overridden:
            raise
        said = ", ".join(f"{key}={inferred[key]}" for key in overridden)
        raise UserInputError(f"--model_args {overridden} does not fit the weights of {args.pth_file} ({said}): "
                             f"{err}") from None
    save_checkpoint(network, args.ckpt_file)
    sizes = [int(np.prod(param.shape)) for param in network.get_parameters()]
    print(f"wrote {args.ckpt_file}: {len(sizes)} tensors, {sum(sizes) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
