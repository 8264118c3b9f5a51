"""Sources (digits, synthetic, folder, tfds mock data), the host pipeline (shapes, reproducibility,
resume, process shares, class balance, evaluation padding) and device prefetch."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jax_supcon import parallel
from jax_supcon.config import base_config, validate_config
from jax_supcon.data import folders, pipeline, sources


def data_config(**overrides):
    data = base_config().data
    data.update(overrides)
    return data


@pytest.fixture(scope="module")
def digits():
    data = data_config(name="digits", image_size=16)
    return sources.load_source(data, "train"), sources.load_source(data, "test")


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    train, test = digits
    assert (train.num_examples, test.num_examples) == (1437, 360) and train.num_classes == 10
    assert train.images.shape == (1437, 16, 16, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32 and train.images.max() == 255
    assert train.indexable and train.fixed_size
    # Stratified: each class is ~20% test, never far off.
    test_share = np.bincount(test.labels, minlength=10) / np.bincount(np.concatenate([train.labels, test.labels]))
    assert np.all(np.abs(test_share - 0.2) < 0.02)
    # Disjoint: no test image appears in the training split.
    train_rows = {image.tobytes() for image in train.images}
    assert sum(image.tobytes() in train_rows for image in test.images) <= 2  # digits has a few duplicate images
    again = sources.load_source(data_config(name="digits", image_size=16), "test")
    np.testing.assert_array_equal(again.images, test.images)


def test_mnist5k_is_embedded_split_80_20_per_class_and_deterministic():
    train, test = (
        sources.load_source(data_config(name="mnist5k", image_size=28), split) for split in ("train", "test")
    )
    assert (train.num_examples, test.num_examples, train.num_classes) == (4000, 1000, 10)
    assert train.images.shape == (4000, 28, 28, 3) and train.images.dtype == np.uint8 and train.fixed_size
    assert np.bincount(train.labels).tolist() == [400] * 10 and np.bincount(test.labels).tolist() == [100] * 10
    assert train.images.max() == 255 and (train.images[..., 0] == train.images[..., 2]).all()  # grey as RGB
    train_rows = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_rows for image in test.images)
    again = sources.load_source(data_config(name="mnist5k", image_size=28), "test")
    np.testing.assert_array_equal(again.images, test.images)
    assert sources.load_source(data_config(name="mnist5k", image_size=16), "test").images.shape == (1000, 16, 16, 3)


@pytest.mark.parametrize(
    "name, error, message",
    [
        ("mnist_typo", ValueError, "data.name='mnist_typo'; allowed: 'digits', 'mnist5k', 'synthetic', 'folder:PATH'"),
        ("", ValueError, "data.name=''; allowed"),
        ("folder:/no/such/dir", FileNotFoundError, "data.name='folder:/no/such/dir': '/no/such/dir' does not exist"),
        ("glue", ValueError, "data.name='glue' is not an image classification data set"),
    ],
)
def test_bad_data_names_are_one_line_errors(name, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        sources.load_source(data_config(name=name, image_size=8), "train")
    assert "\n" not in str(raised.value)


def test_validate_config_checks_the_data_block():
    for key, value, message in [
        ("name", "", "data.name=''"),
        ("image_size", 0, "data.image_size=0"),
        ("eval_crop_fraction", 1.5, "data.eval_crop_fraction=1.5"),
        ("samples_per_class", 3, "data.samples_per_class=3 must be 0 .off. or divide batch_size=256"),
        ("num_classes", 0, "data.num_classes=0"),
    ]:
        config = base_config()
        config.total_steps = 1
        config.data[key] = value
        with pytest.raises(ValueError, match=message):
            validate_config(config)


def test_unprepared_tfds_data_set_names_the_fix(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="data.name='cifar10': not prepared in .*`tfds build cifar10 --data_dir=DIR`"
    ):
        sources.load_source(data_config(name="cifar10", tfds_data_dir=str(tmp_path)), "train")


def test_train_batches_shapes_dtypes_and_reproducibility(digits):
    train, _ = digits
    first = take(pipeline.train_batches(train, global_batch=64, seed=3), 30)  # > 1 epoch (22.4 batches)
    assert first[0]["image"].shape == (64, 16, 16, 3) and first[0]["image"].dtype == np.uint8
    assert first[0]["label"].shape == (64,) and first[0]["label"].dtype == np.int32
    again = take(pipeline.train_batches(train, global_batch=64, seed=3), 30)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    other = next(pipeline.train_batches(train, global_batch=64, seed=4))
    assert not np.array_equal(other["label"], first[0]["label"])
    # Epochs are reshuffled: epoch 2 does not repeat epoch 1's order.
    assert not np.array_equal(first[0]["label"], first[23]["label"])


def test_every_example_is_seen_once_per_epoch():
    n, batch = 50, 8
    seen = np.concatenate([pipeline.shuffled_indices(n, batch, seed=0, step=s) for s in range(25)])  # 4 epochs
    for epoch in range(4):
        np.testing.assert_array_equal(np.sort(seen[epoch * n : (epoch + 1) * n]), np.arange(n))
    assert not np.array_equal(seen[:n], seen[n : 2 * n])


def test_resuming_at_a_step_continues_the_same_stream(digits):
    train, _ = digits
    straight = take(pipeline.train_batches(train, global_batch=64, seed=0), 26)
    resumed = take(pipeline.train_batches(train, global_batch=64, seed=0, start_step=20), 6)
    for a, b in zip(straight[20:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_processes_read_disjoint_slices_that_make_up_the_global_batch(digits):
    train, _ = digits
    whole = take(pipeline.train_batches(train, global_batch=64, seed=0), 3)
    shares = [
        take(pipeline.train_batches(train, global_batch=64, seed=0, process_index=i, process_count=2), 3)
        for i in (0, 1)
    ]
    for step in range(3):
        assert shares[0][step]["image"].shape == (32, 16, 16, 3)
        joined = np.concatenate([shares[0][step]["image"], shares[1][step]["image"]])
        np.testing.assert_array_equal(joined, whole[step]["image"])  # 2 processes = 1 process, same batches


def test_eval_batches_cover_every_example_once_with_padding_masked(digits):
    _, test = digits
    batches = list(pipeline.eval_batches(test, global_batch=64))
    assert len(batches) == 6 and all(b["image"].shape == (64, 16, 16, 3) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 360 and np.all(mask[:360] == 1) and np.all(mask[360:] == 0)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:360], test.labels)


def assert_each_example_once_across_processes(source, global_batch, process_count=2):
    runs = [
        list(pipeline.eval_batches(source, global_batch=global_batch, process_index=p, process_count=process_count))
        for p in range(process_count)
    ]
    assert len({len(run) for run in runs}) == 1  # every process runs the same number of steps
    index = np.concatenate([b["index"] for run in runs for b in run])
    mask = np.concatenate([b["mask"] for run in runs for b in run])
    np.testing.assert_array_equal(np.sort(index[mask == 1]), np.arange(source.num_examples))
    assert np.all(index[mask == 0] == -1)
    return runs


def test_two_processes_evaluate_each_example_exactly_once(digits):
    _, test = digits
    assert_each_example_once_across_processes(test, global_batch=48)


def test_batch_errors_are_clear(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="batch_size=4096 is larger than the training split"):
        pipeline.train_batches(train, global_batch=4096, seed=0)
    with pytest.raises(ValueError, match="batch_size=63 must be divisible by the process count"):
        pipeline.train_batches(train, global_batch=63, seed=0, process_count=2)


# ------------------------------------------------------------------------------ class balance


def test_class_balanced_batches_hold_m_examples_of_distinct_classes(digits):
    train, _ = digits
    batches = take(pipeline.train_batches(train, global_batch=20, seed=0, samples_per_class=4), 5)
    for batch in batches:
        classes, counts = np.unique(batch["label"], return_counts=True)
        assert len(classes) == 5 and np.all(counts == 4)
    resumed = next(pipeline.train_batches(train, global_batch=20, seed=0, samples_per_class=4, start_step=4))
    np.testing.assert_array_equal(resumed["image"], batches[4]["image"])


def test_class_balanced_sampling_repeats_a_class_with_too_few_examples():
    by_class = [np.array([0]), np.array([1, 2]), np.array([3, 4, 5])]
    for step in range(5):
        indices = pipeline.class_balanced_indices(by_class, global_batch=6, samples_per_class=2, seed=0, step=step)
        groups = {tuple(sorted(indices[k : k + 2].tolist())) for k in range(0, 6, 2)}
        assert (0, 0) in groups  # the one-example class is drawn with replacement
        assert (1, 2) in groups  # exactly two examples: both, without replacement
        (third,) = groups - {(0, 0), (1, 2)}
        assert len(set(third)) == 2 and set(third) <= {3, 4, 5}


def test_class_balanced_errors_are_clear(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="needs 11 classes per batch; 'digits' has 10"):
        pipeline.train_batches(train, global_batch=22, seed=0, samples_per_class=2)
    with pytest.raises(ValueError, match="data.samples_per_class=3 must be >= 1 and divide batch_size=20"):
        pipeline.train_batches(train, global_batch=20, seed=0, samples_per_class=3)


# ---------------------------------------------------------------------------------- synthetic


def test_synthetic_images_are_a_function_of_their_index():
    data = data_config(name="synthetic", image_size=12, num_train_examples=40, num_classes=4)
    source = sources.load_source(data, "train")
    assert (source.num_examples, source.num_classes, source.image_shape) == (40, 4, (12, 12, 3))
    batch = next(pipeline.train_batches(source, global_batch=8, seed=0))
    assert batch["image"].shape == (8, 12, 12, 3) and batch["image"].dtype == np.uint8
    evaluated = list(pipeline.eval_batches(source, global_batch=40))[0]
    np.testing.assert_array_equal(evaluated["label"], np.arange(40) % 4)
    again = list(pipeline.eval_batches(sources.load_source(data, "train"), global_batch=40))[0]
    np.testing.assert_array_equal(again["image"], evaluated["image"])
    assert sources.load_source(data_config(name="synthetic", image_size=12), "test").num_examples == 512


# ----------------------------------------------------------------------------- image folders


def write_folder(root, corrupt=True):
    """train/{cat,dog} and test/{cat,dog}: RGB JPEGs and PNGs of varying size, one grayscale PNG,
    one RGBA PNG and (optionally) one corrupt JPEG."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.integers(0, 256, (20 + 3 * i, 30 - 2 * i, 3), dtype=np.uint8)
                pixels[..., label] = 255  # class colour: cats are red, dogs green
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(root / split / name / f"{i}.{ext}")
    Image.fromarray(rng.integers(0, 256, (17, 23), dtype=np.uint8), mode="L").save(root / "train" / "cat" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (19, 21, 4), dtype=np.uint8), mode="RGBA").save(
        root / "train" / "dog" / "rgba.png"
    )
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    if corrupt:
        (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")


def test_folder_with_a_corrupt_file_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path)
    data = data_config(name=f"folder:{tmp_path}", image_size=8)
    with pytest.raises(ValueError, match=r"cannot read image '.*/train/dog/broken.jpg' \(1 unreadable"):
        sources.load_source(data, "train")


