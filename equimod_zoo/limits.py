"""Every limit on a size or count that comes from outside: a file, a command-line option, a config.

A value over its limit is refused with one line naming the value and the limit (`check_limit`),
before anything is allocated or looped over: a few bytes of input must not ask for gigabytes of
memory or hours of CPU. README's "Bad input and limits" lists these limits; change them here only.
"""
from __future__ import annotations

import math

from equimod_zoo.errors import LimitExceededError

# --- models -----------------------------------------------------------------------------------------
# Parameters of a model built from a config.json or a checkpoint's shapes, counted on the meta device
# before any weight is allocated: a ResNet-152 has 60 M, so a billion (4 GB in fp32) is far beyond any
# backbone of the zoo and keeps a hostile config from asking for 155 GB.
MAX_MODEL_PARAMETERS = 1_000_000_000
# Blocks per ResNet stage (ResNet-152 has 36): each is a Python object, built even to count parameters.
MAX_BLOCKS_PER_STAGE = 64
# Width of a training head's layer (BYOL's projector is 4096 wide): a head holds width x width weights.
MAX_HEAD_WIDTH = 16_384
# The side of a model's input in pixels, and of the resize before its centre crop: config.json's
# input_size and crop_pct, --resolution, a recipe's sizes. timm's ResNets are evaluated at 224 to
# 448 px; 2048 leaves room for high-resolution transfer.
MAX_RESOLUTION = 2048
# Channels of a model's input (RGB; RGBA at most): every batch allocates channels x side x side.
MAX_INPUT_CHANNELS = 4
# The smallest per-channel std of a model's data config: pixels in [0, 1] are divided by it, and a
# std near zero (1e-30) turns every feature into inf. One grey level (1/255) over 1e-3 is 3.9.
MIN_NORMALIZE_STD = 1e-3
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
# Bytes of float32 pixels in one batch of inputs (batch x 3 x side x side x 4): a batch of 256 at
# 224 px is 154 MB, a batch of 64 at 1024 px 805 MB.
MAX_BATCH_BYTES = 16 << 30
# Bytes of uint8 images held decoded in memory at once (the augmentation probes' images).
MAX_DECODED_BYTES = 16 << 30
# Processes decoding images (DataLoader workers): each is a fork of the whole program.
MAX_WORKERS = 256
# A training seed: numpy's and torch's seeds both take it, and epochs are added to it.
MAX_SEED = 2**32 - 1
# Augmentation draws for the parameter standardisation statistics (18 floats each; recipes use 100k).
MAX_PARAM_SAMPLES = 10_000_000
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


def check_resolution(what: str, size: int, *, crop_pct: float | None = None) -> None:
    """A model input's side, and the side it is resized to before a `crop_pct` centre crop, within MAX_RESOLUTION."""
    check_limit(what, size, MAX_RESOLUTION, unit="px")
    if crop_pct is not None and crop_pct > 0:
        check_limit(f"{what} resized for a {crop_pct:g} centre crop", math.floor(size / crop_pct), MAX_RESOLUTION,
                    unit="px")


def check_batch(what: str, batch_size: int, size: int) -> None:
    """A batch of `batch_size` RGB inputs of `size` x `size` px within MAX_BATCH_SIZE and MAX_BATCH_BYTES."""
    check_limit(what, batch_size, MAX_BATCH_SIZE, unit="images")
    check_limit(f"{what} of {size} px inputs", batch_size * 3 * size * size * 4, MAX_BATCH_BYTES, unit="bytes")
