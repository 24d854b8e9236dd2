"""BEiT v2's VQ-KD tokenizer (unilm `beit2/modeling_vqkd.py`, `norm_ema_quantizer.py`).

A ViT encoder (absolute position embedding, no layer scale, mean-pooling fc_norm on the patch
tokens) and a Linear-Tanh-Linear task layer map each patch to a 32-d vector, l2-normalised and
quantised to the nearest of 8192 l2-normalised codes (cosine lookup). As a tokenizer it returns the
code indices. In training (stage one) a shallow ViT decoder (patch size 1 over the 14x14 code map)
reconstructs a teacher's patch features, scored by cosine similarity; the codebook is not trained by
gradients but moved towards the mean of its assigned vectors by an exponential moving average.
"""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from src.models.layers import dense, frozen
from src.models.registry import model_family, register_model
from src.models.vit import VisionTransformer


def l2_normalize(x, axis=-1):
    return x / ops.maximum(ops.norm(x, dim=axis, keepdim=True), 1e-12)


class Codebook(nn.Cell):
    """The code vectors (`quantize.embedding.weight`), moved by EMA, never by gradients."""

    def __init__(self, num_tokens, codebook_dim):
        super().__init__()
        codes = np.random.randn(num_tokens, codebook_dim).astype(np.float32)
        codes /= np.linalg.norm(codes, axis=1, keepdims=True)
        self.weight = ms.Parameter(ms.Tensor(codes), name="weight", requires_grad=False)


class NormEMAVectorQuantizer(nn.Cell):
    """`construct(z)`: (B, N, C) -> (straight-through quantised z, commitment loss, (B*N,) code indices).

    With `update_codebook` and in training mode, each step moves every used code towards the
    l2-normalised mean of the vectors assigned to it (summed over devices in data-parallel runs)
    with `decay`, and re-normalises it; `cluster_size` keeps a moving count of code usage.
    """

    def __init__(self, num_tokens, codebook_dim, decay=0.99, beta=1.0, update_codebook=True):
        super().__init__()
        self.num_tokens = num_tokens
        self.decay = decay
        self.beta = beta
        self.update_codebook = update_codebook
        self.embedding = Codebook(num_tokens, codebook_dim)
        self.cluster_size = ms.Parameter(ms.Tensor(np.zeros(num_tokens, np.float32)), name="cluster_size",
                                         requires_grad=False)
        self.distributed = ms.get_auto_parallel_context("parallel_mode") == "data_parallel"
        if self.distributed:
            self.all_reduce = ops.AllReduce()

    def nearest_codes(self, flat):
        codes = self.embedding.weight
        distances = (flat ** 2).sum(axis=1, keepdims=True) + (codes ** 2).sum(axis=1) - 2 * ops.matmul(flat, codes.T)
        return distances.argmin(axis=1).astype(ms.int32)

    def ema_update(self, flat, indices):
        codes = self.embedding.weight
        one_hot = ops.one_hot(indices, self.num_tokens, ms.Tensor(1.0, ms.float32), ms.Tensor(0.0, ms.float32))
        bins = one_hot.sum(axis=0)
        embed_sum = ops.matmul(flat.T, one_hot)  # (C, num_tokens)
        if self.distributed:
            bins = self.all_reduce(bins)
            embed_sum = self.all_reduce(embed_sum)
        updated = ops.assign(self.cluster_size, self.cluster_size * self.decay + bins * (1 - self.decay))
        unused = (bins == 0).expand_dims(-1)
        means = l2_normalize((embed_sum / ops.where(bins == 0, ops.ones_like(bins), bins)).T)
        means = ops.where(unused, codes, means)
        new_codes = l2_normalize(codes * self.decay + means * (1 - self.decay))
        return ops.depend(updated, ops.assign(self.embedding.weight, new_codes))

    def construct(self, z):
        z = l2_normalize(z.astype(ms.float32))
        flat = z.reshape(-1, z.shape[-1])
        indices = self.nearest_codes(flat)
        quantized = ops.gather(self.embedding.weight, indices, 0).reshape(z.shape)
        if self.update_codebook and self.training:
            indices = ops.depend(indices, self.ema_update(ops.stop_gradient(flat), indices))
        loss = self.beta * ((ops.stop_gradient(quantized) - z) ** 2).mean()
        quantized = z + ops.stop_gradient(quantized - z)
        return quantized, loss, indices


def _task_layer(in_dim, out_dim):
    return nn.SequentialCell([dense(in_dim, in_dim), nn.Tanh(), dense(in_dim, out_dim)])


