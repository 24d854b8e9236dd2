"""BEiT / BEiT v2 masked image modeling and its tokenizers against PyTorch references: the
pretraining trunk built from timm's Beit pieces, DALL-E's encoder (tests/reference/dall_e) and a
VQ-KD of timm Beit encoder / decoder with unilm's quantizer; then the tiny pipelines end to end."""
import os
import re
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, assert_one_line_error, run_script
from sample_photos import write_photo_imagenet
from timm.models.beit import Beit as TimmBeit
from timm.models.beit import Block as TimmBlock

from src.models import create_model
from src.models.beit.beit_pretrain import MaskedImageModelingLoss
from src.models.beit.vqkd import NormEMAVectorQuantizer, VqkdDistillLoss, kmeans_codebook
from src.models.vit_convert import convert_vit_weights
from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights
from src.weights.pretrained import pretrained_weights

REFERENCE = os.path.join(ROOT, "tests", "reference")
TINY = dict(img_size=32, patch_size=8, embed_dim=32, num_heads=2)
CONFIGS = os.path.join(ROOT, "src", "configs")


def perturbed(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # zero tables, unit layer scales and zero biases would hide mistakes
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return module.eval()


def numpy_state(module, prefix=""):
    return {prefix + key: value.detach().numpy().copy() for key, value in module.state_dict().items()}


class TorchMaskedImageModeling(torch.nn.Module):
    """unilm's VisionTransformerForMaskedImageModeling(CLS) from timm's Beit trunk and blocks."""

    def __init__(self, depth=3, vocab_size=40, early_layers=None, head_layers=1, shared_lm_head=True):
        super().__init__()
        self.trunk = TimmBeit(**TINY, depth=depth, num_classes=0, global_pool="token", use_abs_pos_emb=False,
                              use_rel_pos_bias=False, use_shared_rel_pos_bias=True, init_values=0.1)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, 32))
        self.lm_head = torch.nn.Linear(32, vocab_size)
        self.early_layers, self.shared_lm_head = early_layers, shared_lm_head
        if early_layers:
            self.cls_pt_layers = torch.nn.ModuleList(
                [TimmBlock(32, 2, qkv_bias=True, init_values=0.1) for _ in range(head_layers)])
            if not shared_lm_head:
                self.cls_pt_norm = torch.nn.LayerNorm(32, eps=1e-6)
                self.cls_pt_lm_head = torch.nn.Linear(32, vocab_size)

    def forward(self, images, mask):
        trunk = self.trunk
        x = trunk.patch_embed(images)
        weight = mask.unsqueeze(-1).float()
        x = x * (1 - weight) + self.mask_token * weight
        x = torch.cat((trunk.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        bias = trunk.rel_pos_bias()
        for index, block in enumerate(trunk.blocks):
            x = block(x, shared_rel_pos_bias=bias)
            if index + 1 == self.early_layers:
                early = x
        logits = self.lm_head(trunk.norm(x)[:, 1:])
        if not self.early_layers:
            return logits
        cls_pt = torch.cat((x[:, :1], early[:, 1:]), dim=1)
        for block in self.cls_pt_layers:
            cls_pt = block(cls_pt, shared_rel_pos_bias=bias)
        if self.shared_lm_head:
            return logits, self.lm_head(trunk.norm(cls_pt)[:, 1:])
        return logits, self.cls_pt_lm_head(self.cls_pt_norm(cls_pt)[:, 1:])

    def unilm_state_dict(self):
        """The published pretraining checkpoint's names: the trunk's at top level."""
        state = {re.sub(r"^trunk\.", "", key): value for key, value in numpy_state(self).items()}
        state["rel_pos_bias.relative_position_index"] = self.trunk.rel_pos_bias.relative_position_index.numpy()
        return state


@pytest.mark.parametrize("head", [None, dict(early_layers=2, head_layers=1, shared_lm_head=True),
                                  dict(early_layers=1, head_layers=2, shared_lm_head=False)])
def test_masked_image_modeling_logits_match_the_reference(head):
    head = head or {}
    reference = perturbed(TorchMaskedImageModeling(**head), seed=0)
    name = "beit_base_patch16_224_8k_vocab_cls_pt" if head else "beit_base_patch16_224_8k_vocab"
    network = create_model(name, **TINY, depth=3, vocab_size=40, init_values=0.1, **head)
    network.set_train(False)
    load_weights(network, convert_vit_weights(reference.unilm_state_dict(), network), "reference")
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    mask = rng.random((2, 16)) < 0.4
    expected = reference(torch.from_numpy(images), torch.from_numpy(mask))
    outputs = network(ms.Tensor(images), ms.Tensor(mask))
    expected, outputs = (expected, outputs) if head else ((expected,), (outputs,))
    for ours, theirs in zip(outputs, expected):
        assert np.abs(ours.asnumpy() - theirs.detach().numpy()).max() < 1e-4


def reference_dalle(seed=0):
    sys.path.insert(0, REFERENCE)
    try:
        from dall_e.encoder import Encoder
    finally:
        sys.path.remove(REFERENCE)
    torch.manual_seed(seed)
    return Encoder(n_hid=64, n_blk_per_group=1, vocab_size=64).eval()


def test_dall_e_encoder_pickle_converts_and_tokenizes_as_the_reference(tmp_path):
    """A whole pickled module, as the published encoder.pkl, read without the dall_e package."""
    reference = reference_dalle()
    torch.save(reference, tmp_path / "encoder.pkl")
    ckpt = str(tmp_path / "dall_e_encoder.ckpt")
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(tmp_path / "encoder.pkl"), "--ckpt_file", ckpt)
    assert result.returncode == 0, result.stderr
    network = create_model("dall_e_encoder", n_hid=64, n_blk_per_group=1, vocab_size=64)
    load_weights(network, load_checkpoint(ckpt), ckpt)
    images = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    pixels = 0.8 * images + 0.1  # map_pixels
    expected = reference(torch.from_numpy(pixels)).detach().numpy()
    assert np.abs(network.logits(ms.Tensor(pixels)).asnumpy() - expected).max() < 1e-4
    np.testing.assert_array_equal(network(ms.Tensor(images)).asnumpy(), expected.argmax(1).reshape(2, -1))


def test_pickles_that_need_other_code_are_refused(tmp_path):
    import collections
    torch.save(collections.Counter(a=1), tmp_path / "evil.pkl")
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", str(tmp_path / "evil.pkl"), "--ckpt_file",
                                     str(tmp_path / "out.ckpt")), "refusing to load collections.Counter")
    assert not (tmp_path / "out.ckpt").exists()


