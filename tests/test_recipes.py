"""Every published recipe in configs/ builds, validates, keeps its paper settings, and runs its
`smoke` variant for a few steps (pretraining, then linear evaluation on top)."""

import importlib
import math

import jax
import numpy as np
import pytest

from jax_supcon import optim, parallel
from jax_supcon.config import validate_config
from jax_supcon.jobs import finetune, linear_eval, pretrain, supervised

PRETRAIN = [
    ("cifar_supcon", "cifar10"),
    ("cifar_supcon", "cifar100,simclr"),
    ("solo_cifar_resnet18", "supcon"),
    ("solo_cifar_resnet18", "simclr"),
    ("imagenet_supcon", "supcon"),
    ("imagenet_supcon", "simclr"),
    ("imagenet_supcon", "moco_v2"),
    ("imagenet_supcon", "supcon_queue"),
    ("metric_learning", "cub"),
    ("metric_learning", "sop"),
    ("imagenet_vit", "vit_small"),
    ("imagenet_vit", "vit_base,supcon"),
    ("cifar_vit", "cifar10"),
    ("cifar_vit", "cifar100,simclr"),
]


def recipe(name, arg):
    module = importlib.import_module(f"configs.{name}")
    return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize(
    "name, arg",
    PRETRAIN
    + [
        ("cifar_linear", "cifar100"),
        ("imagenet_linear", None),
        ("cifar_ce", "cifar100"),
        ("metric_learning", "cars"),
        ("digits_openset", "ce"),
        ("mnist5k_openset", "multi_similarity"),
        ("mnist5k_supcon", "triplet"),
        ("mnist5k_supcon", "ce"),
        ("mnist5k_linear", None),
    ],
)
def test_full_recipe_validates(name, arg):
    config = recipe(name, arg)
    if config.job == "linear_eval":
        config.pretrained_workdir = "/somewhere"
    validate_config(config)


def test_recipes_keep_the_papers_settings():
    supcon = recipe("cifar_supcon", "cifar10")
    assert (supcon.model.name, supcon.batch_size, supcon.loss.temperature, supcon.total_epochs) == (
        "resnet50",
        1024,
        0.1,
        1000.0,
    )
    assert recipe("cifar_supcon", "cifar100,simclr").loss.temperature == 0.5
    imagenet_simclr = recipe("imagenet_supcon", "simclr")
    assert imagenet_simclr.batch_size == 4096 and imagenet_simclr.optimizer.name == "lars"
    assert math.isclose(optim.peak_learning_rate(imagenet_simclr.optimizer, 4096), 4.8)  # 0.075 x sqrt(4096)
    imagenet_supcon = recipe("imagenet_supcon", "supcon")
    assert imagenet_supcon.batch_size == 6144 and imagenet_supcon.augment.recipe == "randaugment"
    assert math.isclose(optim.peak_learning_rate(imagenet_supcon.optimizer, 6144), 7.2)  # 0.3 x 6144 / 256
    imagenet_supcon.optimizer.lr_scaling = "cubic"
    with pytest.raises(ValueError, match=r"optimizer.lr_scaling='cubic'; allowed: \('none', 'linear', 'sqrt'\)"):
        validate_config(imagenet_supcon)
    moco = recipe("imagenet_supcon", "moco_v2")
    assert (moco.batch_size, moco.loss.name, moco.loss.temperature, moco.loss.queue_size, moco.model.momentum) == (
        256,
        "simclr",
        0.2,
        65536,
        0.999,
    )
    assert (moco.optimizer.name, moco.optimizer.learning_rate, moco.optimizer.weight_decay) == ("sgd", 0.03, 1e-4)
    assert recipe("imagenet_supcon", "supcon_queue").loss.name == "supcon"
    assert recipe("imagenet_supcon", "moco_v2,smoke").loss.queue_size == 32  # 2 steps of 16 first-view keys
    solo = recipe("solo_cifar_resnet18", "simclr")
    assert (solo.optimizer.lars_trust_coefficient, solo.model.hidden_dim, solo.loss.temperature) == (0.02, 2048, 0.2)
    with pytest.raises(ValueError, match="config argument 'cifar11'"):
        recipe("cifar_linear", "cifar11")
    vit_s = recipe("imagenet_vit", "vit_small")  # MoCo v3's ViT settings, its SimCLR baseline
    assert (vit_s.model.name, vit_s.model.patch_size, vit_s.batch_size, vit_s.total_epochs) == (
        "vit_small",
        16,
        4096,
        300.0,
    )
    assert (vit_s.loss.name, vit_s.loss.temperature, vit_s.optimizer.name, vit_s.optimizer.weight_decay) == (
        "simclr",
        0.2,
        "adamw",
        0.1,
    )
    assert math.isclose(optim.peak_learning_rate(vit_s.optimizer, 4096), 2.4e-3)  # 1.5e-4 x 4096 / 256
    assert recipe("imagenet_vit", "vit_base,supcon").loss.name == "supcon"
    cifar_vit = recipe("cifar_vit", "cifar100")
    assert (cifar_vit.model.name, cifar_vit.model.patch_size, cifar_vit.data.image_size) == ("vit_small", 4, 32)
    assert recipe("cifar_vit", "cifar10,smoke").model.name == "vit_micro"
    with pytest.raises(ValueError, match="config argument 'vit_huge'"):
        recipe("imagenet_vit", "vit_huge")


