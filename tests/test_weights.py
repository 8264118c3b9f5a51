"""`model.init_from`: torchvision/timm ResNet weights in, checked against torchvision's own
forward pass (`tests/fixtures/torchvision_resnet.py` made the fixture), the name map both ways,
every way a weight file can be wrong, and a run that starts from imported weights."""

import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny
from safetensors.numpy import save_file

from jax_supcon import parallel
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.models import create_resnet, weights
from jax_supcon.train import pretrained

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import torchvision_resnet as fixture  # noqa: E402


def torchvision_weights(name):
    arrays = np.load(fixture.FIXTURE)
    shapes = {
        key: tuple(int(size) for size in shape.split(",") if size)
        for key, shape in zip(arrays[f"{name}_names"], arrays[f"{name}_shapes"], strict=True)
    }
    return fixture.random_weights(shapes), arrays[f"{name}_features"], arrays["inputs"]


def encoder_template(name, stem="imagenet", width=1.0):
    encoder = create_resnet(name, stem=stem, width=width)
    return encoder, encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imported_torchvision_weights_give_torchvisions_features(name, tmp_path):
    state, expected, inputs = torchvision_weights(name)
    path = str(tmp_path / f"{name}.safetensors")
    save_file({key: np.ascontiguousarray(value) for key, value in state.items()}, path)
    encoder, template = encoder_template(name)
    variables = weights.encoder_from_state_dict(weights.read_state_dict(path), template, source=path)
    features = np.asarray(encoder.apply(variables, inputs, train=False))
    assert np.linalg.norm(features - expected) / np.linalg.norm(expected) <= 1e-4
    # Without the import the same network computes something else: the check is not vacuous.
    other = np.asarray(encoder.apply(template, inputs, train=False))
    assert np.linalg.norm(other - expected) / np.linalg.norm(expected) > 0.1


def test_the_name_map_round_trips_and_ignores_the_classifier_and_a_data_parallel_prefix(tmp_path):
    _, template = encoder_template("resnet_tiny", stem="cifar", width=0.25)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), template)
    state = weights.state_dict_from_encoder(variables)
    assert "layer2.0.downsample.1.running_mean" in state and state["conv1.weight"].shape == (16, 3, 3, 3)
    state |= {"fc.weight": np.zeros((10, 32), np.float32), "bn1.num_batches_tracked": np.array(3)}
    path = str(tmp_path / "tiny.safetensors")
    save_file({f"module.{key}": value for key, value in state.items()}, path)
    back = weights.encoder_from_state_dict(weights.read_state_dict(path), template, source=path)
    jax.tree.map(np.testing.assert_array_equal, back, variables)


def write_resnet18(tmp_path):
    state, _, _ = torchvision_weights("resnet18")
    path = str(tmp_path / "r18.safetensors")
    save_file({key: np.ascontiguousarray(value) for key, value in state.items()}, path)
    return path


@pytest.mark.parametrize(
    "name, stem, message",
    [
        ("resnet50", "imagenet", "has no 'layer1.0.bn3.bias' (for encoder stage1_block1/BatchNorm_2/bias, (256,))"),
        (
            "resnet18",
            "cifar",
            "'conv1.weight' has shape (64, 3, 7, 7) (as Flax (7, 7, 3, 64)), encoder stem_conv/kernel needs (3, 3,",
        ),
        ("resnet10", "imagenet", "has 'layer1.1.bn1.bias' (64,) (and 39 more) that the encoder has no place for"),
    ],
)
def test_weights_of_another_network_are_a_one_line_error_naming_the_parameter(tmp_path, name, stem, message):
    path = write_resnet18(tmp_path)
    _, template = encoder_template(name, stem=stem)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        weights.encoder_from_state_dict(weights.read_state_dict(path), template, source=path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda w: np.round(w * 100).astype(np.int8), "'conv1.weight' holds int8 values, not floating-point weights"),
        (
            lambda w: np.where(np.arange(w.size).reshape(w.shape) == 5, np.inf, w),
            "'conv1.weight' holds NaN or infinite",
        ),
    ],
)
def test_integer_or_non_finite_weights_are_a_one_line_error_not_float_weights(tmp_path, damage, message):
    state, _, _ = torchvision_weights("resnet18")
    state = {key: np.ascontiguousarray(value) for key, value in state.items()}
    state["conv1.weight"] = damage(state["conv1.weight"])
    path = str(tmp_path / "damaged.safetensors")
    save_file(state, path)
    _, template = encoder_template("resnet18")
    with pytest.raises(ValueError, match=re.escape(f"model.init_from={path!r}: {message}")):
        weights.encoder_from_state_dict(weights.read_state_dict(path), template, source=path)