class TorchVqkd(torch.nn.Module):
    """unilm's VQKD: timm Beit encoder / decoder (abs. position embedding, no layer scale, fc_norm), task
    layers and the cosine-lookup codebook."""

    def __init__(self, codes=24, code_dim=8, decoder_out_dim=16):
        super().__init__()
        vit = dict(embed_dim=32, num_heads=2, num_classes=0, global_pool="avg", use_abs_pos_emb=True,
                   use_rel_pos_bias=False, init_values=None)
        self.encoder = TimmBeit(img_size=32, patch_size=8, depth=2, **vit)
        self.decoder = TimmBeit(img_size=4, patch_size=1, in_chans=code_dim, depth=1, **vit)
        self.encode_task_layer = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                                     torch.nn.Linear(32, code_dim))
        self.decode_task_layer = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                                     torch.nn.Linear(32, decoder_out_dim))
        self.codebook = F.normalize(torch.randn(codes, code_dim), dim=-1)

    @staticmethod
    def patch_tokens(vit, x):
        return vit.fc_norm(vit.forward_features(x)[:, 1:])

    def forward(self, images):
        z = F.normalize(self.encode_task_layer(self.patch_tokens(self.encoder, images * 2 - 1)), dim=-1)
        flat = z.reshape(-1, z.shape[-1])
        distances = (flat ** 2).sum(1, keepdim=True) + (self.codebook ** 2).sum(1) - 2 * flat @ self.codebook.T
        indices = distances.argmin(1)
        quantized = self.codebook[indices].view(z.shape)
        code_map = quantized.transpose(1, 2).reshape(z.shape[0], -1, 4, 4)
        return indices.view(z.shape[0], -1), self.decode_task_layer(self.patch_tokens(self.decoder, code_map))

    def published_state_dict(self):
        state = {key: value for key, value in numpy_state(self).items() if not key.startswith("codebook")}
        codes = self.codebook.numpy()
        state.update({"quantize.embedding.weight": codes, "quantize.embedding.embed_avg": codes,
                      "quantize.embedding.cluster_size": np.ones(len(codes), np.float32),
                      "quantize.embedding.initted": np.ones(1, np.float32),
                      "quantize.cluster_size": np.arange(len(codes), dtype=np.float32),
                      "teacher_model.visual.proj": np.zeros((4, 4), np.float32),
                      "scaling_layer.shift": np.zeros((1, 3, 1, 1), np.float32)})
        return {"model": {key: torch.from_numpy(value) for key, value in state.items()}}


