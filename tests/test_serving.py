"""Shipping a trained run: the `Embedder` (equal to the embed job), `jax-supcon-search` (equal to a
brute-force ranking, cached gallery index, grid PNG) and `jax-supcon-export` (SavedModel and
`jax.export` equal to the Embedder for two batch sizes), and their bad input."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import tiny
from PIL import Image

from jax_supcon import parallel
from jax_supcon.config import base_config
from jax_supcon.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny pretraining run (validated, so it keeps a `best`) with its embed job, and a tiny
    supervised run with EMA weights."""
    from configs import digits_ce, digits_supcon
    from jax_supcon.jobs import embed, pretrain, supervised

    root = tmp_path_factory.mktemp("serving")
    mesh = parallel.create_mesh(jax.devices()[:2])
    config = tiny(digits_supcon.get_config())
    config.eval_every_steps = 2
    pretrain.train_and_evaluate(config, str(root / "pre"), mesh=mesh)
    embed_config = base_config()
    embed_config.update(job="embed", pretrained_workdir=str(root / "pre"), eval_batch_size=64, plots=False)
    embed_config.checkpoint = "best"
    embed_config.data.image_size = 8
    embed.train_and_evaluate(embed_config, str(root / "embed"), mesh=mesh)
    ce = tiny(digits_ce.get_config())
    ce.ema_decay = 0.9
    supervised.train_and_evaluate(ce, str(root / "ce"), mesh=mesh)
    return root


def digits_test_images():
    data = base_config().data
    data.update(name="digits", image_size=8)
    return sources.load_source(data, "test")


def test_import_jax_supcon_stays_light_and_gives_the_embedder_on_demand():
    code = (
        "import sys, jax_supcon; assert 'tensorflow' not in sys.modules and 'jax' not in sys.modules; "
        "from jax_supcon import Embedder; print(Embedder.__name__)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "Embedder\n"
    )


def test_the_embedder_gives_the_embed_jobs_numbers(runs):
    from jax_supcon import Embedder

    embedder = Embedder.from_workdir(str(runs / "pre"))  # default: the run's best checkpoint, as embed's
    with open(runs / "embed" / "pretrained.json") as f:
        assert embedder.step == json.load(f)["step"]
    expected = np.load(runs / "embed" / "embeddings_test.npz")
    test = digits_test_images()
    for batch_size in (64, 100):  # batches that are and are not a multiple of the 8 devices
        out = embedder.embed(test.images, batch_size=batch_size)
        assert set(out) == {"encoder", "projection"}
        np.testing.assert_allclose(out["encoder"], expected["encoder"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["projection"], expected["projection"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["projection"], axis=1), 1.0, rtol=1e-5)
    empty = embedder.embed(test.images[:0])
    assert {name: value.shape for name, value in empty.items()} == {
        name: (0, expected[name].shape[1]) for name in ("encoder", "projection")
    }
    three = embedder.embed(test.images[:3])
    np.testing.assert_allclose(three["encoder"], expected["encoder"][:3], rtol=1e-5, atol=1e-5)
    larger = np.repeat(np.repeat(test.images[:2], 2, axis=1), 2, axis=2)  # 16x16: resized to the run's 8x8
    assert embedder.embed(larger)["encoder"].shape == (2, expected["encoder"].shape[1])


def test_the_embedder_restores_supervised_runs_their_ema_and_reads_files(runs, tmp_path):
    from jax_supcon import Embedder

    trained = Embedder.from_workdir(str(runs / "ce"), checkpoint="latest")
    averaged = Embedder.from_workdir(str(runs / "ce"), use_ema=True)
    images = digits_test_images().images[:5]
    out, ema = trained.embed(images), averaged.embed(images)
    assert set(out) == {"encoder"} and out["encoder"].shape[0] == 5
    assert not np.allclose(out["encoder"], ema["encoder"])
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.repeat(np.repeat(image, 4, 0), 4, 1)).save(paths[-1])
    assert trained.embed(paths)["encoder"].shape == (5, out["encoder"].shape[1])
    one = trained.embed(paths[2])  # a single path, as a str or a path object
    np.testing.assert_array_equal(one["encoder"], trained.embed(paths[2:3])["encoder"])
    np.testing.assert_array_equal(trained.embed(tmp_path / "2.png")["encoder"], one["encoder"])
    for nothing in (images[:0], [], np.zeros((0, 16, 16, 3), np.uint8)):  # no images: zero rows, full width
        empty = trained.embed(nothing)
        assert empty["encoder"].shape == (0, out["encoder"].shape[1]) and empty["encoder"].dtype == np.float32
    with pytest.raises(ValueError, match=re.escape(f"image {str(tmp_path)!r} is a directory; pass its image files")):
        trained.embed(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image {str(tmp_path / 'broken.png')!r}")):
        trained.embed([str(tmp_path / "broken.png")])
    with pytest.raises(ValueError, match=r"images must be uint8 \[N, H, W, 3\]"):
        trained.embed(images.astype(np.float32))
    with pytest.raises(ValueError, match="kept no EMA weights"):
        Embedder.from_workdir(str(runs / "pre"), use_ema=True)
    with pytest.raises(ValueError, match="holds a 'embed' run; an Embedder restores one of"):
        Embedder.from_workdir(str(runs / "embed"))


def write_class_folders(root, images, labels):
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        os.makedirs(root / str(label), exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i:04d}.png")


def test_search_ranks_like_brute_force_caches_the_gallery_and_draws_the_grid(runs, tmp_path):
    from jax_supcon import Embedder
    from jax_supcon.cli import search

    test = digits_test_images()
    write_class_folders(tmp_path / "gallery", test.images[20:], test.labels[20:])
    write_class_folders(tmp_path / "queries", test.images[:20], test.labels[:20])
    out = str(tmp_path / "out")
    summary = search.search(str(runs / "pre"), str(tmp_path / "gallery"), str(tmp_path / "queries"), k=4, out=out)
    assert not summary["gallery_index_cached"] and os.path.exists(os.path.join(out, "grid.png"))
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)["results"]
    embedder = Embedder.from_workdir(str(runs / "pre"))
    gallery_paths, _, _ = search.list_images(str(tmp_path / "gallery"), "gallery")
    gallery = embedder.embed(gallery_paths)["encoder"]
    queries = embedder.embed([r["query"] for r in results])["encoder"]
    unit_g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for row, result in enumerate(results):
        # The four most similar gallery images, in order. The search embeds in other batches than
        # this brute force, so near-ties (within float32 rounding) may come in either order.
        similarity = unit_g @ unit_q[row]
        found = [gallery_paths.index(path) for path in result["neighbours"]]
        np.testing.assert_allclose(similarity[found], np.sort(similarity)[::-1][:4], atol=1e-5)
        np.testing.assert_allclose(result["similarities"], similarity[found], atol=1e-5)
        assert len(set(found)) == 4 and result["label"] == result["query"].split(os.sep)[-2]
    hits = np.mean([r["neighbour_labels"][0] == r["label"] for r in results])
    assert summary["precision_at_1"] == pytest.approx(hits)
    again = search.search(str(runs / "pre"), str(tmp_path / "gallery"), str(tmp_path / "queries"), k=4, out=out)
    assert again["gallery_index_cached"]
    os.utime(gallery_paths[0], ns=(1, 1))  # a gallery file changed: the index is rebuilt
    assert not search.search(str(runs / "pre"), str(tmp_path / "gallery"), str(tmp_path / "queries"), out=out)[
        "gallery_index_cached"
    ]


