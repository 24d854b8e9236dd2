"""A published checkpoint file converted into a registered model: the sizes a file fixes are read off its weights
(BiT's depths and width, DALL-E's and VQ-KD's sizes, a classifier's class count); a transformer's tables are fitted
to the model built."""
from src.errors import UserInputError
from src.models import create_model
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


def convert_checkpoint(path, arch=None, img_size=None, model_args=None, show_progress=True):
    """The network of `arch` (for BiT and DALL-E: read off the weights when None) holding the weights of the
    published file `path`; `model_args` are constructor arguments that win over what the weights say, where
    they fit them."""
    model_args = model_args or {}
    published = read_published_weights(path)
    family = published_family(published)
    if family in REQUIRED_ARCH and not arch:
        what, example = REQUIRED_ARCH[family]
        raise UserInputError(f"{what} checkpoint needs --arch (e.g. {example})")
    if family == "vit":  # converted once the network exists: its tables are fitted to the network's grid
        weights, head = None, published.get("head.weight")
        inferred = {} if head is None else {"num_classes": head.shape[0]}
    else:
        weights = convert_published_weights(published, network=None, show_progress=show_progress)
        inferred = ARCH_KWARGS[family](weights)
        if family == "bit" and arch:  # the registered variant's depths and width are checked against them
            inferred = {"num_classes": inferred["num_classes"]}
    network = create_model(arch or DEFAULT_ARCH[family], **{"img_size": img_size, **inferred, **model_args})
    if weights is None:
        weights = convert_published_weights(published, network, show_progress=show_progress)
    overridden = {key: value for key, value in model_args.items() if key in inferred and value != inferred[key]}
    try:
        # a transformer pretraining checkpoint has no classifier: it starts anew
        load_weights(network, weights, path, missing_ok=("head.", "fc_norm.") if family == "vit" else ())
    except UserInputError as err:
        if not overridden:
            raise
        said = ", ".join(f"{key}={inferred[key]}" for key in overridden)
        raise UserInputError(f"--model_args {overridden} does not fit the weights of {path} ({said}): {err}") from None
    return network
