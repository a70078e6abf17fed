"""Does a trained EquiMod module predict how augmentations move the embedding, on images it never saw?

For a model folder whose equimod_heads.safetensors holds EquiMod's heads (g_eq, g_t, u, and the
parameter standardisation `param_mean` / `param_std`; `equimod_zoo.equimod.heads_file.load_equimod_heads`):

    y0 = g_eq(f(x0)),  y_t = g_eq(f(x_t)),  y_hat_t = u([y0, g_t((p_t - mean) / std)])

- eq_gain = mean cos(y_t, y_hat_t) - mean cos(y_t, y0): > 0 when the prediction beats assuming
  invariance (the invariant baseline, y_hat_t := y0, has eq_gain 0 by definition);
- retrieval_top1: how often y_hat_t is closer (cosine) to its own y_t than to every other y_t of
  its batch, against retrieval_top1_invariant, the same with y0 in place of y_hat_t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from equimod_zoo.equimod.loss import equivariance_gain
from equimod_zoo.equimod.module import EquiMod
from equimod_zoo.errors import UserError


@torch.inference_mode()
def equivariance_metrics(heads: EquiMod, original: torch.Tensor, view: torch.Tensor, params: torch.Tensor,
                         image: torch.Tensor, *, batch_size: int = 256) -> dict[str, float | int]:
    """eq-gain and batch retrieval of the predicted embeddings, with the invariant baseline beside them.

    Args:
        original: [N, D] backbone features of the x0 images; view: [M, D] of the augmented views;
        params: [M, P] their raw parameters (the heads' `param_names`); image: [M] which x0 each view comes from.
        batch_size: the retrieval gallery: each y_hat_t is matched among the y_t of its batch.
    """
    if batch_size < 2:
        raise UserError(f"batch_size must be at least 2 for retrieval, got {batch_size}")
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
        "eq_gain": equivariance_gain(y0, y_t, y_hat).item(),  # the training log's eq_gain, on these views
        "cos_predicted": cos_predicted.mean().item(),
        "cos_invariant": cos_invariant.mean().item(),
        "retrieval_top1": hits_predicted / counted,
        "retrieval_top1_invariant": hits_invariant / counted,
        "retrieval_batch_size": batch_size,
        "num_samples": len(y_t),
    }
