"""Optimizers, learning-rate schedules, losses and mixup against PyTorch / timm references."""
import mindspore as ms
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import switch_fused_kernels_off
from mindspore import nn
from timm.data.mixup import mixup_target

from src.data.augment.mixup import Mixup, mixup_targets
from src.engine.criterion import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from src.optim.optimizer import AdamW, Momentum, param_groups
from src.optim.schedulers import cosine_lr, exp_decay_lr

ms.set_context(mode=ms.GRAPH_MODE)


OPTIMIZERS_AND_REFERENCES = {
    "adamw": (lambda groups, lr: AdamW(groups, lr, beta1=0.9, beta2=0.999, eps=1e-8),
              lambda groups: torch.optim.AdamW(groups, lr=0.1, eps=1e-8)),
    "momentum": (lambda groups, lr: Momentum(groups, lr, momentum=0.9),
                 lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9)),
}


# the CPU's fused kernels (on a weight large enough to be split over threads; in PyNative mode with a fixed learning
# rate, which is a Parameter there) and MindSpore's ops; the gradients come with the train step's scale factor
@pytest.mark.parametrize("name", sorted(OPTIMIZERS_AND_REFERENCES))
@pytest.mark.parametrize("fused, width, mode", [(True, 3, ms.GRAPH_MODE), (True, 20000, ms.GRAPH_MODE),
                                                (True, 3, ms.PYNATIVE_MODE), (False, 3, ms.GRAPH_MODE)])
def test_optimizer_matches_torch_with_groups_per_step_lr_and_gradient_scale(name, fused, width, mode, request):
    if not fused:
        switch_fused_kernels_off(request)
    ms.set_context(mode=mode)
    request.addfinalizer(lambda: ms.set_context(mode=ms.GRAPH_MODE))
    create, create_reference = OPTIMIZERS_AND_REFERENCES[name]
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((4, width)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    fixed_lr = mode == ms.PYNATIVE_MODE
    lrs = np.full(5, 0.05, np.float32) if fixed_lr else np.array([0.1, 0.05, 0.02, 0.01, 0.01], np.float32)
    dense = nn.Dense(weight.shape[1], 4)
    dense.weight.set_data(ms.Tensor(weight))
    dense.bias.set_data(ms.Tensor(bias))
    groups = param_groups(dense, weight_decay=0.1)
    no_decay = [group for group in groups if group.get("weight_decay") == 0.0]
    assert [p.name for p in no_decay[0]["params"]] == [dense.bias.name]  # no decay on the bias
    optimizer = create(groups, float(lrs[0]) if fixed_lr else ms.Tensor(lrs))
    assert (optimizer.fused_update is not None) == fused
    t_weight, t_bias = torch.nn.Parameter(torch.tensor(weight)), torch.nn.Parameter(torch.tensor(bias))
    reference = create_reference([{"params": [t_weight], "weight_decay": 0.1},
                                  {"params": [t_bias], "weight_decay": 0.0}])
    for lr, grad_scale in zip(lrs, (0.5, 1.0, 0.25, 2.0, 1.0)):
        grad_w, grad_b = rng.standard_normal(weight.shape).astype(np.float32), rng.standard_normal(4).astype(np.float32)
        optimizer((ms.Tensor(grad_w), ms.Tensor(grad_b)), ms.Tensor(grad_scale, ms.float32))
        for group in reference.param_groups:
            group["lr"] = float(lr)
        t_weight.grad, t_bias.grad = torch.tensor(grad_w * grad_scale), torch.tensor(grad_b * grad_scale)
        reference.step()
    np.testing.assert_allclose(dense.weight.asnumpy(), t_weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(dense.bias.asnumpy(), t_bias.detach().numpy(), atol=1e-6)


def test_momentum_continues_nn_momentum_from_its_state():
    """Momentum keeps nn.Momentum's state names: a run with one resumed with the other ends where the other would."""
    rng = np.random.default_rng(1)
    grads = [(rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(2).astype(np.float32))
             for _ in range(4)]

    def step(optimizer, grad):
        optimizer(tuple(ms.Tensor(g) for g in grad))

    ms.set_seed(0)
    stock_dense, dense = nn.Dense(3, 2), nn.Dense(3, 2)
    ms.load_param_into_net(dense, stock_dense.parameters_dict())
    stock = nn.Momentum(stock_dense.trainable_params(), 0.1, momentum=0.9, weight_decay=0.01)
    ours = Momentum(dense.trainable_params(), 0.1, momentum=0.9, weight_decay=0.01)
    assert sorted(p.name for p in ours.get_parameters()) == sorted(p.name for p in stock.get_parameters())
    for grad in grads[:2]:
        step(stock, grad)
    state = {name: ms.Parameter(param.value().copy(), name=name)
             for name, param in list(stock.parameters_dict().items()) + list(stock_dense.parameters_dict().items())}
    assert not ms.load_param_into_net(ours, state)[0] and not ms.load_param_into_net(dense, state)[0]
    for grad in grads[2:]:
        step(stock, grad)
        step(ours, grad)
    np.testing.assert_allclose(dense.weight.asnumpy(), stock_dense.weight.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(ours.moments[0].asnumpy(), stock.moments[0].asnumpy(), atol=1e-6)


def test_cosine_schedule_warmup_decay_and_cool_down():
    schedule = cosine_lr(1.0, 0.01, total_steps=100, warmup_steps=10, warmup_lr=0.1, cool_steps=20, cool_lr=0.001)
    assert len(schedule) == 100
    np.testing.assert_allclose(schedule[:10], 0.1 + 0.9 * np.arange(10) / 10)
    assert schedule[10] == pytest.approx(1.0)
    decay = schedule[10:80]
    assert np.all(np.diff(decay) <= 0) and decay[-1] == pytest.approx(0.01, abs=1e-3)
    assert decay[35] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 35 / 70)))
    np.testing.assert_array_equal(schedule[80:], 0.001)


