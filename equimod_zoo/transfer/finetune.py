"""The fine-tuning protocol: the whole network trained on the target data with a short schedule.

A new linear classifier on the backbone; SGD with Nesterov momentum (or AdamW), cosine decay per
step, random resized crop + horizontal flip, no hyperparameter search (train and validation are
merged). Each epoch ends with a checkpoint, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import timm.data
import torch
import torch.nn.functional as F
from torchvision import transforms

from equimod_zoo.atomic import atomic_path
from equimod_zoo.data.images import load_rgb
from equimod_zoo.data.sources import ImageSource
from equimod_zoo.data.workers import UserErrorLoader
from equimod_zoo.devices import resolve_device
from equimod_zoo.errors import UserError
from equimod_zoo.limits import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_WORKERS, check_limit
from equimod_zoo.progress import progress_bar
from equimod_zoo.probes.metrics import ClassificationScores, classification_scores


@dataclass(frozen=True)
class FinetuneConfig:
    """The short fine-tuning schedule."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01  # at batch 256, scaled linearly with batch_size
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: Literal["sgd", "adamw"] = "sgd"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    seed: int = 0
    num_workers: int = 2

    def __post_init__(self) -> None:
        check_limit("--epochs", self.epochs, MAX_EPOCHS)
        check_limit("--batch-size", self.batch_size, MAX_BATCH_SIZE, unit="images")
        check_limit("--workers", self.num_workers, MAX_WORKERS)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["crop_scale"] = list(self.crop_scale)
        return data


def finetune(
    model: torch.nn.Module,
    train: list[ImageSource],
    test: ImageSource,
    *,
    resolution: int,
    config: FinetuneConfig = FinetuneConfig(),
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool | str = True,
) -> ClassificationScores:
    """Train `model` (a timm model with a fresh classifier) on the `train` sources, score it on `test`.

    `checkpoint`, if given, is written after every epoch and resumed from when it matches `config`.
    """
    if config.epochs < 1 or config.batch_size < 1:
        raise UserError(f"finetune: epochs and batch_size must be >= 1, got {config.epochs} and {config.batch_size}")
    if config.optimizer not in ("sgd", "adamw"):
        raise UserError(f"finetune: optimizer must be sgd or adamw, got {config.optimizer!r}")
    device = resolve_device(device, argument="device")
    data_config = timm.data.resolve_model_data_config(model)
    data_config["input_size"] = (3, resolution, resolution)
    train_transform = transforms.Compose([
        transforms.RandomResizedCrop(resolution, scale=config.crop_scale,
                                     interpolation=transforms.InterpolationMode(data_config["interpolation"])),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data_config["mean"], data_config["std"]),
    ])
    eval_transform = timm.data.create_transform(**data_config, is_training=False)
    generator = torch.Generator().manual_seed(config.seed)
    loader = UserErrorLoader(
        torch.utils.data.ConcatDataset([_LabelledImages(s, train_transform) for s in train]),
        batch_size=config.batch_size, shuffle=True, drop_last=False, generator=generator,
        num_workers=config.num_workers, persistent_workers=False)
    total_steps = config.epochs * len(loader)

    model = model.to(device)
    lr = config.lr * config.batch_size / 256
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = (torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True) if config.optimizer == "sgd"
                 else torch.optim.AdamW(groups, lr=lr))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    start_epoch = _resume(checkpoint, config, model, optimizer, schedule, generator)

    label = progress if isinstance(progress, str) else "fine-tune"
    with progress_bar(enabled=bool(progress), status=True) as bar:
        task = bar.add_task(label, total=total_steps, completed=start_epoch * len(loader), status="")
        for epoch in range(start_epoch, config.epochs):
            model.train()
            for images, labels in loader:
                loss = F.cross_entropy(model(images.to(device)), labels.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(task, advance=1, status=f"epoch {epoch + 1}/{config.epochs} loss {loss.item():.3f}")
            if checkpoint is not None:
                _save(checkpoint, config, epoch + 1, model, optimizer, schedule, generator)
    return evaluate(model, test, eval_transform, batch_size=config.batch_size, num_workers=config.num_workers,
                    device=device)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: ImageSource, transform: Any, *, batch_size: int, num_workers: int,
             device: torch.device) -> ClassificationScores:
    """Top-1, top-5 and mean per-class accuracy of a classifier on a labelled source."""
    model.eval()
    loader = UserErrorLoader(_LabelledImages(images, transform), batch_size=batch_size, num_workers=num_workers)
    logits, targets = [], []
    for batch, labels in loader:
        logits.append(model(batch.to(device)).float().cpu())
        targets.append(labels)
    return classification_scores(torch.cat(logits), torch.cat(targets))


class _LabelledImages(torch.utils.data.Dataset):
    def __init__(self, images: ImageSource, transform: Any) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            image = load_rgb(lambda: self.images.open(i)).image
        except Exception as error:
            raise UserError(f"{self.images.key(i)}: cannot be decoded ({type(error).__name__}: {error})") from None
        return self.transform(image), int(self.images.label(i))


def _save(path: str | Path, config: FinetuneConfig, epoch: int, model: torch.nn.Module,
          optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator) -> None:
    state = {"config": config.to_dict(), "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "generator": generator.get_state()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: str | Path | None, config: FinetuneConfig, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator) -> int:
    """The epoch to start from: that of a checkpoint with the same config, else 0."""
    if path is None or not Path(path).is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("config") != config.to_dict():
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    generator.set_state(state["generator"])
    return int(state["epoch"])