def test_vqkd_checkpoint_converts_and_matches_the_reference(tmp_path):
    torch.manual_seed(0)
    reference = perturbed(TorchVqkd(), seed=1)
    torch.save(reference.published_state_dict(), tmp_path / "vqkd.pth")
    ckpt = str(tmp_path / "vqkd.ckpt")
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(tmp_path / "vqkd.pth"), "--ckpt_file", ckpt, "--arch",
                        "vqkd_encoder_base_decoder_1x768x12_clip", "--model_args", "{num_heads: 2}")
    assert result.returncode == 0, result.stderr
    weights = load_checkpoint(ckpt)
    assert not any(name.startswith(("teacher_model", "scaling_layer")) for name in weights)
    images = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    expected_tokens, expected_features = (t.detach().numpy() for t in reference(torch.from_numpy(images)))
    sizes = dict(**TINY, depth=2, decoder_depth=1, codebook_size=24, codebook_dim=8, decoder_out_dim=16)
    full = create_model("vqkd_encoder_base_decoder_1x768x12_clip", **sizes)
    full.set_train(False)
    load_weights(full, weights, ckpt)
    features, _ = full.reconstruct(ms.Tensor(images))
    assert np.abs(features.asnumpy() - expected_features).max() < 1e-4
    tokenizer = create_model("vqkd_encoder_base_decoder_1x768x12_clip", as_tokenizer=True, **sizes)
    load_weights(tokenizer, weights, ckpt)  # the decoder's weights are simply not needed
    np.testing.assert_array_equal(tokenizer(ms.Tensor(images)).asnumpy(), expected_tokens)


def test_codebook_ema_update_follows_unilm():
    quantizer = NormEMAVectorQuantizer(6, 4, decay=0.9)
    quantizer.set_train(True)
    codes = quantizer.embedding.weight.asnumpy().copy()
    z = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    _, _, indices = quantizer(ms.Tensor(z))
    flat = z.reshape(-1, 4) / np.linalg.norm(z.reshape(-1, 4), axis=1, keepdims=True)
    assigned = (flat @ codes.T).argmax(1)  # cosine lookup on unit vectors
    np.testing.assert_array_equal(indices.asnumpy(), assigned)
    one_hot = np.eye(6, dtype=np.float32)[assigned]
    bins = one_hot.sum(0)
    means = (flat.T @ one_hot / np.maximum(bins, 1)).T
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    means = np.where(bins[:, None] == 0, codes, means)
    expected = codes * 0.9 + means * 0.1
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(quantizer.embedding.weight.asnumpy(), expected, atol=1e-6)
    np.testing.assert_allclose(quantizer.cluster_size.asnumpy(), bins * 0.1, atol=1e-6)
    quantizer.set_train(False)  # evaluation leaves the codebook alone
    quantizer(ms.Tensor(z))
    np.testing.assert_allclose(quantizer.embedding.weight.asnumpy(), expected, atol=1e-6)


def unilm_cross_entropy(logits, input_ids, bool_masked_pos):
    """unilm's engine_for_pretraining: CrossEntropyLoss(model(x, bool_masked_pos), input_ids[bool_masked_pos]),
    the model returning the logits of the masked patches only."""
    mask = torch.from_numpy(bool_masked_pos)
    return F.cross_entropy(torch.from_numpy(logits)[mask], torch.from_numpy(input_ids).long()[mask])


@pytest.mark.parametrize("cls_pt", [False, True])
def test_masked_image_modeling_loss_equals_unilms(cls_pt):
    """BEiT: the cross-entropy of the masked patches' logits; BEiT v2: the same for both heads, summed."""
    heads = dict(early_layers=1, head_layers=1) if cls_pt else {}
    model = create_model("beit_base_patch16_224_8k_vocab" + ("_cls_pt" if cls_pt else ""), **TINY, depth=2,
                         vocab_size=48, init_values=0.1, **heads)
    tokenizer = create_model("dall_e_encoder", n_hid=16, n_blk_per_group=1, vocab_size=48)
    loss_cell = MaskedImageModelingLoss(model, tokenizer)
    loss_cell.set_train(False)
    rng = np.random.default_rng(4)
    images = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    tokenizer_images = rng.random((3, 3, 32, 32)).astype(np.float32)
    bool_masked_pos = rng.random((3, 16)) < 0.4
    ours = float(loss_cell(ms.Tensor(images), ms.Tensor(tokenizer_images), ms.Tensor(bool_masked_pos)).asnumpy())
    input_ids = tokenizer(ms.Tensor(tokenizer_images)).asnumpy()
    outputs = model(ms.Tensor(images), ms.Tensor(bool_masked_pos))
    outputs = outputs if cls_pt else (outputs,)
    expected = sum(float(unilm_cross_entropy(logits.asnumpy(), input_ids, bool_masked_pos)) for logits in outputs)
    assert abs(ours - expected) < 1e-5


