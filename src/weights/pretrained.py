"""The weights `--pretrained` names, fitted to a built network: a MindSpore .ckpt of this repository (its EMA
weights for inference when present), a published checkpoint file converted on the way, or a published name
(src/weights/zoo.py), downloaded and converted once into the weights cache."""
import hashlib
import os

from filelock import FileLock

from src.errors import UserInputError, make_folder
from src.models import family_of
from src.models.vit_convert import convert_vit_weights, is_vit_state_dict
from src.weights.checkpoint import EMA_PREFIX, load_checkpoint, network_weights, save_checkpoint
from src.weights.convert import convert_checkpoint
from src.weights.download import fetch_hub_file, fetch_url
from src.weights.loading import load_weights
from src.weights.published import convert_published_weights, read_published_weights
from src.weights.zoo import close_names, find_published

WEIGHTS_HOME_VARIABLE = "MS_VISION_WEIGHTS"


def weights_home():
    """Where converted published weights (and downloads from the authors' URLs) are kept."""
    return os.environ.get(WEIGHTS_HOME_VARIABLE) or os.path.join(os.path.expanduser("~"), ".cache",
                                                                 "ms_vision_weights")


def published_entry(value):
    """The entry of the published name `value`, or None when `value` is a file; neither is an error."""
    if os.path.isfile(value):
        return None
    entry = find_published(value)
    if entry is None:
        close = close_names(value)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UserInputError(f"checkpoint not found: {value} is neither a file nor a published name{hint} "
                             "(python conv_pt2ckpt.py --list_pretrained)")
    return entry


def checkpoint_file(value, log=print):
    """The checkpoint file `value` stands for: itself when it is a file, else the converted checkpoint of the
    published name."""
    entry = published_entry(value)
    return value if entry is None else published_checkpoint(value, entry, log)


def fetch_published_file(entry):
    """The local path of an entry's published file, downloaded once."""
    if entry.hub_repo:
        return fetch_hub_file(entry.hub_repo, entry.filename)
    return fetch_url(entry.source, os.path.join(weights_home(), "downloads"), entry.filename, entry.sha256)


def model_arguments(entry):
    """The constructor arguments of an entry's settings (config keys) for its architecture."""
    config_keys = family_of(entry.arch).config_keys
    return {config_keys[key]: value for key, value in entry.settings.items() if key in config_keys}


def published_checkpoint(name, entry, log=print):
    """The .ckpt of the published weights `name`, converted once into the weights cache. The file name holds a
    digest of the entry, so a changed entry is converted anew."""
    digest = hashlib.sha256(repr((entry.source, entry.filename, sorted(entry.settings.items()))).encode())
    path = os.path.join(weights_home(), f"{name}-{digest.hexdigest()[:8]}.ckpt")
    if os.path.isfile(path):
        return path
    make_folder(weights_home(), "for the converted published weights")
    with FileLock(path + ".lock"):  # the other processes of a distributed run wait, then find it converted
        if not os.path.isfile(path):
            source = fetch_published_file(entry)
            network = convert_checkpoint(source, entry.arch, model_args=model_arguments(entry))
            save_checkpoint(network, path)
            log(f"{name}: {source} converted into {path}")
    return path


def pretrained_weights(network, value):
    """A checkpoint's model weights fitted to `network`: a ViT gets the shared relative position bias of
    pretraining copied into its per-block tables and position tables resized, as when converting."""
    path = checkpoint_file(value)
    if not path.endswith(".ckpt"):
        return convert_published_weights(read_published_weights(path), network)
    weights = {name: value.asnumpy() for name, value in network_weights(load_checkpoint(path)).items()}
    if hasattr(network, "blocks") and hasattr(network, "patch_embed") and is_vit_state_dict(weights):
        weights = convert_vit_weights(weights, network)
    return weights


def load_inference_weights(network, value, use_ema=True):
    """Load a checkpoint's weights for evaluation / prediction: its EMA weights when it has them and
    `use_ema` is set. Returns whether the EMA weights were used."""
    path = checkpoint_file(value)
    if not path.endswith(".ckpt"):
        load_weights(network, pretrained_weights(network, path), path)
        return False
    checkpoint = load_checkpoint(path)
    use_ema = use_ema and any(name.startswith(EMA_PREFIX) for name in checkpoint)
    load_weights(network, network_weights(checkpoint, use_ema=use_ema), path)
    return use_ema
