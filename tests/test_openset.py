"""Held-out classes (`data.train_classes`) and open-set evaluation: class specs, sources cut to
some classes (in memory, loaded by index, folder, tfds), no held-out example in any training
batch, the query/gallery split, the retrieval picture, the jobs end to end, and bad input."""

import json
import os
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import tiny

from jax_supcon import parallel
from jax_supcon.config import base_config, validate_config
from jax_supcon.data import classes, pipeline, sources
from jax_supcon.evaluate import retrieval, validation
from jax_supcon.jobs import embed, linear_eval, pretrain, supervised
from jax_supcon.train import inputs


def data_config(**overrides):
    data = base_config().data
    data.update(overrides)
    return data


# ------------------------------------------------------------------------------- class specs


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0-4", (0, 1, 2, 3, 4)),
        ("0,2,4,6,8", (0, 2, 4, 6, 8)),
        (" 7, 0-2 ", (0, 1, 2, 7)),
        ("first_half", (0, 1, 2, 3, 4)),
        ("second_half", (5, 6, 7, 8, 9)),
        ("", None),
        ("0-9", None),  # every class: nothing held out
    ],
)
def test_class_specs_name_the_training_classes(spec, expected):
    assert classes.parse_train_classes(spec, 10) == expected


def test_first_half_of_an_odd_count_and_of_cub():
    assert classes.parse_train_classes("first_half", 7) == (0, 1, 2)
    assert len(classes.parse_train_classes("first_half", 200)) == 100  # CUB: classes 1-100 of 200


@pytest.mark.parametrize(
    "spec, message",
    [
        ("0-10", "data.train_classes='0-10' names class 10, but the data set has classes 0-9"),
        ("4-0", "data.train_classes='4-0': cannot read '4-0'; allowed: ''"),
        ("zero", "data.train_classes='zero': cannot read 'zero'; allowed: ''"),
        ("1,,2", "data.train_classes='1,,2': cannot read ''; allowed:"),
    ],
)
def test_bad_class_specs_are_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        classes.parse_train_classes(spec, 10)
    assert "\n" not in str(error.value)


def test_a_spec_that_cannot_be_read_fails_config_validation_before_any_data():
    config = base_config()
    config.total_steps = 1
    config.data.train_classes = "0-x"
    with pytest.raises(ValueError, match=re.escape("data.train_classes='0-x': cannot read '0-x'")):
        validate_config(config)


# ----------------------------------------------------------------------- sources cut to classes


def test_an_in_memory_source_keeps_and_relabels_the_training_classes():
    test = sources.load_source(data_config(name="digits", image_size=8), "test")
    seen = classes.restrict(test, (1, 3, 5), relabel=True)
    kept = np.isin(test.labels, (1, 3, 5))
    assert (seen.num_examples, seen.num_classes) == (kept.sum(), 3)
    np.testing.assert_array_equal(seen.labels, np.searchsorted([1, 3, 5], test.labels[kept]))
    np.testing.assert_array_equal(seen.images, test.images[kept])
    held = classes.restrict(test, (0, 2), relabel=False)
    assert held.num_classes == 10 and set(held.labels.tolist()) == {0, 2}


def test_a_source_loaded_by_index_maps_its_indices():
    data = data_config(name="synthetic", image_size=8, num_train_examples=40, num_classes=4)
    source = sources.load_source(data, "train")
    cut = classes.restrict(source, (1, 2), relabel=True)
    assert (cut.num_examples, cut.num_classes, cut.indexable) == (20, 2, True)
    images = next(pipeline.eval_batches(cut, global_batch=20))
    everything = next(pipeline.eval_batches(source, global_batch=40))
    kept = np.flatnonzero(np.isin(np.arange(40) % 4, (1, 2)))
    np.testing.assert_array_equal(images["image"], everything["image"][kept])
    np.testing.assert_array_equal(images["label"], everything["label"][kept] - 1)


def test_a_split_without_the_classes_is_a_clear_error_or_none():
    test = sources.load_source(data_config(name="digits", image_size=8), "test")
    only_three = classes.restrict(test, (3,), relabel=False)
    assert classes.restrict(only_three, (4,), relabel=False, missing_ok=True) is None
    with pytest.raises(ValueError, match=r"split 'test' has no example of the held-out classes \[4\]"):
        classes.restrict(only_three, (4,), relabel=False, role="held-out")