def test_folder_skip_corrupt_decodes_every_format_to_rgb(tmp_path):
    write_folder(tmp_path)
    data = data_config(name=f"folder:{tmp_path}", image_size=8, skip_corrupt=True)
    train = sources.load_source(data, "train")
    assert train.skipped == (str(tmp_path / "train" / "dog" / "broken.jpg"),)
    assert (train.num_examples, train.num_classes, train.image_shape) == (12, 2, None)
    np.testing.assert_array_equal(train.labels, [0] * 6 + [1] * 6)  # sorted names: cat 0, dog 1
    views = next(pipeline.train_batches(train, global_batch=12, seed=0, host_views=pipeline.HostViews(views=2)))
    assert views["image"].shape == (12, 2, 8, 8, 3) and views["image"].dtype == np.uint8
    assert not np.array_equal(views["image"][:, 0], views["image"][:, 1])  # two different crops
    again = next(pipeline.train_batches(train, global_batch=12, seed=0, host_views=pipeline.HostViews(views=2)))
    np.testing.assert_array_equal(views["image"], again["image"])  # host crops are seeded
    centre = next(
        pipeline.train_batches(train, global_batch=12, seed=0, host_views=pipeline.HostViews(random_crop=False))
    )
    assert centre["image"].shape == (12, 8, 8, 3)
    test = sources.load_source(data, "test")
    (batch,) = assert_each_example_once_across_processes(test, global_batch=4, process_count=1)[0][:1]
    assert batch["image"].shape == (4, 8, 8, 3)
    # Class colour survives decode + centre crop: red cats, green dogs (JPEG noise aside).
    cats = np.concatenate([b["image"][b["label"] == 0] for b in assert_each_example_once_across_processes(test, 4)[0]])
    assert cats[..., 0].mean() > 200


