"""Published checkpoints by name: where each file is published and the registered model it converts to.

`--pretrained NAME` (train.py, eval.py, predict.py, export.py), `tokenizer_pretrained`, `teacher_pretrained` and
`conv_pt2ckpt.py --pth_file NAME` take these names. A hub source (`hf-hub:owner/repo`) is fetched through
huggingface_hub, whose cache, offline mode (HF_HUB_OFFLINE) and mirror variable (HF_ENDPOINT) apply; any other
source is the authors' own URL. No machine of this project can reach those hosts: each entry cites where its
name and address are published, and the tests serve stand-in files from 127.0.0.1.

`settings` are config keys: without --config, a published name brings the model and preprocessing its
weights were made for, so `predict.py --pretrained NAME image.jpg` needs nothing else.
"""
import dataclasses
import difflib

HUB_PREFIX = "hf-hub:"

BEIT_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "crop_ratio": 0.9}
IMAGENET_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}
BIT_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear"}

UNILM_BEIT = "microsoft/unilm beit/README.md"
UNILM_BEIT2 = "microsoft/unilm beit2/README.md"
TIMM_HUB = "timm's copy on the Hugging Face Hub (timm/models/beit.py pretrained_cfgs)"
BIG_TRANSFER = "google-research/big_transfer README.md"
MAE_README = "facebookresearch/mae README.md"
UNILM_BLOB = ("https://conversationhub.blob.core.windows.net/beit-share-public/beit/{}.pth?sv=2021-10-04&"
              "st=2023-06-08T11%3A16%3A02Z&se=2033-06-09T11%3A16%3A00Z&sr=c&sp=r&"
              "sig=N4pfCVmSeq4L4tS8QbrFVsX6f6q844eft8xSuXdxU48%3D")
VQKD_RELEASE = "https://github.com/addf400/files/releases/download/BEiT-v2/{}.pth"


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """`source` is `hf-hub:<repo id>` (the file `filename` in it) or a URL; `sha256` is the hash, or its leading
    digits, that the authors publish for the file (empty where they publish none); `settings` hold `arch` and
    the config keys the weights were made for."""
    source: str
    cited: str
    settings: dict
    filename: str = "model.safetensors"
    sha256: str = ""

    @property
    def arch(self):
        return self.settings["arch"]

    @property
    def hub_repo(self):
        return self.source[len(HUB_PREFIX):] if self.source.startswith(HUB_PREFIX) else None


def _hub(repo, arch, cited, **settings):
    return PublishedWeights(HUB_PREFIX + repo, cited, {"arch": arch, **settings})


def _url(url, arch, cited, sha256="", **settings):
    return PublishedWeights(url, cited, {"arch": arch, **settings}, filename=url.split("?")[0].rsplit("/", 1)[-1],
                            sha256=sha256)


def _beit_entries():
    entries = {
        "beit_base_patch16_224_pt22k": _url(UNILM_BLOB.format("beit_base_patch16_224_pt22k"),
                                            "beit_base_patch16_224_8k_vocab", UNILM_BEIT),
        "beit_large_patch16_224_pt22k": _url(UNILM_BLOB.format("beit_large_patch16_224_pt22k"),
                                             "beit_large_patch16_224_8k_vocab", UNILM_BEIT),
        "beit_base_patch16_224_pt22k_ft22k": _hub("timm/beit_base_patch16_224.in22k_ft_in22k",
                                                  "beit_base_patch16_224_pt22k_ft22k", f"{UNILM_BEIT}; {TIMM_HUB}",
                                                  num_classes=21841, image_size=224, **BEIT_PREPROCESS),
        "beit_large_patch16_224_pt22k_ft22k": _hub("timm/beit_large_patch16_224.in22k_ft_in22k",
                                                   "beit_large_patch16_224", f"{UNILM_BEIT}; {TIMM_HUB}",
                                                   num_classes=21841, image_size=224, **BEIT_PREPROCESS),
    }
    for size in ("base", "large"):
        for image_size in (224, 384, 512):
            if size == "base" and image_size == 512:
                continue
            arch = f"beit_{size}_patch16_{image_size}"
            preprocess = {**BEIT_PREPROCESS, "crop_ratio": 0.9 if image_size == 224 else 1.0}
            entries[f"{arch}_pt22k_ft22k_in1k"] = _hub(f"timm/{arch}.in22k_ft_in22k_in1k", arch,
                                                       f"{UNILM_BEIT} (pt22k_ft22kto1k); {TIMM_HUB}",
                                                       num_classes=1000, image_size=image_size, **preprocess)
    for size in ("base", "large"):
        arch = f"beitv2_{size}_patch16_224"
        for name, tag in (("pt1k_ft1k", "in1k_ft_in1k"), ("pt1k_ft22k_in1k", "in1k_ft_in22k_in1k")):
            entries[f"{arch}_{name}"] = _hub(f"timm/{arch}.{tag}", arch, f"{UNILM_BEIT2}; {TIMM_HUB}",
                                             num_classes=1000, image_size=224, crop_ratio=0.9, **IMAGENET_PREPROCESS)
    return entries


