"""SimCLR, BYOL, and each with the EquiMod equivariance module, as `SSLMethod` modules.

A method owns a backbone (a timm model built with num_classes=0, returning pooled features) and
its heads, and turns a batch of views into a `StepOutput` (the loss to back-propagate and detached
scalars to log). It knows nothing of optimisers, schedules or data loading.

Views go through the backbone in one call, concatenated along the batch (x1, x2, and x0 for
EquiMod): one large batch is faster than three small ones, and BatchNorm then normalises with
statistics over all the views together, as SimCLR's reference implementation does for its two
views. Each head likewise sees all its inputs in one call (g_eq: three views, g_t and u: two).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

from equimod_zoo.equimod.heads import (
    AugmentationEmbedding,
    BYOLPredictionHead,
    BYOLProjectionHead,
    EquiModProjectionHead,
    EquivariantPredictor,
    SimCLRProjectionHead,
)
from equimod_zoo.equimod.augment import NUM_PARAMS
from equimod_zoo.equimod.heads_file import HeadsSchema
from equimod_zoo.errors import UserError
from equimod_zoo.method import Method
from equimod_zoo.training.losses import BYOLLoss, EquiModLoss, NTXentLoss, equivariance_gain



@dataclass(frozen=True)
class MethodConfig:
    """Which method, and the sizes of its heads. Defaults are the paper's CIFAR-10 recipe."""

    name: str
    # SimCLR: projection 2048-2048-128, NT-Xent temperature 0.5 on CIFAR-10 (0.2 on ImageNet).
    proj_hidden: int = 2048
    proj_out: int = 128
    temperature: float = 0.5
    # BYOL: projector 4096-256, predictor 4096-256, target momentum base -> 1 (cosine).
    byol_proj_hidden: int = 4096
    byol_proj_out: int = 256
    byol_pred_hidden: int = 4096
    momentum_base: float = 0.996
    # EquiMod: g_eq 2048-2048-128, g_t P -> 128, u (128 + 128) -> 128, NT-Xent at 0.2, weight lambda.
    # P, the augmentation parameters g_t reads: a recipe sets it to the length of its pipeline's list
    # (`augment.params`); None, outside a recipe, is the full 18-entry vector.
    eq_hidden: int = 2048
    eq_out: int = 128
    param_dim: int | None = None
    param_embed: int = 128
    eq_temperature: float = 0.2
    eq_weight: float = 1.0

    def __post_init__(self) -> None:
        Method.parse(self.name)  # an unknown name is one line naming the known ones
        if not 0.0 <= self.momentum_base <= 1.0:
            raise UserError(f"momentum_base must be in [0, 1], got {self.momentum_base}")
        if self.eq_weight < 0:
            raise UserError(f"eq_weight must be >= 0, got {self.eq_weight}")

    @property
    def kind(self) -> Method:
        return Method.parse(self.name)

    @property
    def base(self) -> str:
        """The invariance method underneath: "simclr" or "byol"."""
        return self.kind.base

    @property
    def equimod(self) -> bool:
        return self.kind.equimod


