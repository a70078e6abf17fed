"""EquiMod's building blocks, for any method and any backbone, and the contract shared by training,
export, loading and the probes.

The public API, each a small module with one idea:

- `augment`: `BatchedAugment` samples and applies augmentations to a batch on its device and
  returns each view's parameter vector (`AugmentConfig` is the pipeline, `PARAM_NAMES` the
  entries, `parameter_statistics` their mean and std for the standardisation);
- `heads`: the augmentation-parameter encoder g_t (`AugmentationEmbedding`), the equivariant
  predictor u (`EquivariantPredictor`), g_eq (`EquiModProjectionHead`) and the base methods'
  projection heads;
- `loss`: the equivariance loss (`EquiModLoss`), the NT-Xent it is made of (`NTXentLoss`) and the
  eq-gain diagnostic (`equivariance_gain`);
- `module`: `EquiMod`, all of them wired together: `EquiMod(...)(h0, [h1, h2], [p1, p2]).loss` is
  added to any invariance loss (README: "EquiMod in your own training loop").

`heads_file` reads and writes equimod_heads.safetensors and its schema (config.json's
`equimod.heads`). The trainer (`equimod_zoo.training`) and the publishing tools
(`equimod_zoo.hub`) import this package; it imports neither.
"""
from equimod_zoo.equimod.augment import PARAM_NAMES, AugmentConfig, BatchedAugment, ViewConfig, parameter_statistics
from equimod_zoo.equimod.heads import (
    AugmentationEmbedding,
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    EquiModProjectionHead,
    EquivariantPredictor,
    MoCoV3PredictionHead,
    MoCoV3ProjectionHead,
    ProjectionHead,
    SimCLRProjectionHead,
    VICRegProjectionHead,
)
from equimod_zoo.equimod.heads_file import HeadsSchema, load_equimod_heads
from equimod_zoo.equimod.loss import EquiModLoss, NTXentLoss, equivariance_gain
from equimod_zoo.equimod.module import EquiMod, EquiModOutput

__all__ = [
    "PARAM_NAMES", "AugmentConfig", "BatchedAugment", "ViewConfig", "parameter_statistics",
    "AugmentationEmbedding", "BarlowTwinsProjectionHead", "BYOLPredictionHead", "BYOLProjectionHead",
    "EquiModProjectionHead", "EquivariantPredictor", "MoCoV3PredictionHead", "MoCoV3ProjectionHead",
    "ProjectionHead", "SimCLRProjectionHead", "VICRegProjectionHead",
    "EquiModLoss", "NTXentLoss", "equivariance_gain",
    "EquiMod", "EquiModOutput", "HeadsSchema", "load_equimod_heads",
]
