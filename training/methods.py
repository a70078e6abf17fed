"""Every base method (SimCLR, BYOL, VICReg, Barlow Twins, MoCo v3), alone or with EquiMod, as an `SSLMethod`.

A method owns a backbone (any timm model built with num_classes=0, returning pooled features) and
its heads, and turns a batch of views into a `StepOutput` (the loss to back-propagate and detached
scalars to log). It knows nothing of optimisers, schedules or data loading.

A base method is data (`BASES`): its projection head, its optional predictor, whether a momentum
target network follows the online one, and its loss. EquiMod is the core's `EquiMod` module,
added the same way to every base: loss = invariance loss + eq_weight * equivariance loss.

Views go through the backbone in one call, concatenated along the batch (x1, x2, and x0 for
EquiMod): one large batch is faster than three small ones, and BatchNorm then normalises with
statistics over all the views together, as SimCLR's reference implementation does for its two
views. Each head likewise sees all its inputs in one call (g_eq: three views, g_t and u: two).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

from equimod_zoo.equimod.augment import NUM_PARAMS
from equimod_zoo.equimod.heads import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    MoCoV3PredictionHead,
    MoCoV3ProjectionHead,
    ProjectionHead,
    SimCLRProjectionHead,
    VICRegProjectionHead,
)
from equimod_zoo.equimod.heads_file import HeadsSchema
from equimod_zoo.equimod.loss import NTXentLoss
from equimod_zoo.equimod.module import EquiMod
from equimod_zoo.errors import UserError
from equimod_zoo.limits import MAX_HEAD_WIDTH, check_limit
from equimod_zoo.method import Method
from equimod_zoo.training.losses import BarlowTwinsLoss, BYOLLoss, MoCoV3Loss, VICRegLoss


@dataclass(frozen=True)
class MethodConfig:
    """Which method, and the sizes and weights of its heads and loss. Defaults are CIFAR-10 settings:
    the paper's for SimCLR, BYOL and EquiMod, solo-learn's for VICReg, Barlow Twins and MoCo v3."""

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
    # VICReg: expander 2048-2048-2048 (8192 on ImageNet), invariance / variance / covariance weights 25, 25, 1.
    vicreg_proj_hidden: int = 2048
    vicreg_proj_out: int = 2048
    vicreg_sim_weight: float = 25.0
    vicreg_var_weight: float = 25.0
    vicreg_cov_weight: float = 1.0
    # Barlow Twins: projector 2048-2048-2048 (8192 on ImageNet), off-diagonal weight 0.0051, loss scale.
    barlow_proj_hidden: int = 2048
    barlow_proj_out: int = 2048
    barlow_lambda: float = 0.0051
    barlow_scale: float = 1.0
    # MoCo v3: projector 4096-256 (2 layers on a ResNet, 3 on a ViT), predictor 4096-256, InfoNCE at 0.2;
    # its momentum target follows `momentum_base` -> 1 (cosine), as BYOL's.
    mocov3_proj_hidden: int = 4096
    mocov3_proj_out: int = 256
    mocov3_proj_layers: int = 2
    mocov3_pred_hidden: int = 4096
    mocov3_temperature: float = 0.2
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
        Method.parse(self.name)  # an unknown name is an UnknownNameError listing the methods
        if not 0.0 <= self.momentum_base <= 1.0:
            raise UserError(f"momentum_base must be in [0, 1], got {self.momentum_base}")
        for name in ("temperature", "eq_temperature", "barlow_scale", "mocov3_temperature"):
            if getattr(self, name) <= 0:
                raise UserError(f"method.{name} must be positive, got {getattr(self, name)}")
        for name in ("eq_weight", "vicreg_sim_weight", "vicreg_var_weight", "vicreg_cov_weight", "barlow_lambda"):
            if getattr(self, name) < 0:
                raise UserError(f"method.{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.mocov3_proj_layers <= 8:
            raise UserError(f"method.mocov3_proj_layers must be from 1 to 8, got {self.mocov3_proj_layers}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "int | None") and value is not None:
                if value < 1:
                    raise UserError(f"method.{f.name} must be positive, got {value}")
                check_limit(f"method.{f.name}", value, MAX_HEAD_WIDTH)

    @property
    def method(self) -> Method:
        return Method.parse(self.name)

    @property
    def base(self) -> str:
        """The invariance method underneath: "simclr", "byol", "vicreg", "barlow_twins", "mocov3"."""
        return self.method.base

    @property
    def equimod(self) -> bool:
        return self.method.equimod

    @property
    def momentum_target(self) -> bool:
        """Whether a momentum target network follows the online one (the trainer's EMA schedule)."""
        return BASES[self.base].momentum_target


@dataclass(frozen=True)
class BaseMethod:
    """How a base method is built: its heads, whether a momentum target follows the online network, its loss.

    With a predictor, each view's prediction regresses the other view's target (the momentum
    network's projection), symmetrically; without, the loss compares the two views' projections.
    """

    projection: Callable[[int, MethodConfig], ProjectionHead]  # (backbone features, config) -> head
    loss: Callable[[MethodConfig], nn.Module]
    predictor: Callable[[MethodConfig], ProjectionHead] | None = None
    momentum_target: bool = False

    @property
    def heads(self) -> tuple[str, ...]:
        """The heads it exports (`equimod_zoo.equimod.heads_file.BASE_HEADS` states the same)."""
        return ("projection", "predictor") if self.predictor is not None else ("projection",)


BASES: dict[str, BaseMethod] = {
    "simclr": BaseMethod(
        projection=lambda dim, c: SimCLRProjectionHead(dim, hidden_dim=c.proj_hidden, output_dim=c.proj_out),
        loss=lambda c: NTXentLoss(c.temperature),
    ),
    "byol": BaseMethod(
        projection=lambda dim, c: BYOLProjectionHead(dim, hidden_dim=c.byol_proj_hidden, output_dim=c.byol_proj_out),
        predictor=lambda c: BYOLPredictionHead(c.byol_proj_out, hidden_dim=c.byol_pred_hidden,
                                               output_dim=c.byol_proj_out),
        loss=lambda c: BYOLLoss(),
        momentum_target=True,
    ),
    "vicreg": BaseMethod(
        projection=lambda dim, c: VICRegProjectionHead(dim, hidden_dim=c.vicreg_proj_hidden,
                                                       output_dim=c.vicreg_proj_out),
        loss=lambda c: VICRegLoss(sim_weight=c.vicreg_sim_weight, var_weight=c.vicreg_var_weight,
                                  cov_weight=c.vicreg_cov_weight),
    ),
    "barlow_twins": BaseMethod(
        projection=lambda dim, c: BarlowTwinsProjectionHead(dim, hidden_dim=c.barlow_proj_hidden,
                                                            output_dim=c.barlow_proj_out),
        loss=lambda c: BarlowTwinsLoss(lambda_=c.barlow_lambda, scale=c.barlow_scale),
    ),
    "mocov3": BaseMethod(
        projection=lambda dim, c: MoCoV3ProjectionHead(dim, hidden_dim=c.mocov3_proj_hidden,
                                                       output_dim=c.mocov3_proj_out, num_layers=c.mocov3_proj_layers),
        predictor=lambda c: MoCoV3PredictionHead(c.mocov3_proj_out, hidden_dim=c.mocov3_pred_hidden,
                                                 output_dim=c.mocov3_proj_out),
        loss=lambda c: MoCoV3Loss(c.mocov3_temperature),
        momentum_target=True,
    ),
}


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


def _with_param_dim(config: MethodConfig) -> MethodConfig:
    """`config` with g_t's input size set: built outside a recipe, the full 18-entry parameter vector."""
    return config if config.param_dim is not None else dataclasses.replace(config, param_dim=NUM_PARAMS)


class SSLMethod(nn.Module):
    """A backbone, the heads of one method, and its loss.

    `forward(x1, x2)` for a base method alone (x0, p1, p2 are ignored); EquiMod variants
    (`uses_params`) also need x0 (the un-augmented images, the shape of x1) and p1, p2 (the
    (N, param_dim) parameter vectors of the two views). Under DDP, call `update_target` on the
    wrapped module.
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
            raise ValueError("backbone must expose .num_features (a timm model built with num_classes=0)")
        if not config.equimod and (param_mean is not None or param_std is not None):
            raise ValueError(f"param_mean / param_std are for EquiMod methods, not {config.name!r}")
        config = _with_param_dim(config)
        self.config = config
        self.spec = BASES[config.base]
        self.backbone = backbone
        self.uses_params = config.equimod
        self.projection = self.spec.projection(feature_dim, config)
        self.predictor = self.spec.predictor(config) if self.spec.predictor is not None else None
        self.inv_loss = self.spec.loss(config)
        if self.spec.momentum_target:
            # The target network: a copy of the online backbone and projector, trained only by EMA.
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projection = copy.deepcopy(self.projection).requires_grad_(False)
        self.equimod = EquiMod(
            feature_dim, param_dim=config.param_dim, param_mean=param_mean, param_std=param_std,
            hidden_dim=config.eq_hidden, output_dim=config.eq_out, param_embed_dim=config.param_embed,
            temperature=config.eq_temperature,
        ) if config.equimod else None

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
            raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        n = x1.shape[0]
        if self.uses_params:
            if x0 is None or p1 is None or p2 is None:
                raise ValueError(f"{self.config.name} needs x0, p1 and p2 besides x1 and x2")
            if x0.shape != x1.shape:
                raise ValueError(f"x0 must have the shape of x1 {tuple(x1.shape)}, got {tuple(x0.shape)}")
            expected = (n, self.config.param_dim)
            if p1.shape != expected or p2.shape != expected:
                raise ValueError(f"p1 and p2 must be {expected}, got {tuple(p1.shape)} and {tuple(p2.shape)}")
            h1, h2, h0 = self.backbone(torch.cat([x1, x2, x0])).split(n)
        else:
            h1, h2 = self.backbone(torch.cat([x1, x2])).split(n)

        loss_inv = self._invariance_loss(h1, h2, x1, x2)
        logs = {"loss_inv": loss_inv.detach()}
        loss = loss_inv
        if self.equimod is not None:
            equivariance = self.equimod(h0, [h1, h2], [p1, p2])
            loss = loss_inv + self.config.eq_weight * equivariance.loss
            logs.update(loss_eq=equivariance.loss.detach(), eq_gain=equivariance.gain)
        return StepOutput(loss=loss, logs=logs)

    def _invariance_loss(self, h1: Tensor, h2: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
        n = h1.shape[0]
        z1, z2 = self.projection(torch.cat([h1, h2])).split(n)
        if self.predictor is None:
            return self.inv_loss(z1, z2)
        q1, q2 = self.predictor(torch.cat([z1, z2])).split(n)
        assert self.spec.momentum_target, "a predictor regresses a momentum target's projection"
        with torch.no_grad():
            # The momentum encoder sees the two augmented views only (never x0).
            t1, t2 = self.target_projection(self.target_backbone(torch.cat([x1, x2]))).split(n)
        # Symmetric: each view's prediction against the other view's target, summed (BYOL, MoCo v3).
        return self.inv_loss(q1, t2) + self.inv_loss(q2, t1)

    @torch.no_grad()
    def update_target(self, momentum: float | Tensor) -> None:
        """target <- momentum * target + (1 - momentum) * online; buffers copied. A no-op without a target.

        `momentum` may be a 0-dim device tensor (the trainer's precomputed schedule): then the
        update never waits for the host. A Python number is checked to lie in [0, 1].
        """
        if not self.spec.momentum_target:
            return
        if not isinstance(momentum, Tensor) and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        for online, target in ((self.backbone, self.target_backbone), (self.projection, self.target_projection)):
            online_params = [p.detach() for p in online.parameters()]
            target_params = list(target.parameters())
            # mul + add rather than lerp: _foreach_mul_ takes a device tensor as is, while lerp's
            # tensor weight is read on the host.
            torch._foreach_mul_(target_params, momentum)
            torch._foreach_add_(target_params, torch._foreach_mul(online_params, 1.0 - momentum))
            buffers = list(target.buffers())
            if buffers:  # a ViT has none (foreach ops refuse empty lists)
                torch._foreach_copy_(buffers, list(online.buffers()))

    @torch.no_grad()
    def reset_target(self) -> None:
        """The target network becomes a copy of the online one (a new training cycle starts)."""
        if self.spec.momentum_target:
            self.target_backbone.load_state_dict(self.backbone.state_dict())
            self.target_projection.load_state_dict(self.projection.state_dict())

    def heads_state_dict(self) -> dict[str, Tensor]:
        """Every trained head (the base method's, and g_eq, g_t, u) and, for EquiMod, `param_mean`
        and `param_std`, as detached tensors; neither the backbone nor a target network.
        """
        heads: dict[str, Tensor] = {}
        modules: dict[str, nn.Module] = {name: getattr(self, name) for name in self.spec.heads}
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
            raise ValueError(f"{self.config.name} reads {self.config.param_dim} augmentation parameters, "
                             f"got {len(param_names)} names")
        return HeadsSchema(
            method=self.config.name,
            projection=self.projection.widths,
            predictor=self.predictor.widths if self.predictor is not None else (),
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
