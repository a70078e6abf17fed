"""LARS leaves BN parameters and biases alone (no decay, no trust ratio); the schedule has the recipe's shape."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from timm.optim import Lars

from equimod_zoo.training.optim import OptimConfig, build_optimizer, lr_at, set_lr


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3, bias=False))


def _set_grads(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_groups_exclude_bn_parameters_and_biases():
    model = _model()
    optimizer = build_optimizer(model, OptimConfig(lr=4.0, reference_batch_size=256), batch_size=512)
    assert isinstance(optimizer, Lars)
    decayed, excluded = optimizer.param_groups
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in excluded["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert decayed["weight_decay"] == 1e-6 and decayed["always_adapt"]
    assert excluded["weight_decay"] == 0.0 and not excluded["always_adapt"]
    assert [g["lr"] for g in optimizer.param_groups] == [8.0, 8.0]  # 4.0 * 512 / 256
    assert decayed["trust_coeff"] == 1e-3 and decayed["momentum"] == 0.9


def test_biases_and_bn_follow_plain_sgd_momentum():
    model = _model()
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, OptimConfig(lr=0.5, reference_batch_size=4), batch_size=4)
    excluded = [reference[0].bias, reference[1].weight, reference[1].bias]
    sgd = torch.optim.SGD(excluded, lr=0.5, momentum=0.9)
    for seed in (1, 2, 3):
        _set_grads(model, seed)
        _set_grads(reference, seed)
        optimizer.step()
        sgd.step()
    for ours, plain in zip([model[0].bias, model[1].weight, model[1].bias], excluded):
        assert torch.allclose(ours, plain, atol=1e-6)


def test_weights_get_the_lars_trust_ratio_and_weight_decay():
    model = _model()
    weight = model[0].weight
    before = weight.detach().clone()
    config = OptimConfig(lr=2.0, reference_batch_size=8, weight_decay=1e-2, eta=1e-3)
    optimizer = build_optimizer(model, config, batch_size=8)
    _set_grads(model, 4)
    grad = weight.grad.clone()
    optimizer.step()
    # First step: the momentum buffer is the adapted gradient itself.
    trust = 1e-3 * before.norm() / (grad.norm() + 1e-2 * before.norm())
    expected = before - 2.0 * trust * (grad + 1e-2 * before)
    assert torch.allclose(weight, expected, atol=1e-7)
    # The trust ratio makes the step tiny next to what plain SGD would do.
    assert (weight - before).norm() < 0.01 * (2.0 * grad).norm()


def test_sgd_option_keeps_the_same_groups():
    model = _model()
    optimizer = build_optimizer(model, OptimConfig(lr=0.1, reference_batch_size=256, optimizer="sgd"), batch_size=256)
    assert type(optimizer) is torch.optim.SGD
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-6, 0.0]
    set_lr(optimizer, 0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]


def test_bad_configs_are_reported():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        OptimConfig(lr=1.0, reference_batch_size=256, optimizer="adam")
    with pytest.raises(ValueError, match="lr must be positive"):
        OptimConfig(lr=0.0, reference_batch_size=256)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        build_optimizer(_model(), OptimConfig(lr=1.0, reference_batch_size=256), batch_size=0)


def test_lr_schedule_warms_up_linearly_then_decays_with_a_cosine():
    kwargs = dict(total_steps=110, warmup_steps=10, peak_lr=4.0)
    assert lr_at(0, **kwargs) == 0.0
    assert lr_at(5, **kwargs) == pytest.approx(2.0)
    assert lr_at(10, **kwargs) == pytest.approx(4.0)
    assert lr_at(60, **kwargs) == pytest.approx(2.0)
    assert lr_at(110, **kwargs) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, **kwargs) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(s, **kwargs) for s in range(111)]
    assert max(values) == pytest.approx(4.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert lr_at(0, total_steps=10, warmup_steps=0, peak_lr=1.0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, total_steps=10, warmup_steps=11, peak_lr=1.0)