class VQKD(nn.Cell):
    """`construct(images)`: (B, 3, H, W) in [0, 1] -> (B, N) int32 code indices.
    `reconstruct(images)` -> (decoded features (B, N, decoder_out_dim), commitment loss), for training.

    `as_tokenizer` leaves out the decoder and freezes the codebook.
    """

    def __init__(self, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                 decoder_depth=3, codebook_size=8192, codebook_dim=32, codebook_decay=0.99, decoder_out_dim=512,
                 as_tokenizer=False):
        super().__init__()
        vit = dict(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias="qv", init_values=0,
                   use_abs_pos_emb=True, use_rel_pos_bias=False, use_mean_pooling=True, num_classes=0)
        self.encoder = VisionTransformer(img_size=img_size, patch_size=patch_size, depth=depth, **vit)
        self.encode_task_layer = _task_layer(embed_dim, codebook_dim)
        self.quantize = NormEMAVectorQuantizer(codebook_size, codebook_dim, codebook_decay,
                                               update_codebook=not as_tokenizer)
        self.grid = self.encoder.patch_embed.grid_size
        self.as_tokenizer = as_tokenizer
        if not as_tokenizer:
            self.decoder = VisionTransformer(img_size=self.grid[0], patch_size=1, in_chans=codebook_dim,
                                             depth=decoder_depth, **vit)
            self.decode_task_layer = _task_layer(embed_dim, decoder_out_dim)

    def encode(self, images):
        """(quantised codes (B, N, C), commitment loss, (B*N,) indices); images in [0, 1], scaled to [-1, 1]
        as unilm's default `process_type`."""
        features = self.encoder.forward_patch_tokens(images * 2 - 1)
        return self.quantize(self.encode_task_layer(features))

    def construct(self, images):
        _, _, indices = self.encode(images)
        return indices.reshape(images.shape[0], -1)

    def reconstruct(self, images):
        quantized, loss, _ = self.encode(images)
        batch, _, channels = quantized.shape
        code_map = quantized.transpose(0, 2, 1).reshape(batch, channels, self.grid[0], self.grid[1])
        return self.decode_task_layer(self.decoder.forward_patch_tokens(code_map)), loss


def cosine_distance(prediction, target):
    """Mean of 1 - cos(prediction, target) over tokens: VQ-KD's reconstruction loss."""
    return (1 - (l2_normalize(prediction) * l2_normalize(target)).sum(axis=-1)).mean()


class VqkdDistillLoss(nn.Cell):
    """(images in [0, 1], labels) -> commitment loss + cosine distance to a frozen teacher's patch features.

    The teacher is any model of the project with `forward_patch_tokens` and a patch grid equal to the
    tokenizer's; its parameters are named `teacher_model.*` and are never trained.
    """

    def __init__(self, vqkd, teacher, teacher_mean, teacher_std):
        super().__init__(auto_prefix=False)  # keep the tokenizer's parameter names in checkpoints
        self.vqkd = vqkd
        self.teacher_model = frozen(teacher, "teacher_model.")
        self.teacher_mean = ms.Tensor(np.asarray(teacher_mean, np.float32).reshape(1, 3, 1, 1))
        self.teacher_std = ms.Tensor(np.asarray(teacher_std, np.float32).reshape(1, 3, 1, 1))

    def construct(self, images, labels):
        target = self.teacher_model.forward_patch_tokens((images - self.teacher_mean) / self.teacher_std)
        reconstruction, commitment = self.vqkd.reconstruct(images)
        return commitment + cosine_distance(reconstruction, ops.stop_gradient(target))


def kmeans_codebook(vectors, num_codes, iterations=10, seed=0):
    """unilm's k-means codebook initialisation on l2-normalised vectors (cosine similarity):
    (codes (num_codes, C), cluster sizes)."""
    rng = np.random.default_rng(seed)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    picks = rng.permutation(len(vectors))[:num_codes] if len(vectors) >= num_codes \
        else rng.integers(0, len(vectors), num_codes)
    means = vectors[picks]
    for _ in range(iterations):
        buckets = (vectors @ means.T).argmax(axis=1)
        bins = np.bincount(buckets, minlength=num_codes)
        sums = np.zeros_like(means)
        np.add.at(sums, buckets, vectors)
        new_means = sums / np.maximum(bins, 1)[:, None]
        new_means /= np.maximum(np.linalg.norm(new_means, axis=1, keepdims=True), 1e-12)
        means = np.where((bins == 0)[:, None], means, new_means)
    return means.astype(np.float32), bins.astype(np.float32)


def init_codebook_with_kmeans(vqkd, images):
    """Set the codebook by k-means over the encoder's vectors for a batch of images (in [0, 1])."""
    features = vqkd.encode_task_layer(vqkd.encoder.forward_patch_tokens(ms.Tensor(images) * 2 - 1)).asnumpy()
    codes, sizes = kmeans_codebook(features.reshape(-1, features.shape[-1]), vqkd.quantize.num_tokens)
    vqkd.quantize.embedding.weight.set_data(ms.Tensor(codes))
    vqkd.quantize.cluster_size.set_data(ms.Tensor(sizes))


# no classifier, no stochastic depth
VQKD_FAMILY = model_family("vqkd", {key: key for key in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                                         "decoder_depth", "codebook_size", "codebook_dim",
                                                         "codebook_decay")}
                           | {"image_size": "img_size"}, VQKD)


def _vqkd(defaults, **kwargs):
    return VQKD(**{**defaults, **kwargs})


@register_model(VQKD_FAMILY)
def vqkd_encoder_base_decoder_3x768x12_clip(**kwargs):
    """The tokenizer BEiT v2 recommends: 3-block decoder, distilled from CLIP ViT-B/16 (512-d features)."""
    return _vqkd(dict(decoder_depth=3, decoder_out_dim=512), **kwargs)


@register_model(VQKD_FAMILY)
def vqkd_encoder_base_decoder_1x768x12_clip(**kwargs):
    return _vqkd(dict(decoder_depth=1, decoder_out_dim=512), **kwargs)


@register_model(VQKD_FAMILY)
def vqkd_encoder_base_decoder_1x768x12_dino(**kwargs):
    return _vqkd(dict(decoder_depth=1, decoder_out_dim=768), **kwargs)
