"""Training recipes: the shipped YAML files hold the paper's values, and loading checks its input."""
from __future__ import annotations

import pytest
import yaml

from equimod_zoo.equimod.augment import PARAM_NAMES
from equimod_zoo.registry import catalogue
from equimod_zoo.training.recipe import Recipe, list_recipes, load_recipe, recipe_from_dict

PAPER = ("simclr_r18_cifar10", "simclr_equimod_r18_cifar10", "byol_r18_cifar10", "byol_equimod_r18_cifar10",
         "simclr_r50_in1k", "simclr_equimod_r50_in1k", "byol_r50_in1k", "byol_equimod_r50_in1k")


def test_every_zoo_entry_has_its_recipe():
    names = set(list_recipes())
    assert set(PAPER) <= names
    for entry in catalogue().entries:
        assert entry.recipe in names, entry.name
        recipe = load_recipe(entry.recipe)
        assert (recipe.name, recipe.arch, recipe.method.name) == (entry.recipe, entry.arch, entry.method.name)
        if entry.status == "recipe-only":  # a trained entry records the epochs it got, the plan is the recipe's
            assert recipe.epochs == entry.epochs, entry.name


def test_cifar10_recipes_hold_the_paper_values():
    simclr = load_recipe("simclr_r18_cifar10")
    assert simclr.arch == "resnet18_cifar"
    assert (simclr.epochs, simclr.batch_size, simclr.optim.warmup_epochs) == (800, 512, 10)
    assert (simclr.optim.optimizer, simclr.optim.lr, simclr.optim.reference_batch_size) == ("lars", 4.0, 512)
    assert (simclr.optim.weight_decay, simclr.optim.eta, simclr.optim.momentum) == (1e-6, 1e-3, 0.9)
    assert simclr.method.temperature == 0.5 and simclr.method.eq_temperature == 0.2
    assert simclr.augment.size == simclr.data_size == 32 and simclr.augment.crop_scale == (0.2, 1.0)
    # the official SimCLR pipeline: both views alike, jitter 0.4/0.4/0.4/0.1, no blur, no solarize: 15 parameters
    assert [(v.blur_p, v.solarize_p) for v in simclr.augment.views] == [(0.0, 0.0), (0.0, 0.0)]
    augment = simclr.augment
    assert (augment.brightness, augment.contrast, augment.saturation, augment.hue) == (0.4, 0.4, 0.4, 0.1)
    assert (augment.jitter_p, augment.grayscale_p, augment.flip_p, augment.x0_resize) == (0.8, 0.2, 0.5, None)
    assert augment.params == PARAM_NAMES[:15] and simclr.method.param_dim == 15
    byol = load_recipe("byol_r18_cifar10")
    assert (byol.method.name, byol.optim.lr, byol.method.momentum_base) == ("byol", 2.0, 0.996)
    # BYOL's asymmetric pair keeps all 18
    assert [(v.blur_p, v.solarize_p) for v in byol.augment.views] == [(1.0, 0.0), (0.1, 0.2)]
    assert (byol.augment.brightness, byol.augment.contrast, byol.augment.saturation, byol.augment.hue) == (
        0.4, 0.4, 0.2, 0.1)
    assert byol.augment.params == PARAM_NAMES and byol.method.param_dim == 18
    assert load_recipe("byol_equimod_r50_cifar10").arch == "resnet50_cifar"


def test_imagenet_recipes_hold_the_paper_values():
    recipe = load_recipe("simclr_r50_in1k")
    assert (recipe.arch, recipe.epochs, recipe.batch_size, recipe.optim.lr) == ("resnet50", 800, 4096, 2.4)
    assert recipe.augment.size == recipe.eval_size == 224 and recipe.augment.crop_scale == (0.08, 1.0)
    assert recipe.method.temperature == 0.2 and recipe.augment.kernel_size == 23
    assert recipe.data_size == 256 and recipe.eval_crop_pct == 0.875
    augment = recipe.augment  # SimCLR's ImageNet pipeline: strong jitter, blur p 0.5 on both views, 17 parameters
    assert (augment.brightness, augment.contrast, augment.saturation, augment.hue) == (0.8, 0.8, 0.8, 0.2)
    assert [(v.blur_p, v.solarize_p) for v in augment.views] == [(0.5, 0.0), (0.5, 0.0)]
    assert augment.params == PARAM_NAMES[:17] and recipe.method.param_dim == 17
    assert augment.x0_resize == 256  # x0 = Resize(256) + CenterCrop(224)
    byol = load_recipe("byol_r50_in1k")  # the official BYOL branch's values
    assert (byol.optim.lr, byol.optim.weight_decay, byol.batch_size) == (4.8, 1.5e-6, 4096)
    assert [(v.blur_p, v.solarize_p) for v in byol.augment.views] == [(1.0, 0.0), (0.1, 0.2)]
    assert byol.augment.params == PARAM_NAMES and byol.augment.kernel_size == 23 and byol.augment.x0_resize == 256


