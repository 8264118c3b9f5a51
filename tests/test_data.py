"""Digits source, host pipeline (shapes, dtypes, reproducibility, process shares) and augmentation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_supcon.config import augment_config
from jax_supcon.data import augment, pipeline, sources


@pytest.fixture(scope="module")
def digits():
    data = ml_collections.ConfigDict(dict(name="digits", image_size=16))
    return sources.load_source(data, "train"), sources.load_source(data, "test")


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    train, test = digits
    assert (train.num_examples, test.num_examples) == (1437, 360) and train.num_classes == 10
    assert train.images.shape == (1437, 16, 16, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32 and train.images.max() == 255
    # Stratified: each class is ~20% test, never far off.
    test_share = np.bincount(test.labels, minlength=10) / np.bincount(np.concatenate([train.labels, test.labels]))
    assert np.all(np.abs(test_share - 0.2) < 0.02)
    # Disjoint: no test image appears in the training split.
    train_rows = {image.tobytes() for image in train.images}
    assert sum(image.tobytes() in train_rows for image in test.images) <= 2  # digits has a few duplicate images
    again = sources.load_source(ml_collections.ConfigDict(dict(name="digits", image_size=16)), "test")
    np.testing.assert_array_equal(again.images, test.images)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="data.name='mnist_typo'"):
        sources.load_source(ml_collections.ConfigDict(dict(name="mnist_typo", image_size=8)), "train")


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_train_batches_shapes_dtypes_and_reproducibility(digits):
    train, _ = digits
    first = take(pipeline.train_batches(train, global_batch=64, seed=3), 30)  # > 1 epoch (22 batches)
    assert first[0]["image"].shape == (64, 16, 16, 3) and first[0]["image"].dtype == np.uint8
    assert first[0]["label"].shape == (64,) and first[0]["label"].dtype == np.int32
    again = take(pipeline.train_batches(train, global_batch=64, seed=3), 30)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
    other = next(pipeline.train_batches(train, global_batch=64, seed=4))
    assert not np.array_equal(other["label"], first[0]["label"])
    # Epochs are reshuffled: epoch 2 does not repeat epoch 1's order.
    assert not np.array_equal(first[0]["label"], first[22]["label"])


def test_resuming_at_a_step_continues_the_same_stream(digits):
    train, _ = digits
    straight = take(pipeline.train_batches(train, global_batch=64, seed=0), 26)
    resumed = take(pipeline.train_batches(train, global_batch=64, seed=0, start_step=20), 6)
    for a, b in zip(straight[20:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_each_process_reads_a_disjoint_share_of_the_global_batch(digits):
    train, _ = digits
    shares = [
        next(pipeline.train_batches(train, global_batch=64, seed=0, process_index=i, process_count=2)) for i in (0, 1)
    ]
    assert shares[0]["image"].shape == (32, 16, 16, 3)
    seen = [{img.tobytes() for img in share["image"]} for share in shares]
    per_process_rows = [{img.tobytes() for img in train.images[i::2]} for i in (0, 1)]
    assert seen[0] <= per_process_rows[0] and seen[1] <= per_process_rows[1]


def test_eval_batches_cover_every_example_once_with_padding_masked(digits):
    _, test = digits
    batches = list(pipeline.eval_batches(test, global_batch=64))
    assert len(batches) == 6 and all(b["image"].shape == (64, 16, 16, 3) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 360 and np.all(mask[:360] == 1) and np.all(mask[360:] == 0)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:360], test.labels)


def test_batch_errors_are_clear(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="batch_size=4096 is larger than the training split"):
        pipeline.train_batches(train, global_batch=4096, seed=0)
    with pytest.raises(ValueError, match="batch_size=63 must be divisible by the process count"):
        pipeline.train_batches(train, global_batch=63, seed=0, process_count=2)


def test_augmented_views_shapes_range_and_determinism(digits):
    train, _ = digits
    cfg = augment_config()
    images = jnp.asarray(train.images[:8])
    fn = jax.jit(lambda key, x: augment.augment_views(key, x, cfg, 2))
    views = fn(jax.random.PRNGKey(0), images)
    assert views.shape == (8, 2, 16, 16, 3) and views.dtype == jnp.float32
    pixels = np.asarray(views) * np.asarray(cfg.std) + np.asarray(cfg.mean)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    np.testing.assert_array_equal(views, fn(jax.random.PRNGKey(0), images))
    assert not np.allclose(views[:, 0], views[:, 1])
    assert not np.allclose(views, fn(jax.random.PRNGKey(1), images))


def test_identity_recipe_returns_the_normalised_image(digits):
    train, _ = digits
    cfg = augment_config(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )
    images = jnp.asarray(train.images[:4])
    views = augment.augment_views(jax.random.PRNGKey(0), images, cfg, 1)[:, 0]
    np.testing.assert_allclose(views, augment.preprocess_eval(images, cfg), atol=1e-5)


def test_random_resized_crop_zooms_into_the_image():
    image = jnp.zeros((16, 16, 3)).at[:8].set(1.0)  # top half white
    crops = jax.vmap(lambda k: augment.random_resized_crop(k, image, scale=(0.1, 0.1), ratio=(1.0, 1.0)))(
        jax.random.split(jax.random.PRNGKey(0), 64)
    )
    means = np.asarray(crops.mean(axis=(1, 2, 3)))
    assert means.min() < 0.05 and means.max() > 0.95  # small crops land fully in one half or the other


def test_flip_and_grayscale_are_applied_at_their_probabilities():
    image = jnp.tile(jnp.linspace(0, 1, 8)[None, :, None], (8, 1, 3)) * jnp.array([1.0, 0.5, 0.2])
    cfg = augment_config(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=1.0,
        jitter_prob=0.0,
        grayscale_prob=1.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    out = augment.augment_image(jax.random.PRNGKey(0), image, cfg)
    assert float(out[0, 0, 0]) > float(out[0, -1, 0])  # mirrored: the bright side is now on the left
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)  # grey: channels equal
