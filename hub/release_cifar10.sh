#!/usr/bin/env bash
# Turn a CIFAR-10 training run into a bundled zoo model, every number measured by our own commands.
#
#   bash hub/release_cifar10.sh RUN NAME [WORK]
#
# 1. export RUN as an fp16 model folder (the weights the zoo will ship, so every metric below is
#    measured on exactly those weights and recorded with their sha256);
# 2. CIFAR-10 linear probe and kNN on frozen features of the train and test splits;
# 3. Flowers-102 linear transfer at 64 px (a CIFAR-stem backbone wants small inputs);
# 4. augmentation-sensitivity probes, embedded in the card;
# 5. publish (dry run: no upload) with the card, and bundle into the zoo as NAME.
# Data comes from $EQUIMOD_DATA (default ../shared/data beside the repository).
# HEADS=--no-heads bundles without equimod_heads.safetensors; BUNDLE=0 writes the card but bundles nothing.
set -euo pipefail
run=$1
name=$2
work=${3:-$run/release}
data=${EQUIMOD_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
folder=$work/$name
heads=--with-heads
case $name in *equimod*) ;; *) heads=--no-heads ;; esac  # only EquiMod heads serve a user (eq-gain)
heads=${HEADS:-$heads}  # HEADS=--no-heads: leave the heads out of the bundle (the 120 MB weight budget)

[ -f "$folder/model.safetensors" ] || \
  equimod-zoo publish "$run" --repo-id "equimod-zoo/$name" --out "$folder" --dry-run --dtype fp16 $heads
equimod-zoo extract --dataset "$data/cifar10-jpeg" --split train --model "$folder" --out "$work/cifar10-train"
equimod-zoo extract --dataset "$data/cifar10-jpeg" --split test --model "$folder" --out "$work/cifar10-test"
equimod-zoo linear --train "$work/cifar10-train" --test "$work/cifar10-test" --record "$folder" \
  --dataset-name cifar10 --json "$work/cifar10-linear.json"
equimod-zoo transfer --dataset flowers102 --data-dir "$data/flowers102" --model "$folder" --resolution 64 \
  --record --json "$work/flowers102-linear.json"
equimod-zoo probe-augs --model "$folder" --dataset cifar10 --data-dir "$data/cifar10-jpeg" \
  --json "$folder/probe_augs.json" --plot "$work/probe_augs.png"
# BUNDLE=0: measure and write the card, but leave the repository's zoo as it is
[ "${BUNDLE:-1}" = 0 ] && bundle=() || bundle=(--zoo-entry "$name")
equimod-zoo publish "$folder" --repo-id "equimod-zoo/$name" --out "$work/hf-$name" --dry-run --overwrite \
  "${bundle[@]}" $heads
