"""Mesh, host -> global arrays, the same training on 1 device and on 8 fake devices, and a
two-process run."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import read_metrics

from jax_supcon import parallel
from jax_supcon.train import pretrain


def test_eight_fake_devices_are_visible():
    assert jax.device_count() == 8


def test_batch_not_divisible_by_device_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"batch_size=12 must be a positive multiple of the device count \(8\)"):
        parallel.check_batch_size(12, parallel.create_mesh())
    parallel.check_batch_size(12, parallel.create_mesh(jax.devices()[:4]))


def test_host_batch_becomes_a_global_array_sharded_over_data():
    mesh = parallel.create_mesh()
    batch = parallel.to_global({"image": np.arange(16 * 3).reshape(16, 3), "label": np.arange(16)}, mesh)
    assert batch["image"].shape == (16, 3) and len(batch["image"].addressable_shards) == 8
    assert batch["image"].addressable_shards[1].data.shape == (2, 3)
    np.testing.assert_array_equal(batch["label"], np.arange(16))


@pytest.mark.parametrize(
    "loss",
    [
        dict(name="supcon"),
        dict(name="simclr"),
        # The sharded loss of every option and loss is checked against one device in test_losses
        # (values and gradients); these two whole-run variants add little and run with -m slow.
        pytest.param(
            dict(name="supcon", chunk_size=8, denominator="one_positive", loss_type="in"), marks=pytest.mark.slow
        ),
        pytest.param(dict(name="triplet", margin=0.5), marks=pytest.mark.slow),
    ],
    ids=["supcon", "simclr", "supcon-chunked-options", "triplet"],
)
def test_one_and_eight_devices_give_the_same_losses(pretrain_config, tmp_path, loss):
    pretrain_config.loss.update(loss)
    one = pretrain.train_and_evaluate(
        pretrain_config, str(tmp_path / "one"), mesh=parallel.create_mesh(jax.devices()[:1])
    )
    eight = pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "eight"), mesh=parallel.create_mesh())
    assert (one["devices"], eight["devices"]) == (1, 8)
    losses_one = [m["loss"] for m in read_metrics(tmp_path / "one")]
    losses_eight = [m["loss"] for m in read_metrics(tmp_path / "eight")]
    assert len(losses_one) == 3
    np.testing.assert_allclose(losses_eight, losses_one, rtol=2e-5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_validate_and_plot_without_hanging(tmp_path):
    """Two processes x 2 CPU devices (gloo): the per-process input shares, the collective final
    embeddings (process 0 alone used to wait forever) and orbax saves across processes."""
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_worker.py")
    port, workdir = str(free_port()), str(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), port, workdir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [s["devices"] for s in summaries] == [4, 4]
    assert summaries[0]["final_loss"] == summaries[1]["final_loss"]
    assert summaries[0]["val/encoder/knn_top1"] == summaries[1]["val/encoder/knn_top1"]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert {"curves.png", "test_encoder_pca.png", "test_encoder_tsne.png"} <= set(
        os.listdir(os.path.join(workdir, "plots"))
    )
