"""Map published tokenizer weights onto DalleEncoder and VQKD parameter names.

DALL-E (`encoder.pkl` of openai/DALL-E): `blocks.<...>.w` / `.b` -> `.weight` / `.bias`.
VQ-KD (unilm beit2 `vqkd_*.pth`): names match except LayerNorm weight / bias; the teacher, its
input scaling layer, `relative_position_index` buffers and the quantizer's unused EMA state
(`embed_avg`, `initted`) are dropped.
"""
from src.models.vit_convert import rename_layer_norm

VQKD_DROPPED = ("teacher_model.", "scaling_layer.", "loss.")
VQKD_UNUSED = ("relative_position_index", "embed_avg", "initted", "embedding.cluster_size")


def is_dalle_state_dict(weights):
    return "blocks.input.w" in weights


def is_vqkd_state_dict(weights):
    return "quantize.embedding.weight" in weights


def convert_dalle_weights(weights):
    leaves = {"w": "weight", "b": "bias"}
    converted = {}
    for key, value in weights.items():
        prefix, _, leaf = key.rpartition(".")
        converted[f"{prefix}.{leaves.get(leaf, leaf)}"] = value
    return converted


def convert_vqkd_weights(weights):
    return {rename_layer_norm(key): value for key, value in weights.items()
            if not key.startswith(VQKD_DROPPED) and not key.endswith(VQKD_UNUSED)}
