"""`EquiMod`, the method-independent module: its loss is the paper's over any number of views, its
standardisation and heads are the ones documented, and bad shapes are refused."""
from __future__ import annotations

import pytest
import torch

from equimod_zoo.equimod import EquiMod, EquiModLoss, equivariance_gain


def _module(**kwargs) -> EquiMod:
    torch.manual_seed(0)
    return EquiMod(12, param_dim=5, hidden_dim=16, output_dim=8, param_embed_dim=6, **kwargs).eval()


def _inputs(n: int = 4, views: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(n, 12, generator=g)
    hs = [torch.randn(n, 12, generator=g) for _ in range(views)]
    ps = [torch.rand(n, 5, generator=g) for _ in range(views)]
    return h0, hs, ps


@pytest.mark.parametrize("views", [1, 2, 3])
def test_the_loss_is_ntxent_between_each_view_and_its_prediction(views):
    mean, std = torch.linspace(0, 1, 5), torch.linspace(1, 2, 5)
    module = _module(param_mean=mean, param_std=std)
    h0, hs, ps = _inputs(views=views)
    out = module(h0, hs, ps)
    # the same numbers from the parts: eval-mode BN is per sample, so the heads may run one tensor at a time
    y0 = module.g_eq(h0)
    y = torch.cat([module.g_eq(h) for h in hs])
    y_hat = torch.cat([module.u(y0, module.g_t((p - mean) / std)) for p in ps])
    assert torch.allclose(module.embed(h0), y0) and torch.allclose(module.predict(y0, ps[0]), y_hat[:4])
    assert out.loss.item() == pytest.approx(EquiModLoss(0.2)(y, y_hat).item(), rel=1e-6)
    assert out.gain.item() == pytest.approx(equivariance_gain(y0, y, y_hat).item(), rel=1e-6)
    assert out.loss.requires_grad and not out.gain.requires_grad


def test_gradients_reach_the_features_and_every_head():
    module = _module().train()
    h0, hs, ps = _inputs()
    h0.requires_grad_(True)
    module(h0, hs, ps).loss.backward()
    assert h0.grad is not None and h0.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for name, p in module.named_parameters() if not name.endswith("bias"))


def test_bad_inputs_are_refused_with_their_shapes():
    module = _module()
    h0, hs, ps = _inputs()
    with pytest.raises(ValueError, match="one parameter tensor per view"):
        module(h0, hs, ps[:1])
    with pytest.raises(ValueError, match=r"h0's shape \(4, 12\)"):
        module(h0, [hs[0][:3], hs[1]], ps)
    with pytest.raises(ValueError, match=r"params must be \(4, 5\) \(a, b, c, d, e\), got \(4, 6\)"):
        EquiMod(12, param_dim=5, param_names="abcde", hidden_dim=16, output_dim=8).predict(
            torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError, match="param_std must be positive"):
        _module(param_std=torch.zeros(5))
    with pytest.raises(ValueError, match=r"param_mean must have shape \(5,\)"):
        _module(param_mean=torch.zeros(4))
    with pytest.raises(ValueError, match="param_names has 2 entries"):
        EquiMod(12, param_dim=5, param_names=("a", "b"))