def test_center_view_crops_the_middle_of_the_shorter_side():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 30:50] = 255  # a white band in the middle of a wide image
    view = pipeline.center_view(image, 8, 0.5).numpy()  # shorter side to 16, central 8x8 of 16x32
    assert view.shape == (8, 8, 3) and view.min() > 200


# --------------------------------------------------------------------- tfds (under mock data)


def test_mock_cifar10_is_fixed_size_and_resumes_exactly():
    with tfds.testing.mock_data(num_examples=40):
        train = sources.load_source(data_config(name="cifar10", image_size=32), "train")
        assert (train.num_examples, train.num_classes, train.image_shape, train.indexable) == (
            40,
            10,
            (32, 32, 3),
            False,
        )
        straight = take(pipeline.train_batches(train, global_batch=16, seed=1, shuffle_buffer=40), 6)
        resumed = take(pipeline.train_batches(train, global_batch=16, seed=1, shuffle_buffer=40, start_step=4), 2)
        assert straight[0]["image"].shape == (16, 32, 32, 3)
        for a, b in zip(straight[4:], resumed, strict=True):
            np.testing.assert_array_equal(a["image"], b["image"])
        epoch = np.concatenate([b["label"] for b in straight[:5]])[:40]  # 2.5 batches of 16 = one epoch
        test = sources.load_source(data_config(name="cifar10", image_size=32), "test")
        assert_each_example_once_across_processes(test, global_batch=12)
    assert epoch.shape == (40,)