def unilm_quantize(z, codebook, cluster_size, decay, beta=1.0):
    """unilm's NormEMAVectorQuantizer.forward in training mode (its formulas, in PyTorch): (z_q, loss, indices,
    new codebook, new cluster_size) for z (B, N, C)."""
    z = F.normalize(z, dim=-1)
    flat = z.reshape(-1, z.shape[-1])
    d = flat.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * torch.einsum("bd,nd->bn", flat,
                                                                                              codebook)
    indices = torch.argmin(d, dim=1)
    z_q = F.embedding(indices, codebook).view(z.shape)
    encodings = F.one_hot(indices, codebook.shape[0]).type(z.dtype)
    bins = encodings.sum(0)
    cluster_size = cluster_size * decay + bins * (1 - decay)
    zero_mask = bins == 0
    bins = bins.masked_fill(zero_mask, 1.0)
    embed_normalized = F.normalize(((flat.t() @ encodings) / bins.unsqueeze(0)).t(), dim=-1)
    embed_normalized = torch.where(zero_mask[..., None], codebook, embed_normalized)
    new_codebook = F.normalize(codebook * decay + embed_normalized * (1 - decay), dim=-1)
    loss = beta * F.mse_loss(z_q, z)
    return z_q, loss, indices, new_codebook, cluster_size


def test_vqkd_distillation_loss_and_codebook_update_equal_unilms():
    """VQ-KD's loss (commitment + 1 - cosine to the teacher's features, unilm's calculate_rec_loss) and its EMA
    codebook step, against unilm's formulas on the same tensors."""
    sizes = dict(**TINY, depth=1, decoder_depth=1, codebook_size=12, codebook_dim=8, decoder_out_dim=32,
                 codebook_decay=0.9)
    vqkd = create_model("vqkd_encoder_base_decoder_1x768x12_clip", **sizes)
    teacher = create_model("beit_base_patch16_224", **TINY, depth=1, num_classes=0, init_values=0.1)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    loss_cell = VqkdDistillLoss(vqkd, teacher, mean, std)
    images = np.random.default_rng(5).random((2, 3, 32, 32)).astype(np.float32)
    codebook = vqkd.quantize.embedding.weight.asnumpy().copy()
    cluster_size = vqkd.quantize.cluster_size.asnumpy().copy()
    vqkd.set_train(False)  # the tensors unilm's quantizer receives, before any update
    z = vqkd.encode_task_layer(vqkd.encoder.forward_patch_tokens(ms.Tensor(images * 2 - 1))).asnumpy()
    target = teacher.forward_patch_tokens(
        ms.Tensor((images - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1)), ms.float32)).asnumpy()
    z_q, commitment, indices, new_codebook, new_cluster_size = unilm_quantize(
        torch.from_numpy(z), torch.from_numpy(codebook), torch.from_numpy(cluster_size), decay=0.9)
    code_map = ms.Tensor(z_q.numpy().transpose(0, 2, 1).reshape(2, 8, 4, 4))
    reconstruction = vqkd.decode_task_layer(vqkd.decoder.forward_patch_tokens(code_map)).asnumpy()
    rec, tgt = F.normalize(torch.from_numpy(reconstruction), dim=-1), F.normalize(torch.from_numpy(target), dim=-1)
    expected = float(commitment + (1 - (tgt * rec).sum(-1)).mean())

    loss_cell.set_train(True)
    ours = float(loss_cell(ms.Tensor(images), ms.Tensor(np.zeros(2, np.int32))).asnumpy())
    assert abs(ours - expected) < 1e-5
    np.testing.assert_allclose(vqkd.quantize.embedding.weight.asnumpy(), new_codebook.numpy(), atol=1e-6)
    np.testing.assert_allclose(vqkd.quantize.cluster_size.asnumpy(), new_cluster_size.numpy(), atol=1e-6)
    assert len(set(indices.tolist())) > 1  # the update moved several codes


def test_kmeans_codebook_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4, dtype=np.float32)
    vectors = np.concatenate([centre + 0.05 * rng.standard_normal((50, 4)) for centre in centres])
    codes, sizes = kmeans_codebook(vectors.astype(np.float32), 4)
    assert sorted(sizes.tolist()) == [50, 50, 50, 50]
    assert np.allclose(np.abs(codes @ centres.T).max(axis=1), 1.0, atol=0.01)


