"""Every base method and its EquiMod variant train, wire their views as documented and export their heads."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import equimod_zoo  # noqa: F401  (registers resnet18_cifar)
from equimod_zoo.equimod.heads_file import BASE_HEADS
from equimod_zoo.method import BASE_METHODS, all_method_names
from equimod_zoo.training.methods import BASES, MethodConfig, StepOutput, build_method, byol_momentum
from equimod_zoo.training.optim import OptimConfig, build_optimizer

METHODS = all_method_names()

TINY_HEADS = dict(
    proj_hidden=32, proj_out=16, byol_proj_hidden=32, byol_proj_out=16, byol_pred_hidden=32,
    vicreg_proj_hidden=32, vicreg_proj_out=16, barlow_proj_hidden=32, barlow_proj_out=16,
    mocov3_proj_hidden=32, mocov3_proj_out=16, mocov3_pred_hidden=32,
    eq_hidden=32, eq_out=16, param_embed=16,
)  # fmt: skip


def _backbone() -> torch.nn.Module:
    return timm.create_model("resnet18_cifar", num_classes=0, channels=(8, 16, 32, 64), stem_width=8)


def _method(name: str, **kwargs):
    torch.manual_seed(0)
    return build_method(MethodConfig(name, **TINY_HEADS), _backbone(), **kwargs).train()


def _batch(n: int = 8, size: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 3, size, size, generator=g)
    # Two "augmented" views: x0 moved by a per-image brightness shift recorded in the parameters.
    p1, p2 = torch.rand(n, 18, generator=g), torch.rand(n, 18, generator=g)
    x1 = x0 + p1[:, 10, None, None, None] + 0.1 * torch.randn(n, 3, size, size, generator=g)
    x2 = x0.flip(-1) + p2[:, 10, None, None, None] + 0.1 * torch.randn(n, 3, size, size, generator=g)
    return {"x1": x1, "x2": x2, "x0": x0, "p1": p1, "p2": p2}


@pytest.mark.parametrize("name", all_method_names())
def test_each_method_lowers_its_loss(name):
    method = _method(name)
    optimizer = build_optimizer(method, OptimConfig(lr=1.0, reference_batch_size=8), batch_size=8)
    batch = _batch()
    views = batch if method.uses_params else {"x1": batch["x1"], "x2": batch["x2"]}
    losses = []
    for _ in range(12):
        out = method(**views)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.update_target(0.99)
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses


def test_step_output_logs_for_simclr_and_equimod():
    batch = _batch()
    plain = _method("simclr")(batch["x1"], batch["x2"])
    assert isinstance(plain, StepOutput) and set(plain.logs) == {"loss_inv"}
    assert plain.loss.item() == pytest.approx(plain.logs["loss_inv"].item())

    equi = build_method(MethodConfig("byol_equimod", eq_weight=0.5, **TINY_HEADS), _backbone()).train()
    out = equi(**batch)
    assert set(out.logs) == {"loss_inv", "loss_eq", "eq_gain"}
    assert all(not v.requires_grad and v.ndim == 0 for v in out.logs.values())
    expected = out.logs["loss_inv"] + 0.5 * out.logs["loss_eq"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_views_share_one_backbone_call_and_the_target_sees_x1_x2_only():
    method = _method("byol_equimod")
    batch_sizes: dict[str, list[int]] = {"online": [], "target": []}
    method.backbone.register_forward_hook(lambda m, i, o: batch_sizes["online"].append(i[0].shape[0]))
    method.target_backbone.register_forward_hook(lambda m, i, o: batch_sizes["target"].append(i[0].shape[0]))
    method(**_batch(n=4))
    assert batch_sizes == {"online": [12], "target": [8]}
    assert not any(p.requires_grad for p in method.target_backbone.parameters())


def test_augmentation_parameters_are_standardised_before_g_t():
    mean, std = torch.linspace(0, 1, 18), torch.linspace(1, 2, 18)
    method = _method("simclr_equimod", param_mean=mean, param_std=std)
    seen = []
    method.equimod.g_t.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    batch = _batch(n=4)
    method(**batch)
    assert torch.allclose(seen[0], (torch.cat([batch["p1"], batch["p2"]]) - mean) / std)


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="unknown method 'swav'"):
        MethodConfig("swav")
    with pytest.raises(ValueError, match="method.vicreg_proj_hidden: 1,000,000,000 is over the limit of 16,384"):
        MethodConfig("vicreg", vicreg_proj_hidden=10**9)  # refused before anything is allocated
    with pytest.raises(ValueError, match="barlow_scale must be positive"):
        MethodConfig("barlow_twins", barlow_scale=0.0)
    batch = _batch(n=4)
    equi = _method("simclr_equimod")
    with pytest.raises(ValueError, match="needs x0, p1 and p2"):
        equi(batch["x1"], batch["x2"])
    with pytest.raises(ValueError, match=r"p1 and p2 must be \(4, 18\)"):
        equi(batch["x1"], batch["x2"], x0=batch["x0"], p1=batch["p1"][:, :17], p2=batch["p2"])
    with pytest.raises(ValueError, match="param_std must be positive"):
        _method("simclr_equimod", param_std=torch.zeros(18))
    with pytest.raises(ValueError, match=r"param_mean must have shape \(18,\)"):
        _method("simclr_equimod", param_mean=torch.zeros(17))
    with pytest.raises(ValueError, match="for EquiMod methods"):
        _method("simclr", param_mean=torch.zeros(18))


def test_update_target_is_an_exponential_moving_average():
    method = _method("byol")
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    online = [p.clone() for p in method.backbone.parameters()]
    before = [p.clone() for p in method.target_backbone.parameters()]
    method.update_target(1.0)
    assert all(torch.equal(t, b) for t, b in zip(method.target_backbone.parameters(), before))
    method.update_target(0.75)
    for t, b, o in zip(method.target_backbone.parameters(), before, online):
        assert torch.allclose(t, 0.75 * b + 0.25 * o, atol=1e-6)
    method.update_target(0.0)
    assert all(torch.equal(t, o) for t, o in zip(method.target_projection.parameters(), method.projection.parameters()))
    simclr = _method("simclr")
    simclr.update_target(0.5)  # a no-op: SimCLR has no target network
    assert not hasattr(simclr, "target_backbone")


def test_byol_momentum_goes_from_base_to_one():
    assert byol_momentum(0, 100) == pytest.approx(0.996)
    assert byol_momentum(50, 100) == pytest.approx(0.998)
    assert byol_momentum(100, 100) == 1.0
    assert byol_momentum(0, 10, base=0.99) == pytest.approx(0.99)
    with pytest.raises(ValueError, match="total_steps"):
        byol_momentum(0, 0)


@pytest.mark.parametrize(
    ("name", "prefixes"),
    [
        ("simclr", {"projection"}),
        ("byol", {"projection", "predictor"}),
        ("mocov3", {"projection", "predictor"}),
        ("byol_equimod", {"projection", "predictor", "g_eq", "g_t", "u", "param_mean", "param_std"}),
    ],
)
def test_heads_state_dict_holds_every_head_and_no_backbone(name, prefixes, tmp_path):
    mean, std = (torch.rand(18), torch.rand(18) + 0.5) if "equimod" in name else (None, None)
    method = _method(name, param_mean=mean, param_std=std)
    heads = method.heads_state_dict()
    assert {key.split(".")[0] for key in heads} == prefixes
    if mean is not None:
        assert torch.equal(heads["param_mean"], mean) and torch.equal(heads["param_std"], std)
        assert heads["u.layers.0.weight"].shape == (16, 32)
    save_file(heads, tmp_path / "equimod_heads.safetensors")
    restored = load_file(tmp_path / "equimod_heads.safetensors")
    assert all(torch.equal(restored[k], v) for k, v in heads.items())


def test_mixed_precision_keeps_the_losses_in_float32():
    method = _method("simclr_equimod")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(**_batch(n=4))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert all(v.dtype == torch.float32 for v in out.logs.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_a_sync_batchnorm_method_keeps_its_heads_and_target():
    method = _method("byol_equimod")
    keys = set(method.heads_state_dict())
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, torch.nn.SyncBatchNorm)
                   for m in synced.modules())
    assert set(synced.heads_state_dict()) == keys
    assert isinstance(synced.equimod.u.layers[1], torch.nn.SyncBatchNorm) and not synced.equimod.u.layers[1].affine
    synced.update_target(0.5)
    out = synced(**_batch(n=4))  # no process group: SyncBatchNorm runs as plain BN
    assert torch.isfinite(out.loss)


def test_every_base_method_is_one_row_of_data_agreeing_with_its_heads_schema():
    assert set(BASES) == set(BASE_METHODS) == set(BASE_HEADS)
    for base, spec in BASES.items():
        assert spec.heads == BASE_HEADS[base], base
        assert spec.momentum_target == (spec.predictor is not None), base  # a predictor regresses momentum keys
        method = _method(base)
        assert {key.split(".")[0] for key in method.heads_state_dict()} == set(BASE_HEADS[base])
        assert hasattr(method, "target_backbone") == spec.momentum_target
