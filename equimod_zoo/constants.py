"""Every name the project shares, defined once: file names, environment variables and defaults.

As in huggingface_hub's `constants.py`, this module imports nothing heavy, so the command line,
the hub tools and the tests can read it without loading torch.
"""
from __future__ import annotations

DISTRIBUTION = "equimod-zoo"  # the installed distribution (its metadata holds the version)
PAPER_ID = "arXiv:2211.01244"  # Devillers & Lefort, ICLR 2023

# A model folder: timm's Hugging Face layout (equimod_zoo/model_folder.py).
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEADS_FILE = "equimod_heads.safetensors"
CARD_FILE = "README.md"
PROBE_FILE = "probe_augs.json"  # probe-augs' summary, bundled beside a zoo model
METADATA_KEY = "equimod"  # config.json's block of our metadata (equimod_zoo/model_metadata.py)

# A training run folder (equimod_zoo/run_folder.py).
RUN_FILE = "run.json"  # marks the folder as a run of `equimod-zoo train`; holds a time-budgeted run's plan
RECIPE_FILE = "recipe.yaml"
LOG_FILE = "log.csv"
TENSORBOARD_DIR = "tb"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_DIR = "model"  # the exported model folder, replaced whole at every checkpoint

# Environment variables.
DATA_ENV = "EQUIMOD_DATA"  # the data folder named in recorded commands and used by examples
CACHE_ENV = "EQUIMOD_ZOO_CACHE"  # decoded datasets, features, transfer results
DEFAULT_CACHE_DIR = "~/.cache/equimod_zoo"

# CIFAR-stem ResNets (equimod_zoo/architectures.py) and the CIFAR-10 normalisation they are trained with.
CIFAR_ARCHITECTURES = ("resnet18_cifar", "resnet50_cifar")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# The embedded default model: extraction and transfer use it when no --model is given.
DEFAULT_MODEL = "simclr_equimod_r18_cifar10"
DEFAULT_SHARD_SIZE = 8192  # images per shard of a feature store: the unit of resumption