def loss_trace(stdout):
    return [float(value) for value in re.findall(r"loss is ([0-9.]+)", stdout)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photo_imagenet(str(root), num_classes=8, train_per_class=6, val_per_class=0)
    return str(root / "train")


def test_vqkd_training_then_beit_v2_pretraining_then_fine_tuning(photos, tmp_path):
    vqkd = run_script("train.py", "--config", f"{CONFIGS}/vqkd_tiny_cpu.yaml", "--data_url", photos,
                      "--train_url", str(tmp_path / "vqkd"), "--epochs", "4")
    assert vqkd.returncode == 0, vqkd.stdout + vqkd.stderr
    assert "codebook initialised by k-means" in vqkd.stdout
    losses = loss_trace(vqkd.stdout)
    assert losses[-1] < 0.6 * losses[0], losses
    tokenizer_ckpt = str(tmp_path / "vqkd" / "ckpt_0000" / "vqkd_encoder_base_decoder_3x768x12_clip_0000-4_6.ckpt")
    assert not any(name.startswith("teacher_model.") for name in load_checkpoint(tokenizer_ckpt))

    beitv2 = run_script(
        "train.py", "--config", f"{CONFIGS}/beit_tiny_pretrain_cpu.yaml", "--data_url", photos, "--train_url",
        str(tmp_path / "beitv2"), "--epochs", "4", "--arch", "beit_base_patch16_224_8k_vocab_cls_pt",
        "--early_layers", "1", "--head_layers", "1", "--color_jitter", "0.4", "--second_interpolation", "bicubic",
        "--tokenizer", "vqkd_encoder_base_decoder_3x768x12_clip", "--tokenizer_pretrained", tokenizer_ckpt,
        "--tokenizer_args", "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2, codebook_size: 64, "
        "codebook_dim: 8}")
    assert beitv2.returncode == 0, beitv2.stdout + beitv2.stderr
    assert "random weights" not in beitv2.stdout
    losses = loss_trace(beitv2.stdout)
    assert losses[-1] < 0.8 * losses[0], losses
    pretrained = str(tmp_path / "beitv2" / "ckpt_0000" / "beit_base_patch16_224_8k_vocab_cls_pt_0000-4_6.ckpt")
    saved = load_checkpoint(pretrained)
    assert "mask_token" in saved and "cls_pt_layers.0.attn.qkv.weight" in saved
    assert not any(name.startswith("tokenizer.") for name in saved)

    # the fine-tuning model gets the shared relative position bias in every block's table
    classifier = create_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2,
                              num_heads=2, num_classes=3, init_values=0.1)
    weights = pretrained_weights(classifier, pretrained)
    shared = saved["rel_pos_bias.relative_position_bias_table"].asnumpy()
    for block in range(2):
        np.testing.assert_array_equal(weights[f"blocks.{block}.attn.relative_position_bias_table"], shared)
    imagenet = tmp_path / "imagenet"
    write_photo_imagenet(str(imagenet), num_classes=3, train_per_class=4, val_per_class=2)
    finetune = run_script("train.py", "--config", f"{CONFIGS}/beit_tiny_imagenet_cpu.yaml", "--data_url",
                          str(imagenet), "--train_url", str(tmp_path / "ft"), "--epochs", "1", "--pretrained",
                          pretrained)
    assert finetune.returncode == 0, finetune.stdout + finetune.stderr
    assert "has no fc_norm.gamma, fc_norm.beta, head.weight, head.bias; initialised anew" in finetune.stdout


def test_beit_pretraining_with_a_dall_e_tokenizer_learns_and_resumes(photos, tmp_path):
    common = ["--config", f"{CONFIGS}/beit_tiny_pretrain_cpu.yaml", "--data_url", photos, "--train_url",
              str(tmp_path)]
    result = run_script("train.py", *common, "--epochs", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    losses = loss_trace(result.stdout)
    assert losses[-1] < 0.7 * losses[0], losses
    resumed = run_script("train.py", *common, "--epochs", "4", "--resume",
                         str(tmp_path / "ckpt_0000" / "beit_base_patch16_224_8k_vocab_0000-3_6.ckpt"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and "epochs 4..4" in resumed.stdout


@pytest.mark.parametrize("extra, needle", [
    (["--tokenizer", ""], "needs a tokenizer"),
    (["--set", "ImageNet"], "set ImageFolder"),
    (["--tokenizer", "dall_e_encodr"], "did you mean 'dall_e_encoder'"),
])
def test_pretraining_misconfigurations_are_one_line_errors(photos, tmp_path, extra, needle):
    result = run_script("train.py", "--config", f"{CONFIGS}/beit_tiny_pretrain_cpu.yaml", "--data_url", photos,
                        "--train_url", str(tmp_path), *extra)
    assert_one_line_error(result, needle)
