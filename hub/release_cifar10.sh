#!/usr/bin/env bash
# Turn a CIFAR-10 training run into a bundled zoo model, every number measured by our own commands.
#
#   bash hub/release_cifar10.sh RUN NAME [WORK]        (from the repository root)
#
# 1. export RUN as an fp16 model folder WORK/NAME: the weights the zoo will ship, so every number below
#    is measured on exactly those weights (its sha256 keys the records);
# 2. CIFAR-10 linear probe and kNN on frozen features of the train and test splits  -> WORK/records;
# 3. Flowers-102 linear transfer at 64 px on fp32 features (transfer's defaults, spelled out) -> WORK/records;
# 4. augmentation-sensitivity probes -> WORK/probe_augs.json;
# 5. bundle the folder into the zoo as NAME with its records and probe report (`zoo-add`), then
#    regenerate the cards, MODEL_CARDS.md and the README's results table (`model-cards`);
# 6. UPLOAD=1: publish the bundled model to the Hub, once, and record its repository in the zoo.
# Nothing writes into the weights folder after step 1. WORK defaults to release/NAME, so the recorded
# commands name repository-relative paths; data comes from $EQUIMOD_DATA (default ../shared/data beside
# the repository), which the commands name as $EQUIMOD_DATA.
# HEADS=--no-heads bundles without equimod_heads.safetensors; BUNDLE=0 measures but leaves the zoo alone.
set -euo pipefail
run=$1
name=$2
work=${3:-release/$name}
export EQUIMOD_DATA=${EQUIMOD_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
data=$EQUIMOD_DATA
folder=$work/$name
records=$work/records
heads=--with-heads
case $name in *equimod*) ;; *) heads=--no-heads ;; esac  # only EquiMod heads serve a user (eq-gain)
heads=${HEADS:-$heads}  # HEADS=--no-heads: leave the heads out of the bundle (the 120 MB weight budget)

[ -f "$folder/model.safetensors" ] || \
  equimod-zoo publish "$run" --repo-id "equimod-zoo/$name" --out "$folder" --dry-run --dtype fp16 $heads
equimod-zoo extract --dataset "$data/cifar10-jpeg" --split train --model "$folder" --precision fp32 --out "$work/cifar10-train"
equimod-zoo extract --dataset "$data/cifar10-jpeg" --split test --model "$folder" --precision fp32 --out "$work/cifar10-test"
equimod-zoo linear --train "$work/cifar10-train" --test "$work/cifar10-test" --record "$records" \
  --dataset-name cifar10 --json "$work/cifar10-linear.json"
equimod-zoo transfer --dataset flowers102 --data-dir "$data/flowers102" --model "$folder" --resolution 64 --precision fp32 \
  --record "$records" --json "$work/flowers102-linear.json"
equimod-zoo probe-augs --model "$folder" --dataset cifar10 --data-dir "$data/cifar10-jpeg" \
  --json "$work/probe_augs.json" --plot "$work/probe_augs.png"
[ "${BUNDLE:-1}" = 0 ] && exit 0
equimod-zoo zoo-add "$folder" --name "$name" --records "$records" --probe-report "$work/probe_augs.json"
equimod-zoo model-cards
if [ "${UPLOAD:-0}" = 1 ]; then
  equimod-zoo publish "$name" --repo-id "equimod-zoo/$name" --out "$work/hf-$name" --overwrite
  equimod-zoo zoo-add "$work/hf-$name" --name "$name"  # the upload's folder records its repository
  equimod-zoo model-cards
fi