def test_search_skips_hidden_files_never_lets_a_query_find_itself_and_says_why_metrics_are_absent(runs, tmp_path):
    from jax_supcon.cli import search

    test = digits_test_images()
    gallery, queries = tmp_path / "gallery", tmp_path / "queries"
    write_class_folders(gallery, test.images[:60], test.labels[:60])
    write_class_folders(queries, test.images[:10], test.labels[:10])  # the same files' bytes: each in the gallery
    hidden = gallery / "0" / ".ipynb_checkpoints"
    hidden.mkdir()
    Image.fromarray(test.images[0]).save(hidden / "x.png")
    Image.fromarray(test.images[1]).save(gallery / "0" / "._resource_fork.png")
    paths, labels, why = search.list_images(str(gallery), "gallery")
    assert len(paths) == 60 and labels is not None and why == ""
    summary = search.search(str(runs / "pre"), str(gallery), str(queries), k=3, out=str(tmp_path / "out"), grid_rows=0)
    assert summary["queries_in_gallery"] == 10 and "precision_at_1" in summary and "no_metrics" not in summary
    with open(tmp_path / "out" / "results.json") as f:
        for result in json.load(f)["results"]:
            assert len(result["neighbours"]) == 3
            own = os.path.join(str(gallery), *result["query"].split(os.sep)[-2:])
            assert own not in result["neighbours"], result
    Image.fromarray(test.images[70]).save(gallery / "stray.png")  # one image outside the class folders
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jax_supcon.search",
            f"--workdir={runs / 'pre'}",
            f"--gallery={gallery}",
            f"--queries={queries}",
            f"--out={tmp_path / 'out2'}",
            "--grid_rows=0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "jax-supcon-search: no precision or recall: --gallery has images outside class folders "
        f"({str(gallery / 'stray.png')!r} is directly in it)"
    )
    summary = json.loads(result.stdout)
    assert "precision_at_1" not in summary and summary["no_metrics"].startswith("--gallery has images outside")


def test_search_of_an_empty_gallery_is_a_one_line_error_and_exit_2(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jax_supcon.search",
            f"--workdir={runs / 'pre'}",
            f"--gallery={tmp_path / 'empty'}",
            f"--queries={tmp_path / 'empty'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"jax-supcon-search: error: --gallery={str(tmp_path / 'empty')!r} has no images "
        "(.jpg, .jpeg, .png, .gif, .bmp, .webp)"
    )
    assert not os.path.exists(runs / "pre" / "search")


