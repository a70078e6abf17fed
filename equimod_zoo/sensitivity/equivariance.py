"""Does a trained EquiMod module predict how augmentations move the embedding, on images it never saw?

For a model folder whose equimod_heads.safetensors holds EquiMod's heads (g_eq, g_t, u, and the
parameter standardisation `param_mean` / `param_std`, as `SSLMethod.heads_state_dict` writes them):

    y0 = g_eq(f(x0)),  y_t = g_eq(f(x_t)),  y_hat_t = u([y0, g_t((p_t - mean) / std)])

- eq_gain = mean cos(y_t, y_hat_t) - mean cos(y_t, y0): > 0 when the prediction beats assuming
  invariance (the invariant baseline, y_hat_t := y0, has eq_gain 0 by definition);
- retrieval_top1: how often y_hat_t is closer (cosine) to its own y_t than to every other y_t of
  its batch, against retrieval_top1_invariant, the same with y0 in place of y_hat_t.
"""
from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

from equimod_zoo.model_folder import HEADS_FILE, ModelFolderError
from equimod_zoo.training.heads import AugmentationEmbedding, EquiModProjectionHead, EquivariantPredictor


class EquiModHeads(nn.Module):
    """EquiMod's g_eq, g_t and u with the parameter standardisation, in eval mode."""

    def __init__(self, g_eq: EquiModProjectionHead, g_t: AugmentationEmbedding, u: EquivariantPredictor,
                 param_mean: torch.Tensor, param_std: torch.Tensor) -> None:
        super().__init__()
        self.g_eq, self.g_t, self.u = g_eq, g_t, u
        self.register_buffer("param_mean", param_mean.float())
        self.register_buffer("param_std", param_std.float())
        self.eval()

    @classmethod
    def from_folder(cls, folder: str | Path) -> EquiModHeads | None:
        """The heads in FOLDER/equimod_heads.safetensors, or None when the folder has no EquiMod heads."""
        path = Path(folder) / HEADS_FILE
        if not path.is_file():
            return None
        try:
            state = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises several types for a corrupt file
            raise ModelFolderError(f"{path}: not a readable safetensors file ({error})") from None
        if not any(key.startswith("g_eq.") for key in state):
            return None  # SimCLR / BYOL heads only
        # the file also holds the invariance heads (projection, predictor): keep EquiMod's own
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()
                 if k.split(".")[0] in ("g_eq", "g_t", "u", "param_mean", "param_std")}
        try:
            hidden, input_dim = state["g_eq.layers.0.weight"].shape
            output_dim = state["g_eq.layers.6.weight"].shape[0]
            param_embed, param_dim = state["g_t.layers.0.weight"].shape
            heads = cls(
                EquiModProjectionHead(input_dim, hidden_dim=hidden, output_dim=output_dim),
                AugmentationEmbedding(param_dim, output_dim=param_embed),
                EquivariantPredictor(output_dim, param_embed),
                state["param_mean"], state["param_std"],
            )
            heads.load_state_dict(state, strict=True)
        except (KeyError, RuntimeError) as error:
            raise ModelFolderError(f"{path}: not EquiMod heads this version can read ({error})") from None
        return heads

    @torch.inference_mode()
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.g_eq(features.to(self.param_mean))

    @torch.inference_mode()
    def predict(self, y0: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """y_hat_t from y0 and the raw parameter vectors."""
        a = self.g_t((params.to(self.param_mean) - self.param_mean) / self.param_std)
        return self.u(y0, a)


def equivariance_metrics(heads: EquiModHeads, original: torch.Tensor, view: torch.Tensor, params: torch.Tensor,
                         image: torch.Tensor, *, batch_size: int = 256) -> dict[str, float | int]:
    """eq-gain and batch retrieval of the predicted embeddings, with the invariant baseline beside them.

    Args:
        original: [N, D] backbone features of the x0 images; view: [M, D] of the augmented views;
        params: [M, 18] their raw parameters; image: [M] which x0 each view comes from.
        batch_size: the retrieval gallery: each y_hat_t is matched among the y_t of its batch.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 for retrieval, got {batch_size}")
    y0 = heads.embed(original)[image]
    y_t = heads.embed(view)
    y_hat = heads.predict(y0, params)
    cos_predicted = F.cosine_similarity(y_t, y_hat, dim=1)
    cos_invariant = F.cosine_similarity(y_t, y0, dim=1)
    hits_predicted, hits_invariant, counted = 0, 0, 0
    for start in range(0, len(y_t) - 1, batch_size):  # a last batch of one sample would be trivial
        gallery = F.normalize(y_t[start:start + batch_size], dim=1)
        targets = torch.arange(len(gallery))
        hits_predicted += int((F.normalize(y_hat[start:start + batch_size], dim=1) @ gallery.T).argmax(1).eq(targets).sum())
        hits_invariant += int((F.normalize(y0[start:start + batch_size], dim=1) @ gallery.T).argmax(1).eq(targets).sum())
        counted += len(gallery)
    return {
        "eq_gain": (cos_predicted.mean() - cos_invariant.mean()).item(),
        "cos_predicted": cos_predicted.mean().item(),
        "cos_invariant": cos_invariant.mean().item(),
        "retrieval_top1": hits_predicted / counted,
        "retrieval_top1_invariant": hits_invariant / counted,
        "retrieval_batch_size": batch_size,
        "num_samples": len(y_t),
    }