def test_the_parameter_list_is_recipe_data_checked_against_the_pipeline(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: simclr_r18_cifar10\naugment: {params: [crop_top, crop_left]}\n")
    with pytest.raises(ValueError, match="params must name this pipeline's 15 entries"):
        load_recipe(path)
    path.write_text("base: simclr_r18_cifar10\nmethod: {param_dim: 18}\n")
    with pytest.raises(ValueError, match="param_dim 18 differs from the 15 entries"):
        load_recipe(path)
    # an override of the pipeline re-derives the list and g_t's input size (unless they are given too)
    blurred = load_recipe("simclr_equimod_r18_cifar10", overrides={"augment.views": [{"blur_p": 0.5, "solarize_p": 0}]})
    assert blurred.augment.params == PARAM_NAMES[:17] and blurred.method.param_dim == 17
    with pytest.raises(ValueError, match="params must name"):
        load_recipe("byol_r18_cifar10", overrides={"augment.views": [{"blur_p": 0.0, "solarize_p": 0.0}],
                                                   "augment.params": list(PARAM_NAMES)})


@pytest.mark.parametrize("name", ["simclr_r18_cifar10", "byol_r18_cifar10", "simclr_r50_in1k", "byol_r50_in1k"])
def test_equimod_variant_differs_only_in_the_method_name(name):
    plain = load_recipe(name).to_dict()
    equimod = load_recipe(name.replace("_r", "_equimod_r", 1)).to_dict()
    assert equimod["method"]["name"] == plain["method"]["name"] + "_equimod"
    for key in ("name", "description", "method"):
        plain.pop(key), equimod.pop(key)
    assert equimod == plain


@pytest.mark.parametrize("name", ["simclr_r18_cifar10", "simclr_equimod_r18_cifar10", "byol_r18_cifar10",
                                  "byol_equimod_r18_cifar10"])
def test_cpu_variant_keeps_method_heads_and_augmentations(name):
    full, cpu = load_recipe(name), load_recipe(f"{name}_cpu")
    assert cpu.method == full.method and cpu.augment == full.augment and cpu.arch == full.arch
    assert cpu.optim.lr == full.optim.lr and cpu.optim.reference_batch_size == full.optim.reference_batch_size
    assert cpu.epochs < full.epochs and cpu.batch_size < full.batch_size and cpu.precision == "bf16"


def test_overrides_take_dotted_keys_and_revalidate():
    recipe = load_recipe("simclr_r18_cifar10", overrides={"epochs": 3, "optim.lr": 1.0, "method.temperature": 0.2})
    assert (recipe.epochs, recipe.optim.lr, recipe.method.temperature) == (3, 1.0, 0.2)
    with pytest.raises(KeyError, match="optim.nope"):
        recipe.override({"optim.nope": 1})
    with pytest.raises(ValueError, match="epochs must be an integer"):
        recipe.override({"epochs": "many"})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        recipe.override({"batch_size": 0})
    with pytest.raises(ValueError, match="unknown method"):
        recipe.override({"method.name": "moco"})


def test_unknown_recipe_lists_the_names():
    with pytest.raises(KeyError, match="unknown recipe 'simclr_r18'.*simclr_r18_cifar10"):
        load_recipe("simclr_r18")
    with pytest.raises(KeyError, match="unknown recipe"):
        load_recipe("_cifar10")  # a base, not a recipe


def test_user_yaml_starts_from_a_shipped_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: simclr_equimod_r18_cifar10\nepochs: 5\noptim: {lr: 0.5}\n")
    recipe = load_recipe(path)
    assert (recipe.name, recipe.epochs, recipe.optim.lr) == ("mine", 5, 0.5)
    assert recipe.optim.weight_decay == 1e-6 and recipe.method.name == "simclr_equimod"


def test_bad_yaml_files_name_the_file_and_key(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("base: simclr_r18_cifar10\naugment: {colour: 1}\n")
    with pytest.raises(ValueError, match=r"unknown.yaml: unknown key augment.colour"):
        load_recipe(unknown)
    cycle = tmp_path / "a.yaml"
    cycle.write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ValueError, match="cycle"):
        load_recipe(cycle)
    missing_base = tmp_path / "c.yaml"
    missing_base.write_text("base: nowhere\n")
    with pytest.raises(FileNotFoundError, match="base recipe 'nowhere'"):
        load_recipe(missing_base)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "absent.yaml")


def test_resolved_recipe_round_trips_through_yaml():
    recipe = load_recipe("byol_equimod_r50_in1k")
    again = recipe_from_dict(yaml.safe_load(recipe.to_yaml()))
    assert isinstance(again, Recipe) and again == recipe