@dataclass
class StepOutput:
    """The loss to back-propagate and detached scalars to log (loss_inv; loss_eq, eq_gain for EquiMod)."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


def byol_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """BYOL's target momentum at step k of K: 1 - (1 - base) (cos(pi k / K) + 1) / 2, base -> 1."""
    if total_steps <= 0:
        raise UserError(f"total_steps must be positive, got {total_steps}")
    progress = min(max(step, 0), total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def momentum_schedule(total_steps: int, base: float, *, device: torch.device | str = "cpu") -> Tensor:
    """`byol_momentum` for steps 0..total_steps as one float32 tensor on `device` (built once per run)."""
    return torch.tensor([byol_momentum(step, total_steps, base) for step in range(total_steps + 1)],
                        dtype=torch.float32, device=device)


class EquiModModule(nn.Module):
    """EquiMod's equivariance branch (Devillers & Lefort 2023): g_eq, g_t, u and their loss.

    Parameters are standardised with the `param_mean` / `param_std` buffers (per-dataset
    statistics of the parameter vector) before g_t.
    """

    def __init__(
        self,
        input_dim: int,
        config: MethodConfig,
        *,
        param_mean: Tensor | None = None,
        param_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        config = _with_param_dim(config)
        self.g_eq = EquiModProjectionHead(input_dim, hidden_dim=config.eq_hidden, output_dim=config.eq_out)
        self.g_t = AugmentationEmbedding(config.param_dim, output_dim=config.param_embed)
        self.u = EquivariantPredictor(config.eq_out, config.param_embed)
        self.loss = EquiModLoss(config.eq_temperature)
        mean = torch.zeros(config.param_dim) if param_mean is None else _param_stat(param_mean, "param_mean", config)
        std = torch.ones(config.param_dim) if param_std is None else _param_stat(param_std, "param_std", config)
        if not bool((std > 0).all()):
            raise UserError("param_std must be positive in every entry (a constant parameter has std 0: use 1)")
        self.register_buffer("param_mean", mean)
        self.register_buffer("param_std", std)

    def forward(self, h1: Tensor, h2: Tensor, h0: Tensor, p1: Tensor, p2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        n = h1.shape[0]
        y1, y2, y0 = self.g_eq(torch.cat([h1, h2, h0])).split(n)
        params = torch.cat([p1, p2]).to(self.param_mean.dtype)
        a = self.g_t((params - self.param_mean) / self.param_std)
        y_hat1, y_hat2 = self.u(torch.cat([y0, y0]), a).split(n)
        loss = self.loss(y1, y2, y_hat1, y_hat2)
        gain = equivariance_gain(y0, y1, y2, y_hat1, y_hat2)
        return loss, {"loss_eq": loss.detach(), "eq_gain": gain}


def _with_param_dim(config: MethodConfig) -> MethodConfig:
    """`config` with g_t's input size set: built outside a recipe, the full 18-entry parameter vector."""
    return config if config.param_dim is not None else dataclasses.replace(config, param_dim=NUM_PARAMS)


def _param_stat(value: Tensor, name: str, config: MethodConfig) -> Tensor:
    value = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if value.shape != (config.param_dim,):
        raise UserError(f"{name} must have shape ({config.param_dim},), got {tuple(value.shape)}")
    return value


class SSLMethod(nn.Module):
    """A backbone, the heads of one method, and its loss.

    `forward(x1, x2)` for SimCLR / BYOL (x0, p1, p2 are ignored); EquiMod variants (`uses_params`)
    also need x0 (the un-augmented images, the shape of x1) and p1, p2 (the (N, param_dim)
    parameter vectors of the two views). Under DDP, call `update_target` on the wrapped module.
    """

    def __init__(
        self,
        config: MethodConfig,
        backbone: nn.Module,
        *,
        param_mean: Tensor | None = None,
        param_std: Tensor | None = None,
    ) -> None:
        super().__init__()
        feature_dim = getattr(backbone, "num_features", None)
        if not isinstance(feature_dim, int):
            raise UserError("backbone must expose .num_features (a timm model built with num_classes=0)")
        if not config.equimod and (param_mean is not None or param_std is not None):
            raise UserError(f"param_mean / param_std are for EquiMod methods, not {config.name!r}")
        config = _with_param_dim(config)
        self.config = config
        self.backbone = backbone
        self.uses_params = config.equimod
        if config.base == "simclr":
            self.projection = SimCLRProjectionHead(
                feature_dim, hidden_dim=config.proj_hidden, output_dim=config.proj_out
            )
            self.inv_loss: nn.Module = NTXentLoss(config.temperature)
        else:
            self.projection = BYOLProjectionHead(
                feature_dim, hidden_dim=config.byol_proj_hidden, output_dim=config.byol_proj_out
            )
            self.predictor = BYOLPredictionHead(
                config.byol_proj_out, hidden_dim=config.byol_pred_hidden, output_dim=config.byol_proj_out
            )
            self.inv_loss = BYOLLoss()
            # The target network: a copy of the online backbone and projector, trained only by EMA.
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projection = copy.deepcopy(self.projection).requires_grad_(False)
        self.equimod = (
            EquiModModule(feature_dim, config, param_mean=param_mean, param_std=param_std) if config.equimod else None
        )

    def forward(
        self,
        x1: Tensor,
        x2: Tensor,
        *,
        x0: Tensor | None = None,
        p1: Tensor | None = None,
        p2: Tensor | None = None,
    ) -> StepOutput:
        if x1.shape != x2.shape:
            raise UserError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        n = x1.shape[0]
        if self.uses_params:
            if x0 is None or p1 is None or p2 is None:
                raise UserError(f"{self.config.name} needs x0, p1 and p2 besides x1 and x2")
            if x0.shape != x1.shape:
                raise UserError(f"x0 must have the shape of x1 {tuple(x1.shape)}, got {tuple(x0.shape)}")
            expected = (n, self.config.param_dim)
            if p1.shape != expected or p2.shape != expected:
                raise UserError(f"p1 and p2 must be {expected}, got {tuple(p1.shape)} and {tuple(p2.shape)}")
            h1, h2, h0 = self.backbone(torch.cat([x1, x2, x0])).split(n)
        else:
            h1, h2 = self.backbone(torch.cat([x1, x2])).split(n)

        loss_inv = self._invariance_loss(h1, h2, x1, x2)
        logs = {"loss_inv": loss_inv.detach()}
        loss = loss_inv
        if self.equimod is not None:
            loss_eq, eq_logs = self.equimod(h1, h2, h0, p1, p2)
            loss = loss_inv + self.config.eq_weight * loss_eq
            logs.update(eq_logs)
        return StepOutput(loss=loss, logs=logs)

    def _invariance_loss(self, h1: Tensor, h2: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
        n = h1.shape[0]
        z1, z2 = self.projection(torch.cat([h1, h2])).split(n)
        if self.config.base == "simclr":
            return self.inv_loss(z1, z2)
        q1, q2 = self.predictor(torch.cat([z1, z2])).split(n)
        with torch.no_grad():
            # The momentum encoder sees the two augmented views only (never x0).
            t1, t2 = self.target_projection(self.target_backbone(torch.cat([x1, x2]))).split(n)
        # Symmetric: each view's prediction regresses the other view's target; summed as in BYOL.
        return self.inv_loss(q1, t2) + self.inv_loss(q2, t1)

    @torch.no_grad()
    def update_target(self, momentum: float | Tensor) -> None:
        """BYOL: target <- momentum * target + (1 - momentum) * online; buffers copied. No-op for SimCLR.

        `momentum` may be a 0-dim device tensor (the trainer's precomputed schedule): then the
        update never waits for the host. A Python number is checked to lie in [0, 1].
        """
        if self.config.base != "byol":
            return
        if not isinstance(momentum, Tensor) and not 0.0 <= momentum <= 1.0:
            raise UserError(f"momentum must be in [0, 1], got {momentum}")
        for online, target in ((self.backbone, self.target_backbone), (self.projection, self.target_projection)):
            online_params = [p.detach() for p in online.parameters()]
            target_params = list(target.parameters())
            # mul + add rather than lerp: _foreach_mul_ takes a device tensor as is, while lerp's
            # tensor weight is read on the host.
            torch._foreach_mul_(target_params, momentum)
            torch._foreach_add_(target_params, torch._foreach_mul(online_params, 1.0 - momentum))
            torch._foreach_copy_(list(target.buffers()), list(online.buffers()))

    @torch.no_grad()
    def reset_target(self) -> None:
        """BYOL: the target network becomes a copy of the online one (a new training cycle starts)."""
        if self.config.base == "byol":
            self.target_backbone.load_state_dict(self.backbone.state_dict())
            self.target_projection.load_state_dict(self.projection.state_dict())

    def heads_state_dict(self) -> dict[str, Tensor]:
        """Every trained head (projection, predictor, g_eq, g_t, u) and, for EquiMod, `param_mean`
        and `param_std`, as detached tensors; neither the backbone nor BYOL's target network.
        """
        heads: dict[str, Tensor] = {}
        modules: dict[str, nn.Module] = {"projection": self.projection}
        if self.config.base == "byol":
            modules["predictor"] = self.predictor
        if self.equimod is not None:
            modules.update(g_eq=self.equimod.g_eq, g_t=self.equimod.g_t, u=self.equimod.u)
        for prefix, module in modules.items():
            for key, value in module.state_dict().items():
                heads[f"{prefix}.{key}"] = value.detach()
        if self.equimod is not None:
            heads["param_mean"] = self.equimod.param_mean.detach()
            heads["param_std"] = self.equimod.param_std.detach()
        return heads


    def heads_schema(self, param_names: tuple[str, ...] = ()) -> HeadsSchema:
        """The schema of `heads_state_dict()`: every head's layer widths and g_t's parameter names."""
        eq = self.equimod
        if eq is not None and len(param_names) != self.config.param_dim:
            raise UserError(f"{self.config.name} reads {self.config.param_dim} augmentation parameters, "
                            f"got {len(param_names)} names")
        return HeadsSchema(
            method=self.config.name,
            projection=self.projection.widths,
            predictor=self.predictor.widths if self.config.base == "byol" else (),
            g_eq=eq.g_eq.widths if eq is not None else (),
            g_t=eq.g_t.widths if eq is not None else (),
            param_names=tuple(param_names) if eq is not None else (),
        )


def build_method(
    config: MethodConfig,
    backbone: nn.Module,
    *,
    param_mean: Tensor | None = None,
    param_std: Tensor | None = None,
) -> SSLMethod:
    """`config.name`'s method around `backbone` (a timm model with num_classes=0).

    `param_mean` / `param_std` (param_dim,) standardise EquiMod's augmentation parameters; they
    default to 0 and 1, so pass the statistics of the training augmentations.
    """
    return SSLMethod(config, backbone, param_mean=param_mean, param_std=param_std)