def test_exponential_decay_is_a_staircase_after_warmup():
    schedule = exp_decay_lr(0.02, total_steps=100, steps_per_decay=25, decay_rate=0.5, warmup_steps=5)
    np.testing.assert_allclose(schedule[:5], 0.02 * np.arange(5) / 5)
    assert schedule[5] == schedule[24] == pytest.approx(0.02)
    assert schedule[25] == pytest.approx(0.01) and schedule[99] == pytest.approx(0.02 * 0.5 ** 3)


def test_losses_match_torch():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6).astype(np.int32)
    ours = LabelSmoothingCrossEntropy(0.1)(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()
    reference = F.cross_entropy(torch.tensor(logits), torch.tensor(labels).long(), label_smoothing=0.1).item()
    assert float(ours) == pytest.approx(reference, rel=1e-5)
    targets = rng.dirichlet(np.ones(5), 6).astype(np.float32)
    ours = SoftTargetCrossEntropy()(ms.Tensor(logits), ms.Tensor(targets)).asnumpy()
    reference = torch.sum(-torch.tensor(targets) * F.log_softmax(torch.tensor(logits), -1), -1).mean().item()
    assert float(ours) == pytest.approx(reference, rel=1e-5)


def test_mixup_targets_match_timm():
    labels = np.array([3, 1, 4, 1, 5, 9])
    for lam in (1.0, 0.7, 0.31):
        ours = mixup_targets(labels, 10, lam, 0.1)
        reference = mixup_target(torch.tensor(labels), 10, lam=lam, smoothing=0.1).numpy()
        np.testing.assert_allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("use_cutmix", [False, True])
def test_mixed_batches_equal_timms_for_the_same_lambda_and_box(use_cutmix, monkeypatch):
    import timm.data.mixup as timm_mixup

    import src.data.augment.mixup as mixup_module

    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 3, 20, 24)).astype(np.float32)
    labels = np.array([0, 3, 1, 4, 2, 3])
    box = (2, 15, 5, 19)  # rows 2..15, columns 5..19: the area actually pasted
    reference = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=5)
    monkeypatch.setattr(reference, "_params_per_batch", lambda: (0.6, use_cutmix))
    monkeypatch.setattr(timm_mixup, "rand_bbox", lambda *args, **kwargs: box)
    ref_images, ref_targets = reference(torch.tensor(images), torch.tensor(labels))
    ours = Mixup(num_classes=5, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    monkeypatch.setattr(ours, "sample_params", lambda: (0.6, use_cutmix))
    monkeypatch.setattr(mixup_module, "cutmix_box", lambda *args: box)
    mixed, targets = ours(images, labels)
    np.testing.assert_allclose(mixed, ref_images.numpy(), atol=1e-6)
    np.testing.assert_allclose(targets, ref_targets.numpy(), atol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)


def test_cutmix_pastes_the_flipped_batch_and_corrects_lambda():
    images = np.stack([np.full((3, 16, 16), value, np.float32) for value in range(4)])
    labels = np.array([0, 1, 2, 3])
    mixup = Mixup(num_classes=4, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, seed=3)
    for _ in range(20):
        mixed, targets = mixup(images, labels)
        pasted = mixed[0, 0] != 0  # image 0 (zeros) receives a box from image 3
        area = pasted.mean()
        assert np.all(mixed[0][:, pasted] == 3)
        rows, cols = np.where(pasted)
        if area:  # a rectangle
            assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        np.testing.assert_allclose(targets[0], [1 - area, 0, 0, area], atol=1e-6)
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("fused, width", [(True, 2), (True, 20000), (False, 2)])
def test_rmsprop_from_config_follows_the_tensorflow_update(fused, width, request):
    """BiT's seed trains with TF-style RMSProp: mean square starting at 1, eps inside the square root, lr in
    the momentum buffer; weight decay added to the (scaled) gradient, not to the bias's; nn.RMSProp's state names."""
    from src.args import parse_args
    from src.optim.optimizer import create_optimizer

    if not fused:
        switch_fused_kernels_off(request)
    args = parse_args(["--optimizer", "rmsprop", "--decay", "0.9", "--momentum", "0.9", "--eps", "0.001",
                       "--weight_decay", "0.01"])
    dense = nn.Dense(width, 1)
    start, bias = dense.weight.asnumpy().copy(), dense.bias.asnumpy().copy()
    lrs = np.array([0.1, 0.05, 0.02], np.float32)
    optimizer = create_optimizer(args, dense, lrs)
    assert (optimizer.fused_update is not None) == fused
    stock = nn.RMSProp(dense.trainable_params(), 0.1)
    assert sorted(p.name for p in optimizer.get_parameters()) == sorted(p.name for p in stock.get_parameters())
    rng = np.random.default_rng(2)
    state = {"weight": [start.copy(), np.ones_like(start), np.zeros_like(start)],
             "bias": [bias.copy(), np.ones_like(bias), np.zeros_like(bias)]}
    for lr, grad_scale in zip(lrs, (0.5, 1.0, 2.0)):
        grads = {"weight": rng.standard_normal(start.shape).astype(np.float32), "bias": np.array([0.3], np.float32)}
        optimizer((ms.Tensor(grads["weight"]), ms.Tensor(grads["bias"])), ms.Tensor(grad_scale, ms.float32))
        for name, weight_decay in (("weight", 0.01), ("bias", 0.0)):
            param, mean_square, moment = state[name]
            grad = grads[name] * grad_scale + weight_decay * param
            mean_square[:] = 0.9 * mean_square + 0.1 * grad ** 2
            moment[:] = 0.9 * moment + lr * grad / np.sqrt(mean_square + 0.001)
            param -= moment
    np.testing.assert_allclose(dense.weight.asnumpy(), state["weight"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.bias.asnumpy(), state["bias"][0], rtol=1e-5, atol=1e-6)