def test_mock_imagenet_crops_views_on_the_host():
    with tfds.testing.mock_data(num_examples=20):
        data = data_config(name="imagenet2012", image_size=16, eval_split="validation")
        train = sources.load_source(data, "train")
        assert train.image_shape is None and train.num_classes == 1000
        batch = next(pipeline.train_batches(train, global_batch=4, seed=0, host_views=pipeline.HostViews(views=2)))
        assert batch["image"].shape == (4, 2, 16, 16, 3)
        runs = assert_each_example_once_across_processes(sources.load_source(data, "test"), global_batch=8)
        assert runs[0][0]["image"].shape == (4, 16, 16, 3)


# ----------------------------------------------------------------------------------- devices


def test_prefetch_to_device_keeps_order_and_shards_over_the_mesh():
    mesh = parallel.create_mesh()
    batches = [{"x": np.full((8, 2), i, np.float32)} for i in range(5)]
    out = list(parallel.prefetch_to_device(iter(batches), mesh, size=2))
    assert [float(b["x"][0, 0]) for b in out] == [0, 1, 2, 3, 4]
    assert out[0]["x"].sharding == parallel.data_sharding(mesh)


def test_preview_writes_a_grid_of_examples_by_views(tmp_path):
    from configs import digits_supcon
    from jax_supcon.cli.preview import augmentation_preview

    write_folder(tmp_path / "data", corrupt=False)
    config = digits_supcon.get_config()
    config.data.name = f"folder:{tmp_path / 'data'}"
    config.data.image_size = 16
    config.augment.recipe = "byol"
    path = augmentation_preview(config, str(tmp_path / "grid.png"), images=3, views=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape[0] > grid.shape[1] > 300  # 3 rows x (original + 2 views), 1.4 inch cells at 100 dpi
    assert grid[..., :3].std() > 10  # not blank
    with pytest.raises(ValueError, match="--images=0 and --views=2 must be >= 1"):
        augmentation_preview(config, str(tmp_path / "none.png"), images=0, views=2)
    # --out writes exactly where it says: a directory gets the default name inside it, a bare name gets .png
    from jax_supcon.cli.preview import png_path

    (tmp_path / "views").mkdir()
    assert png_path(str(tmp_path / "views")) == str(tmp_path / "views" / "augmentations.png")
    assert png_path(str(tmp_path / "grid")) == str(tmp_path / "grid.png")
    assert png_path(str(tmp_path / "grid.jpg")) == str(tmp_path / "grid.jpg")
    assert augmentation_preview(config, str(tmp_path / "views"), images=1, views=1).endswith("views/augmentations.png")


# ------------------------------------------------------------------ fixes from the second review


def coordinate_image(side=256):
    """Channel 0 holds the column, channel 1 the row: a crop's extent can be read off its pixels."""
    ys, xs = np.mgrid[0:side, 0:side]
    return np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)