def _tokenizer_entries():
    entries = {"dall_e_encoder": _url("https://cdn.openai.com/dall-e/encoder.pkl", "dall_e_encoder",
                                      f"openai/DALL-E README.md, as {UNILM_BEIT} says")}
    for name, digest in (("vqkd_encoder_base_decoder_1x768x12_clip", "d93179da"),
                         ("vqkd_encoder_base_decoder_3x768x12_clip", "d5036aa7"),
                         ("vqkd_encoder_base_decoder_1x768x12_dino", "663c55d7")):
        # the digits after the dash are the file's sha256, in torch.hub's naming
        entries[name] = _url(VQKD_RELEASE.format(f"{name}-{digest}"), name, "microsoft/unilm beit2/TOKENIZER.md",
                             sha256=digest)
    return entries


def _mae_entries():
    entries = {}
    for size, patch in (("base", 16), ("large", 16), ("huge", 14)):
        encoder = f"vit_{size}_patch{patch}"
        entries[f"mae_pretrain_vit_{size}"] = _hub(f"timm/{encoder}_224.mae", encoder,
                                                   f"{MAE_README}; timm's copy on the Hugging Face Hub")
        entries[f"mae_finetuned_vit_{size}"] = _url(f"https://dl.fbaipublicfiles.com/mae/finetune/"
                                                    f"mae_finetuned_vit_{size}.pth", encoder, MAE_README,
                                                    num_classes=1000, image_size=224, crop_ratio=0.875,
                                                    **IMAGENET_PREPROCESS)
    for size in ("base", "large"):  # the whole pretraining model, decoder included
        entries[f"mae_visualize_vit_{size}"] = _url(f"https://dl.fbaipublicfiles.com/mae/visualize/"
                                                    f"mae_visualize_vit_{size}.pth", f"mae_vit_{size}_patch16",
                                                    "facebookresearch/mae demo/mae_visualize.ipynb",
                                                    task="mae_pretrain", image_size=224, mask_ratio=0.75,
                                                    norm_pix_loss=False, **IMAGENET_PREPROCESS)
    return entries


def _bit_entries():
    entries = {}
    for variant in ("R50x1", "R50x3", "R101x1", "R101x3", "R152x2", "R152x4"):
        arch = f"bit_m_{variant.lower()}"
        entries[arch] = _url(f"https://storage.googleapis.com/bit_models/BiT-M-{variant}.npz", arch, BIG_TRANSFER,
                             num_classes=21843, image_size=224, crop_ratio=0.875, **BIT_PREPROCESS)
        if variant != "R152x2":  # fine-tuned on ILSVRC-2012, evaluated at 448 uncropped as timm does
            entries[f"{arch}_in1k"] = _url(f"https://storage.googleapis.com/bit_models/BiT-M-{variant}-ILSVRC2012.npz",
                                           arch, BIG_TRANSFER, num_classes=1000, image_size=448, crop_ratio=1.0,
                                           **BIT_PREPROCESS)
    return entries


PUBLISHED = {**_beit_entries(), **_tokenizer_entries(), **_mae_entries(), **_bit_entries()}


def find_published(name):
    """The table's entry for `name`, or None."""
    return PUBLISHED.get(name) if isinstance(name, str) else None


def close_names(name):
    return difflib.get_close_matches(str(name), list(PUBLISHED), n=3)


def published_table():
    """The table as text, one name per line: name, architecture, source."""
    width = max(map(len, PUBLISHED))
    arch_width = max(len(entry.arch) for entry in PUBLISHED.values())
    lines = [f"{'name':<{width}}  {'architecture':<{arch_width}}  source (cited from)"]
    for name, entry in sorted(PUBLISHED.items()):
        source = entry.source if entry.hub_repo else entry.source.split("?")[0]
        lines.append(f"{name:<{width}}  {entry.arch:<{arch_width}}  {source} ({entry.cited})")
    return "\n".join(lines)
