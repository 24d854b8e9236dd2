"""Initial weights for a built network from any file a user may name: a MindSpore .ckpt of this repository
(its EMA weights for inference when present) or a published checkpoint, converted on the way."""
from src.models.vit_convert import convert_vit_weights, is_vit_state_dict
from src.tools.checkpoint import EMA_PREFIX, load_checkpoint, load_weights, network_weights
from src.weights.published import convert_published_weights, read_published_weights


def is_mindspore_checkpoint(path):
    return str(path).endswith(".ckpt")


def pretrained_weights(network, path):
    """A checkpoint's model weights fitted to `network`: a ViT gets the shared relative position bias of
    pretraining copied into its per-block tables and position tables resized, as when converting."""
    if not is_mindspore_checkpoint(path):
        return convert_published_weights(read_published_weights(path), network)
    weights = {name: value.asnumpy() for name, value in network_weights(load_checkpoint(path)).items()}
    if hasattr(network, "blocks") and hasattr(network, "patch_embed") and is_vit_state_dict(weights):
        weights = convert_vit_weights(weights, network)
    return weights


def load_inference_weights(network, path, use_ema=True):
    """Load a checkpoint's weights for evaluation / prediction: its EMA weights when it has them and
    `use_ema` is set. Returns whether the EMA weights were used."""
    if not is_mindspore_checkpoint(path):
        load_weights(network, pretrained_weights(network, path), path)
        return False
    checkpoint = load_checkpoint(path)
    use_ema = use_ema and any(name.startswith(EMA_PREFIX) for name in checkpoint)
    load_weights(network, network_weights(checkpoint, use_ema=use_ema), path)
    return use_ema