def crop_areas(spec, view=0, count=40):
    image = coordinate_image()
    areas = []
    for position in range(count):
        crop = pipeline.random_crops(image, 32, spec, 0, np.int64(position)).numpy()[view].astype(int)
        width = crop[..., 0].max() - crop[..., 0].min() + 1
        height = crop[..., 1].max() - crop[..., 1].min() + 1
        areas.append(width * height / 256**2)
    return np.asarray(areas)


def test_host_crops_follow_crop_scale_below_ten_percent():
    areas = crop_areas(pipeline.HostViews(crop_scale=(0.02, 0.08), crop_ratio=(1.0, 1.0)))
    assert areas.max() < 0.1 and areas.min() > 0.01  # TF's default min_object_covered=0.1 used to floor them


def test_host_crops_use_each_views_own_crop_settings():
    from jax_supcon.config import augment_config

    cfg = augment_config("byol", crop_scale=(0.05, 0.1))
    cfg.view2.crop_scale = (1.0, 1.0)
    cfg.view2.crop_ratio = (1.0, 1.0)
    spec = pipeline.host_views_for(cfg, 2)
    assert crop_areas(spec, view=0).max() < 0.15
    assert crop_areas(spec, view=1).min() > 0.9  # view 2: the whole image (antialiasing blurs the last pixels)


def test_folder_ignores_hidden_directories_and_rejects_undecodable_formats(tmp_path):
    write_folder(tmp_path, corrupt=False)
    os.makedirs(tmp_path / "train" / ".ipynb_checkpoints")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / ".ipynb_checkpoints" / "x.png")
    data = data_config(name=f"folder:{tmp_path}", image_size=8)
    train = sources.load_source(data, "train")
    assert train.num_classes == 2
    # The extensions search reads (one shared list); hidden files such as macOS's ._x.jpg are not data.
    for extension in ("webp", "bmp", "gif"):
        Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "train" / "cat" / f"more.{extension}")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "._more.png")
    more = sources.load_source(data, "train")
    assert more.num_examples == train.num_examples + 3  # the three new formats, not the hidden file
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "tiff_in_disguise.png", format="TIFF")
    with pytest.raises(ValueError, match="cannot read image '.*tiff_in_disguise.png'"):
        sources.load_source(data, "train")


def test_tfds_host_crops_differ_between_processes():
    with tfds.testing.mock_data(num_examples=16):  # mock data gives every process the same records
        source = sources.load_source(data_config(name="imagenet2012", image_size=16, eval_split="validation"), "train")
        first = [
            next(pipeline.train_batches(source, global_batch=8, seed=0, process_index=p, process_count=2))
            for p in (0, 1)
        ]
    np.testing.assert_array_equal(first[0]["label"], first[1]["label"])  # same records ...
    assert not np.array_equal(first[0]["image"], first[1]["image"])  # ... cropped differently


def test_in_memory_source_resizes_in_chunks_to_the_same_result():
    images = np.random.default_rng(0).integers(0, 256, (600, 8, 8, 3), dtype=np.uint8)
    source = sources.in_memory_source("arrays", "train", images, np.zeros(600, np.int32), 1, 12)
    assert source.images.shape == (600, 12, 12, 3) and source.images.dtype == np.uint8
    np.testing.assert_array_equal(
        source.images[300:301], sources.in_memory_source("one", "train", images[300:301], np.zeros(1), 1, 12).images
    )


def test_an_image_above_pils_decompression_bomb_limit_is_checked_with_the_decoder_training_uses(tmp_path, monkeypatch):
    """PIL refuses images above ~179 megapixels (a 14000 x 14000 PNG); TensorFlow decodes them. The
    limit is lowered here so a 64 x 64 image stands in for the large one."""
    from PIL import Image

    good, bad = tmp_path / "big.png", tmp_path / "big_truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:200])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x 1000: PIL raises
    with pytest.raises(Image.DecompressionBombError), Image.open(good):
        pass
    assert folders.is_readable(str(good)) and not folders.is_readable(str(bad))
    assert Image.MAX_IMAGE_PIXELS == 1000  # the check changed nothing global