def test_export_gives_the_embedders_numbers_from_the_saved_model_and_the_jax_export(runs, tmp_path):
    import tensorflow as tf
    from jax import export as jax_export

    from jax_supcon import Embedder
    from jax_supcon.cli import export

    out = str(tmp_path / "export")
    info = export.export(str(runs / "pre"), out)
    assert (
        info["saved_model_bytes"] > 0 and info["jax_export_bytes"] > 0 and info["outputs"] == ["encoder", "projection"]
    )
    embedder = Embedder.from_workdir(str(runs / "pre"))
    served = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"]
    with open(os.path.join(out, "embedder.jax_export"), "rb") as f:
        exported = jax_export.deserialize(f.read())
    images = digits_test_images().images
    for count in (3, 40):
        expected = embedder.embed(images[:count])
        from_tf = served(images=tf.constant(images[:count]))
        from_jax = exported.call(images[:count])
        for name in ("encoder", "projection"):
            np.testing.assert_allclose(from_tf[name].numpy(), expected[name], atol=1e-4)
            np.testing.assert_allclose(np.asarray(from_jax[name]), expected[name], atol=1e-4)
    with pytest.raises(ValueError, match="exists and is not an empty folder; nothing is overwritten"):
        export.export(str(runs / "pre"), out)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=re.escape(f"is under {str(tmp_path / 'file')!r}, which is a file")):
        export.export(str(runs / "pre"), str(tmp_path / "file" / "export"))


def test_of_two_exports_to_one_folder_the_second_gets_one_line_and_leaves_nothing(runs, tmp_path, monkeypatch):
    """Each export stages in a folder of its own and publishes with one rename that refuses a
    folder another export filled meanwhile (simulated: it fills `out` while this one writes)."""
    from jax_supcon.cli import export

    out = tmp_path / "shared"
    write = export._write

    def write_while_another_export_finishes(staging, *args):
        info = write(staging, *args)
        out.mkdir()
        (out / "export.json").write_text("{}")  # the other export's
        return info

    monkeypatch.setattr(export, "_write", write_while_another_export_finishes)
    with pytest.raises(ValueError, match="was filled by another export while this one ran; nothing is overwritten"):
        export.export(str(runs / "pre"), str(out))
    assert sorted(os.listdir(tmp_path)) == ["shared"] and os.listdir(out) == ["export.json"]


def test_reading_a_run_that_is_still_training(runs, tmp_path, monkeypatch, capsys):
    """A checkpoint deleted by the run's own rotation while it is read: `latest` takes the newest
    again, another choice is one line. A stage 2 started from an unfinished stage 1 says so and
    records it; a lock file left by a killed process is not a running run."""
    import shutil
    import socket

    from jax_supcon import Embedder
    from jax_supcon.checkpoint import Checkpointer
    from jax_supcon.jobs import embed
    from jax_supcon.train import lock
    from jax_supcon.train import workdir as run_dir

    live = tmp_path / "live"
    shutil.copytree(runs / "pre", live)
    steps = Checkpointer(str(live), create=False).all_steps()
    assert len(steps) >= 2, steps
    restore = Checkpointer.restore
    rotated = []

    def rotate_then_restore(self, target, step=None):
        if not rotated:  # the run saves a newer step and deletes this one just as it is read
            rotated.append(step)
            shutil.rmtree(os.path.join(self.directory, str(step)))
        return restore(self, target, step)

    monkeypatch.setattr(Checkpointer, "restore", rotate_then_restore)
    embedder = Embedder.from_workdir(str(live), checkpoint="latest")
    assert rotated == [steps[-1]] and embedder.step == steps[-2]
    rotated.clear()
    with pytest.raises(ValueError, match=rf"checkpoint step {steps[-2]} in .* was deleted while it was being read"):
        Embedder.from_workdir(str(live), checkpoint=str(steps[-2]))
    monkeypatch.setattr(Checkpointer, "restore", restore)

    shutil.rmtree(live)
    shutil.copytree(runs / "pre", live)
    lock_file = live / lock.LOCK_FILE
    lock_file.write_text(f"host {socket.gethostname()} pid {os.getpid()} (since now)")
    assert lock.running_holder(str(live)) == lock_file.read_text()
    (live / run_dir.SUMMARY_FILE).unlink()  # stage 1 has not finished
    capsys.readouterr()
    config = base_config()
    config.update(job="embed", pretrained_workdir=str(live), eval_batch_size=64, plots=False)
    config.data.image_size = 8
    embed.train_and_evaluate(config, str(tmp_path / "embed"), mesh=parallel.create_mesh(jax.devices()[:2]))
    note = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert note == [
        f"jax-supcon: note: the stage-1 run in {str(live)!r} is still training ({lock_file.read_text()}): "
        f"using its checkpoint at step {steps[-1]}, not a finished run's"
    ]
    with open(tmp_path / "embed" / "pretrained.json") as f:
        assert json.load(f)["stage1_finished"] is False
    lock_file.write_text(f"host {socket.gethostname()} pid 999999999 (since then)")  # killed: its pid is gone
    assert lock.running_holder(str(live)) is None
    lock_file.write_text("host elsewhere pid 12 (since then)")  # another host's: taken at its word
    assert lock.running_holder(str(live)) == "host elsewhere pid 12 (since then)"