def test_init_from_on_a_job_that_does_not_read_it_is_refused(tmp_path):
    from configs import digits_linear
    from jax_supcon.config import validate_config

    config = digits_linear.get_config()
    config.pretrained_workdir = str(tmp_path)
    config.model.init_from = write_resnet18(tmp_path)
    with pytest.raises(ValueError, match="is not read by job 'linear_eval' .*; allowed with job pretrain, supervised"):
        validate_config(config)


def test_missing_corrupt_and_unknown_weight_files_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="model.init_from='/nowhere/r50.safetensors' does not exist"):
        weights.read_state_dict("/nowhere/r50.safetensors")
    with pytest.raises(ValueError, match=re.escape("model.init_from='r50.bin'; allowed: '' (random) or a file ending")):
        weights.check_init_from("r50.bin")
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        weights.read_state_dict(str(corrupt))
    pickled = tmp_path / "weights.pth"
    pickled.write_bytes(b"not a zip archive")
    monkeypatch.setitem(sys.modules, "torch", None)  # torch absent: .pth names the way out
    with pytest.raises(ValueError, match=r"reading \.pth/\.pt needs torch \(pip install torch\), or convert"):
        weights.read_state_dict(str(pickled))


def test_a_fresh_state_starts_from_the_imported_encoder_everywhere_it_lives(tmp_path):
    from configs import digits_supcon
    from jax_supcon.jobs import pretrain
    from jax_supcon.train.state import abstract_state, restore_or_init

    config = tiny(digits_supcon.get_config())
    config.data.num_classes = 10
    config.update(ema_decay=0.5, total_steps=1)
    config.model.momentum = 0.9
    mesh = parallel.create_mesh(jax.devices()[:2])
    _, _, _, init = pretrained.build(config, 1, 0)
    target = abstract_state(init, mesh)
    rng = np.random.default_rng(1)
    encoder = {
        key: jax.tree.map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), getattr(target, key)["encoder"])
        for key in ("params", "batch_stats")
    }
    path = str(tmp_path / "start.safetensors")
    save_file(weights.state_dict_from_encoder(encoder), path)
    config.model.init_from = path
    checkpointer = Checkpointer(str(tmp_path / "fresh"))
    state = restore_or_init(
        init, target, checkpointer, initial_encoder=pretrained.encoder_importer(config.model, target)
    )
    for variables in (state.variables(), state.ema, state.momentum):
        for key in ("params", "batch_stats"):
            jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables[key]["encoder"]), encoder[key])
            assert "head" not in variables[key] or variables[key]["head"]  # the head keeps its own init
    assert (
        state.params["encoder"]["stem_conv"]["kernel"].sharding
        == target.params["encoder"]["stem_conv"]["kernel"].sharding
    )
    checkpointer.close()

    summary = pretrain.train_and_evaluate(config, str(tmp_path / "run"), mesh=mesh)  # the job path, end to end
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["model"]["init_from"] == path


def test_a_missing_weight_file_fails_before_the_workdir_is_touched(tmp_path):
    from configs import digits_supcon
    from jax_supcon.jobs import pretrain

    config = tiny(digits_supcon.get_config())
    config.model.init_from = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors' does not exist"):
        pretrain.train_and_evaluate(config, str(tmp_path / "run"), mesh=parallel.create_mesh(jax.devices()[:2]))
    assert not (tmp_path / "run").exists()
