"""Every limit on a size or count that comes from outside: a file, a command-line option, a config.

A value over its limit is refused with one line naming the value and the limit (`check_limit`),
before anything is allocated or looped over: a few bytes of input must not ask for gigabytes of
memory or hours of CPU. README's "Bad input and limits" lists these limits; change them here only.
"""
from __future__ import annotations

from equimod_zoo.errors import LimitExceededError

# --- models -----------------------------------------------------------------------------------------
# Parameters of a model built from a config.json or a checkpoint's shapes, counted on the meta device
# before any weight is allocated: a ResNet-152 has 60 M, so a billion (4 GB in fp32) is far beyond any
# backbone of the zoo and keeps a hostile config from asking for 155 GB.
MAX_MODEL_PARAMETERS = 1_000_000_000
# Blocks per ResNet stage (ResNet-152 has 36): each is a Python object built before any count is known.
MAX_BLOCKS_PER_STAGE = 128
# The side of a model's input, in pixels: config.json's input_size, --resolution, a resize before the
# crop. timm's ResNets are evaluated at 224-448; 1024 leaves room for high-resolution transfer.
MAX_RESOLUTION = 1024
# Bytes a checkpoint's tensors may claim once inflated: a ResNet-50 with its momentum encoder and
# optimiser state is about 1 GB. Counted from the tensors' shapes, never from their storage, so a
# stride-0 view of four bytes claiming [65536, 65536, 3, 3] is refused too.
MAX_CHECKPOINT_BYTES = 8 << 30

# --- data -------------------------------------------------------------------------------------------
# Class indices: a probe allocates a row of weights per class (ImageNet-21k has 21841 classes).
MAX_CLASSES = 100_000
# Tar shards a brace pattern may expand to, and shards an extraction may record (LAION-5B has 231k).
MAX_SHARDS = 1_000_000
# A tar member larger than this is not read into memory (no image file is this large).
MAX_TAR_MEMBER_BYTES = 1 << 30

# --- runs -------------------------------------------------------------------------------------------
# Epochs of a training or fine-tuning run (the paper trains 800 on CIFAR-10).
MAX_EPOCHS = 10_000
# Images in one batch (the paper's largest global batch is 4096).
MAX_BATCH_SIZE = 65_536
# Augmented views per image in the augmentation probes: each is one more forward of every image.
MAX_AUGMENTATIONS_PER_IMAGE = 64
# Bootstrap resamples for the probes' 95 % intervals.
MAX_BOOTSTRAP = 100_000

# --- text files -------------------------------------------------------------------------------------
# A YAML file (recipe, campaign queue) or --set value; a recipe is about 2 KB.
MAX_YAML_BYTES = 1 << 20
# Nesting depth of a YAML document (a recipe nests 3 deep); the parser recurses once a level.
MAX_YAML_DEPTH = 32


def check_limit(what: str, value: int | float, limit: int | float, *, unit: str = "") -> None:
    """Refuse `value` over `limit` with one line naming both (`what`: the option, key or file)."""
    if value > limit:
        suffix = f" {unit}" if unit else ""
        raise LimitExceededError(f"{what}: {value:,}{suffix} is over the limit of {limit:,}{suffix} "
                                 f"(equimod_zoo.limits)")