def test_tfds_records_are_filtered_relabelled_and_their_labels_read_once(tmp_path):
    with tfds.testing.mock_data(num_examples=30):
        data = data_config(name="cifar10", image_size=32, tfds_data_dir=str(tmp_path))
        source = sources.load_source(data, "test")
        labels = source.read_labels()
        assert labels.shape == (30,)
        cut = classes.restrict(source, (2, 7), relabel=True)
        expected = np.isin(labels, (2, 7))
        assert cut.num_examples == expected.sum() and cut.num_classes == 2 and not cut.indexable
        seen = np.concatenate([b["label"][b["mask"] == 1] for b in pipeline.eval_batches(cut, global_batch=8)])
        np.testing.assert_array_equal(seen, np.searchsorted([2, 7], labels[expected]))


def test_a_folder_takes_its_classes_from_the_union_of_its_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, names in (("train", ("a", "b")), ("test", ("c", "d"))):  # SOP-style: test classes unseen
        for name in names:
            os.makedirs(tmp_path / split / name)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
                    tmp_path / split / name / f"{i}.png"
                )
    data = data_config(name=f"folder:{tmp_path}", image_size=8)
    train, test = sources.load_source(data, "train"), sources.load_source(data, "test")
    assert train.num_classes == test.num_classes == 4
    assert set(train.labels.tolist()) == {0, 1} and set(test.labels.tolist()) == {2, 3}


# ----------------------------------------------------------- held-out classes never in training


def odd_digit_images(config) -> set[bytes]:
    """The training images of digits 1, 3, 5, 7, 9 that no even digit shares, pixel for pixel."""
    train = sources.load_source(config.data, "train")
    even = {image.tobytes() for image in train.images[train.labels % 2 == 0]}
    odd = {image.tobytes() for image in train.images[train.labels % 2 == 1]} - even
    assert len(odd) > 600  # digits has 724 odd training images: the check below is not vacuous
    return odd


def even_digits_config(samples_per_class):
    config = tiny(base_config())
    config.data.update(name="digits", image_size=8, train_classes="0,2,4,6,8", samples_per_class=samples_per_class)
    config.batch_size = 40
    return config


@pytest.mark.parametrize("samples_per_class", [0, 8])
@pytest.mark.parametrize("process_count", [1, 2])
def test_held_out_classes_never_reach_a_process_share_of_a_training_batch(samples_per_class, process_count):
    config = even_digits_config(samples_per_class)
    data = inputs.load_training_data(config, parallel.create_mesh())
    assert data.config.data.class_ids == [0, 2, 4, 6, 8] and data.train.num_classes == 5
    steps = -(-data.train.num_examples // config.batch_size) + 1  # more than an epoch
    images = []
    for process in range(process_count):
        batches = pipeline.train_batches(
            data.train,
            global_batch=40,
            seed=0,
            process_index=process,
            process_count=process_count,
            samples_per_class=samples_per_class,
        )
        for _ in range(steps):
            batch = next(batches)
            images += [image.tobytes() for image in batch["image"]]
            assert batch["label"].min() >= 0 and batch["label"].max() <= 4
    assert not set(images) & odd_digit_images(config)
    if not samples_per_class:
        assert set(images) == {image.tobytes() for image in data.train.images}  # the epoch covers every one


@pytest.mark.parametrize("samples_per_class", [0, 8])
@pytest.mark.parametrize("devices", [1, 8])
def test_held_out_classes_never_reach_the_devices(samples_per_class, devices):
    from types import SimpleNamespace

    config = even_digits_config(samples_per_class)
    mesh = parallel.create_mesh(jax.devices()[:devices])
    data = inputs.load_training_data(config, mesh)
    batches = inputs.training_batches(data.train, data.config, SimpleNamespace(step=0), mesh)
    steps = -(-data.train.num_examples // config.batch_size) + 1
    images, labels = [], []
    for _ in range(steps):
        batch = next(batches)
        assert len(batch["image"].sharding.device_set) == devices
        images += [image.tobytes() for image in np.asarray(batch["image"])]
        labels.append(np.asarray(batch["label"]))
    assert not set(images) & odd_digit_images(config)
    assert set(np.concatenate(labels).tolist()) == {0, 1, 2, 3, 4}


# ----------------------------------------------------------------------- query / gallery split


def test_query_gallery_split_is_per_class_fixed_and_disjoint():
    labels = np.repeat([5, 6, 7, 9], [10, 4, 2, 1])
    queries, gallery = retrieval.query_gallery_split(labels, 0.3)
    assert not set(queries) & set(gallery) and len(queries) + len(gallery) == len(labels)
    sizes = {int(c): int((labels[gallery] == c).sum()) for c in np.unique(labels)}
    assert sizes == {5: 3, 6: 1, 7: 1, 9: 1}  # round(0.3 n), at least one, one left to query
    again = retrieval.query_gallery_split(labels, 0.3)
    np.testing.assert_array_equal(again[1], gallery)
    shuffled = np.concatenate([labels[labels != 6], labels[labels == 6]])  # class 5's draw ignores the others
    np.testing.assert_array_equal(retrieval.query_gallery_split(shuffled, 0.3)[1][:3], gallery[:3])
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
            retrieval.query_gallery_split(labels, fraction)


def test_open_set_metrics_with_a_gallery_equal_a_brute_force_loop():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5, 10), 6)
    features = rng.normal(size=(30, 4)) + labels[:, None] * 0.3
    metrics = validation.open_set_metrics(
        {"encoder": features, "projection": features, "labels": labels}, gallery_fraction=0.5
    )
    queries, gallery = retrieval.query_gallery_split(labels, 0.5)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    hits1, hits4 = [], []
    for q in queries:
        order = gallery[np.argsort(-(unit[gallery] @ unit[q]), kind="stable")]
        hits1.append(labels[order[0]] == labels[q])
        hits4.append((labels[order[:4]] == labels[q]).any())
    assert metrics["val/encoder/recall_at_1"] == pytest.approx(np.mean(hits1))
    assert metrics["val/encoder/recall_at_4"] == pytest.approx(np.mean(hits4))
    assert not any("knn" in key for key in metrics)


