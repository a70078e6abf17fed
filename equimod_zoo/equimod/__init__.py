"""The EquiMod contract, shared by training, export, loading and the probes.

- `augment`: the parameterised batched augmentations, each pipeline's parameter names and the
  parameter statistics that standardise them;
- `heads`: the projection heads of SimCLR and BYOL and EquiMod's g_eq, g_t and u;
- `heads_file`: equimod_heads.safetensors and its schema (layer sizes, parameter names),
  recorded in the model's config.json under `equimod.heads`.

The trainer (`equimod_zoo.training`) and the publishing tools (`equimod_zoo.hub`) import this
package; it imports neither.
"""
from equimod_zoo.equimod.augment import PARAM_NAMES, AugmentConfig, BatchedAugment, ViewConfig, parameter_statistics
from equimod_zoo.equimod.heads import EquiModHeads
from equimod_zoo.equimod.heads_file import HeadsSchema, load_equimod_heads

__all__ = ["PARAM_NAMES", "AugmentConfig", "ViewConfig", "BatchedAugment", "parameter_statistics", "EquiModHeads",
           "HeadsSchema", "load_equimod_heads"]