def test_vicreg_and_barlow_twins_recipes_hold_their_cited_values():
    vicreg = load_recipe("vicreg_equimod_r18_cifar10")
    m = vicreg.method
    assert (m.name, m.vicreg_sim_weight, m.vicreg_var_weight, m.vicreg_cov_weight) == ("vicreg_equimod", 25, 25, 1)
    assert (m.vicreg_proj_hidden, m.vicreg_proj_out, m.eq_weight, m.eq_temperature) == (2048, 2048, 1.0, 0.2)
    barlow = load_recipe("barlow_twins_r18_cifar10")
    m = barlow.method
    assert (m.name, m.barlow_lambda, m.barlow_scale, m.barlow_proj_hidden, m.barlow_proj_out) == (
        "barlow_twins", 0.0051, 0.1, 2048, 2048)
    for recipe in (vicreg, barlow):  # solo-learn's CIFAR-10 optimiser, on the zoo's 800-epoch budget
        optim = recipe.optim
        assert (optim.optimizer, optim.lr, optim.reference_batch_size, optim.weight_decay) == ("lars", 0.3, 256, 1e-4)
        assert (optim.eta, optim.trust_clip, optim.warmup_epochs, recipe.epochs) == (0.02, True, 10, 800)
        assert recipe.augment.params == PARAM_NAMES[:15] + ("solarize",) and recipe.method.param_dim == 16
    assert [(v.blur_p, v.solarize_p) for v in vicreg.augment.views] == [(0.0, 0.1), (0.0, 0.1)]
    assert vicreg.augment.crop_scale == (0.2, 1.0)
    assert [(v.blur_p, v.solarize_p) for v in barlow.augment.views] == [(0.0, 0.0), (0.0, 0.2)]
    assert barlow.augment.crop_scale == (0.08, 1.0)


def test_recipes_name_any_timm_backbone_with_its_own_arguments(tmp_path):
    vit = load_recipe("simclr_equimod_vit_tiny_cifar10")
    assert (vit.arch, vit.model_args, vit.eval_size) == ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, 32)
    convnext = load_recipe("simclr_convnext_atto_cifar10")
    assert (convnext.arch, convnext.model_args, convnext.method.name) == ("convnext_atto", {"patch_size": 2}, "simclr")
    # a family's arguments only, each within its bound; never one that reaches files or the network
    path = tmp_path / "mine.yaml"
    path.write_text("base: simclr_vit_tiny_cifar10\nmodel_args: {img_size: 32, patch_size: 4, channels: [8, 8, 8, 8]}\n")
    with pytest.raises(ValueError, match="'channels' is not a constructor argument equimod-zoo accepts for vit_tiny"):
        load_recipe(path)
    path.write_text("base: simclr_vit_tiny_cifar10\nmodel_args: {img_size: 100000}\n")
    with pytest.raises(ValueError, match="img_size = 100000 is not a positive integer \\(at most 4096\\)"):
        load_recipe(path)
    path.write_text("base: simclr_convnext_atto_cifar10\nmodel_args: {checkpoint_path: /etc/passwd}\n")
    with pytest.raises(ValueError, match="'checkpoint_path' is not a constructor argument"):
        load_recipe(path)
    path.write_text("base: simclr_r18_cifar10\narch: efficientnet_b0\nmodel_args: {in_chans: 3}\n")
    assert load_recipe(path).arch == "efficientnet_b0"  # another family: the arguments every timm model takes
    path.write_text("base: simclr_r18_cifar10\narch: efficientnet_b0\nmodel_args: {drop_rate: 0.1}\n")
    with pytest.raises(ValueError, match="'drop_rate' is not a constructor argument equimod-zoo accepts for "
                                         "efficientnet_b0 \\(num_classes, in_chans\\)"):
        load_recipe(path)


def test_mocov3_recipes_hold_their_cited_values():
    recipe = load_recipe("mocov3_equimod_r18_cifar10")
    m = recipe.method
    assert (m.name, m.mocov3_proj_hidden, m.mocov3_proj_out, m.mocov3_proj_layers, m.mocov3_pred_hidden) == (
        "mocov3_equimod", 4096, 256, 2, 4096)
    assert (m.mocov3_temperature, m.momentum_base, m.momentum_target) == (0.2, 0.99, True)
    optim = recipe.optim
    assert (optim.lr, optim.reference_batch_size, optim.weight_decay, optim.eta, optim.trust_clip) == (
        0.3, 256, 1e-6, 0.02, True)
    assert [(v.blur_p, v.solarize_p) for v in recipe.augment.views] == [(0.0, 0.0), (0.0, 0.2)]
    vit = load_recipe("mocov3_vit_tiny_cifar10")
    assert (vit.arch, vit.model_args, vit.method.mocov3_proj_layers) == (
        "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, 3)  # the reference's ViT projector