def test_retrieval_examples_pick_one_query_per_class_and_never_the_query_itself():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), 3)
    features = rng.normal(size=(36, 6))
    queries, matches = retrieval.retrieval_examples(features, labels, gallery_fraction=None, rows=4, k=5)
    assert len(queries) == 4 and len(set(labels[queries])) == 4 and matches.shape == (4, 5)
    assert not (matches == queries[:, None]).any()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for q, row in zip(queries, matches, strict=True):
        similarity = unit @ unit[q]
        similarity[q] = -np.inf
        np.testing.assert_array_equal(row, np.argsort(-similarity, kind="stable")[:5])


# --------------------------------------------------------------------------- jobs end to end


@pytest.fixture
def openset_config():
    from configs import digits_openset

    config = tiny(digits_openset.get_config())
    config.eval_every_steps = 3
    return config


def read(path):
    with open(path) as f:
        return json.load(f)


def test_an_open_set_run_validates_on_the_held_out_classes_and_embed_agrees(openset_config, tmp_path):
    mesh = parallel.create_mesh(jax.devices()[:2])
    openset_config.plots = True
    workdir = str(tmp_path / "pre")
    summary = pretrain.train_and_evaluate(openset_config, workdir, mesh=mesh)
    assert summary["val/encoder/mean_average_precision_at_r"] > 0 and "val/probe_top1" in summary
    assert not any("knn_top1" in key for key in summary)
    recorded = read(os.path.join(workdir, "config.json"))
    assert recorded["data"]["class_ids"] == [0, 1, 2, 3, 4]
    assert recorded["best_metric"] == "val/encoder/mean_average_precision_at_r"
    assert os.path.exists(os.path.join(workdir, "plots", "held_out_retrieval.png"))
    assert os.path.exists(os.path.join(workdir, "plots", "held_out_encoder_pca.png"))

    config = base_config()
    config.update(job="embed", pretrained_workdir=workdir, eval_batch_size=64, plots=False)
    config.data.image_size = 8
    embedded = embed.train_and_evaluate(config, str(tmp_path / "embed"), mesh=mesh)
    assert (embedded["held_out_classes"], embedded["held_out_examples"]) == (5, 180)
    # The embed job embeds in other batches than validation did: float32 rounding may swap near-tied
    # neighbours deep in a ranking, which moved MAP@R by 3e-6 in one run.
    for name in ("mean_average_precision_at_r", "recall_at_1", "r_precision"):
        assert embedded[f"encoder/{name}"] == pytest.approx(summary[f"val/encoder/{name}"], abs=1e-4)
    arrays = np.load(os.path.join(tmp_path, "embed", "embeddings_test.npz"))
    assert arrays["labels"].shape == (360,)  # the file keeps the whole split

    config.eval.gallery_fraction = 0.5
    galleried = embed.train_and_evaluate(config, str(tmp_path / "embed_gallery"), mesh=mesh)
    held = arrays["labels"] >= 5
    direct = validation.open_set_metrics(
        {"encoder": arrays["encoder"][held], "labels": arrays["labels"][held]},
        gallery_fraction=0.5,
        spaces={"encoder": "encoder"},
    )
    for name in ("mean_average_precision_at_r", "recall_at_1", "recall_at_8"):
        assert galleried[f"encoder/{name}"] == pytest.approx(direct[f"val/encoder/{name}"], abs=1e-6)