@pytest.mark.parametrize("name, arg", PRETRAIN, ids=[f"{n}:{a}" for n, a in PRETRAIN])
def test_smoke_variant_trains(name, arg, tmp_path):
    config = recipe(name, f"{arg},smoke")
    summary = pretrain.train_and_evaluate(config, str(tmp_path), mesh=parallel.create_mesh(jax.devices()[:2]))
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    if config.data.train_classes:  # open-set recipes validate on their held-out classes
        assert 0 <= summary["val/encoder/mean_average_precision_at_r"] <= 1 and "val/encoder/knn_top1" not in summary


def test_metric_learning_recipes_follow_the_standard_class_splits():
    cub, cars, sop = (recipe("metric_learning", name) for name in ("cub", "cars", "sop"))
    assert (cub.data.name, cub.data.train_split, cub.data.eval_split, cub.data.train_classes) == (
        "caltech_birds2011",
        "train+test",
        "train+test",
        "first_half",
    )
    assert cars.data.name == "cars196" and cars.data.train_classes == "first_half"
    assert sop.data.train_classes == "0-11317" and sop.eval.recall_at == (1, 10, 100, 1000)
    assert (cub.model.name, cub.data.image_size, cub.model.proj_dim, cub.data.samples_per_class) == (
        "resnet50",
        224,
        512,
        4,
    )


@pytest.mark.parametrize("stage_one, stage_two", [(("cifar_supcon", "cifar10"), ("cifar_linear", "cifar10"))])
def test_smoke_linear_evaluation_on_a_smoke_pretraining(stage_one, stage_two, tmp_path):
    mesh = parallel.create_mesh(jax.devices()[:2])
    pretrain.train_and_evaluate(recipe(stage_one[0], f"{stage_one[1]},smoke"), str(tmp_path / "one"), mesh=mesh)
    config = recipe(stage_two[0], f"{stage_two[1]},smoke")
    config.pretrained_workdir = str(tmp_path / "one")
    summary = linear_eval.train_and_evaluate(config, str(tmp_path / "two"), mesh=mesh)
    assert summary["test_examples"] == 32 and 0 <= summary["test_top1"] <= 1


def test_smoke_semi_supervised_finetuning_on_a_smoke_pretraining(tmp_path):
    mesh = parallel.create_mesh(jax.devices()[:2])
    pretrain.train_and_evaluate(recipe("imagenet_supcon", "simclr,smoke"), str(tmp_path / "one"), mesh=mesh)
    config = recipe("imagenet_finetune", "10pct,smoke")
    assert config.job == "finetune"
    config.pretrained_workdir = str(tmp_path / "one")
    summary = finetune.train_and_evaluate(config, str(tmp_path / "two"), mesh=mesh)
    assert summary["steps"] == 2 and 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    full = recipe("imagenet_finetune", "1pct")
    assert (full.data.name, full.total_epochs, full.optimizer.name) == ("imagenet2012_subset/1pct", 60.0, "lars")
    assert math.isclose(optim.peak_learning_rate(full.optimizer, 4096), 0.8)  # 0.05 x 4096 / 256


def test_cross_entropy_recipe_smoke_reports_top1_and_top5(tmp_path):
    config = recipe("cifar_ce", "cifar10,smoke")
    assert config.job == "supervised"
    summary = supervised.train_and_evaluate(config, str(tmp_path), mesh=parallel.create_mesh(jax.devices()[:2]))
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