def test_the_baselines_train_on_the_seen_classes_and_score_the_held_out_ones(openset_config, tmp_path):
    from configs import digits_openset

    mesh = parallel.create_mesh(jax.devices()[:2])
    ce = tiny(digits_openset.get_config("ce"))
    summary = supervised.train_and_evaluate(ce, str(tmp_path / "ce"), mesh=mesh)
    assert summary["test_examples"] == 180  # the test images of digits 0-4
    assert summary["val/encoder/mean_average_precision_at_r"] > 0 and "val/head/r_precision" not in summary
    openset_config.eval_every_steps = 0
    pretrain.train_and_evaluate(openset_config, str(tmp_path / "pre"), mesh=mesh)
    linear = tiny(base_config())
    linear.update(job="linear_eval", pretrained_workdir=str(tmp_path / "pre"), best_metric="")
    linear.data.update(name="digits", train_classes="0-4")
    result = linear_eval.train_and_evaluate(linear, str(tmp_path / "linear"), mesh=mesh)
    assert result["test_examples"] == 180 and 0 <= result["test_top1"] <= 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.train_classes": "0-12"}, "data.train_classes='0-12' names class 10, but the data set has classes 0-9"),
        ({"eval.gallery_fraction": 1.0}, "eval.gallery_fraction=1.0 must be in (0, 1)"),
        (
            {"data.train_classes": "", "eval.gallery_fraction": 0.5},
            "eval.gallery_fraction=0.5 needs held-out classes: set data.train_classes",
        ),
        (
            {"data.train_classes": "0-9", "eval.gallery_fraction": 0.5},
            "eval.gallery_fraction=0.5 needs held-out classes, but data.train_classes='0-9' names all 10 classes",
        ),
        ({"best_metric": "val/encoder/knn_top1"}, "best_metric='val/encoder/knn_top1' is not measured when classes"),
        ({"eval.recall_at": (0, 1)}, "eval.recall_at=(0, 1) must be a non-empty tuple of integers >= 1"),
    ],
)
def test_bad_open_set_settings_fail_before_anything_is_written(openset_config, tmp_path, changes, message):
    for key, value in changes.items():
        section, name = key.rsplit(".", 1) if "." in key else ("", key)
        (openset_config[section] if section else openset_config)[name] = value
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        pretrain.train_and_evaluate(openset_config, str(tmp_path / "run"), mesh=parallel.create_mesh())
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_tfds_split_with_class_balanced_batches_is_held_in_memory_and_cut_to_its_classes(tmp_path):
    """The CUB/Cars protocol on mock tfds data: both tfds splits merged, the first half of the
    classes trained on in class-balanced batches, the second half held out."""
    from configs import metric_learning

    config = metric_learning.get_config("cub")
    config.data.update(name="cifar10", image_size=16, tfds_data_dir=str(tmp_path), samples_per_class=4)
    config.batch_size = 16
    with tfds.testing.mock_data(num_examples=60):
        data = inputs.load_training_data(config, parallel.create_mesh())
        everything = sources.load_source(config.data, "train").read_labels()
        assert data.train.indexable and data.train.num_classes == 5 and data.config.data.class_ids == [0, 1, 2, 3, 4]
        assert data.train.num_examples == np.sum(everything < 5) and data.held_out.num_examples == np.sum(
            everything >= 5
        )
        batch = next(pipeline.train_batches(data.train, global_batch=16, seed=0, samples_per_class=4))
        labels, counts = np.unique(batch["label"], return_counts=True)
        assert (counts == 4).all() and labels.max() <= 4 and batch["image"].shape == (16, 16, 16, 3)
