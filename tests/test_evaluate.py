"""kNN, retrieval and clustering metrics against brute-force NumPy references; pictures; report;
validation during pretraining and the embed job."""

import json
import math
import os

import jax
import numpy as np
import pytest
from conftest import read_metrics
from PIL import Image

from jax_supcon import parallel
from jax_supcon.evaluate import knn, retrieval
from jax_supcon.jobs import embed, pretrain
from jax_supcon.report import markdown as report
from jax_supcon.report import plots as visualize
from jax_supcon.train import pretrained as stage_one

# ----------------------------------------------------------------------------- references


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def ranking(similarities, exclude):
    """Reference indices by decreasing similarity, ties to the lower index, `exclude` left out."""
    order = sorted(range(len(similarities)), key=lambda j: (-similarities[j], j))
    return [j for j in order if j != exclude]


def reference_retrieval(queries, labels, gallery=None, gallery_labels=None, recall_at=(1, 2, 4, 8)):
    self_retrieval = gallery is None
    if self_retrieval:
        gallery, gallery_labels = queries, labels
    sims = cosine(queries, gallery)
    p1, rp, mapr = [], [], []
    recall = {k: [] for k in recall_at}
    for i, label in enumerate(labels):
        ranked = ranking(sims[i], i if self_retrieval else None)
        relevant = [gallery_labels[j] == label for j in ranked]
        r = sum(relevant)
        if r == 0:
            continue
        p1.append(float(relevant[0]))
        rp.append(sum(relevant[:r]) / r)
        mapr.append(sum(sum(relevant[: k + 1]) / (k + 1) for k in range(r) if relevant[k]) / r)
        for k in recall_at:  # Recall@K: a match among the K nearest
            recall[k].append(float(any(relevant[:k])))
    return {
        "precision_at_1": np.mean(p1),
        "r_precision": np.mean(rp),
        "mean_average_precision_at_r": np.mean(mapr),
        **{f"recall_at_{k}": np.mean(values) for k, values in recall.items()},
    }


def reference_knn(queries, gallery, gallery_labels, k, temperature, num_classes):
    sims = cosine(queries, gallery)
    predictions = []
    for row in sims:
        votes = np.zeros(num_classes)
        for j in ranking(row, None)[:k]:
            votes[gallery_labels[j]] += math.exp(row[j] / temperature)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


def entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return -(p * np.log(p)).sum()


def reference_nmi_ami(labels, clusters):
    """NMI (arithmetic mean normalisation) and AMI (Vinh et al. 2010, exact hypergeometric EMI)."""
    classes, label_ids = np.unique(labels, return_inverse=True)
    groups, cluster_ids = np.unique(clusters, return_inverse=True)
    n = len(labels)
    table = np.zeros((len(classes), len(groups)))
    for a, b in zip(label_ids, cluster_ids, strict=True):
        table[a, b] += 1
    a, b = table.sum(1), table.sum(0)
    mi = sum(
        table[i, j] / n * math.log(n * table[i, j] / (a[i] * b[j]))
        for i in range(len(a))
        for j in range(len(b))
        if table[i, j] > 0
    )
    h_u, h_v = entropy(a), entropy(b)
    emi = 0.0
    for ai in a:
        for bj in b:
            for nij in range(max(1, int(ai + bj - n)), int(min(ai, bj)) + 1):
                log_p = (
                    math.lgamma(ai + 1)
                    + math.lgamma(bj + 1)
                    + math.lgamma(n - ai + 1)
                    + math.lgamma(n - bj + 1)
                    - math.lgamma(n + 1)
                    - math.lgamma(nij + 1)
                    - math.lgamma(ai - nij + 1)
                    - math.lgamma(bj - nij + 1)
                    - math.lgamma(n - ai - bj + nij + 1)
                )
                emi += nij / n * math.log(n * nij / (ai * bj)) * math.exp(log_p)
    mean_h = (h_u + h_v) / 2
    return {"nmi": mi / mean_h, "ami": (mi - emi) / (mean_h - emi)}


# ----------------------------------------------------------------------------- metrics


def test_retrieval_matches_brute_force_with_ties_and_a_singleton_class():
    rng = np.random.default_rng(0)
    # Points on a coarse grid of directions: many exact cosine ties.
    embeddings = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)
    embeddings[embeddings.sum(1) == 0] += 1.0
    labels = rng.integers(0, 4, 40)
    labels[7] = 9  # a class with a single member: no match once self is excluded
    got = retrieval.retrieval_metrics(embeddings, labels)
    expected = reference_retrieval(embeddings, labels)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["queries_without_match"] == 1


def test_retrieval_against_a_separate_reference_with_absent_labels():
    rng = np.random.default_rng(1)
    gallery, gallery_labels = rng.normal(size=(50, 8)), rng.integers(0, 5, 50)
    queries, labels = rng.normal(size=(20, 8)), rng.integers(0, 7, 20)  # labels 5 and 6 absent from the gallery
    got = retrieval.retrieval_metrics(queries, labels, reference=gallery, reference_labels=gallery_labels)
    expected = reference_retrieval(queries, labels, gallery, gallery_labels)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["queries_without_match"] == int(np.isin(labels, [5, 6]).sum()) > 0


@pytest.mark.parametrize("recall_at", [(1, 3, 5), (2, 40, 100)])
def test_recall_at_k_matches_brute_force_with_ties_singletons_and_k_beyond_the_gallery(recall_at):
    rng = np.random.default_rng(4)
    embeddings = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)  # many exact cosine ties
    embeddings[embeddings.sum(1) == 0] += 1.0
    labels = rng.integers(0, 6, 40)
    labels[[3, 11]] = [8, 9]  # singletons: no match once self is excluded
    got = retrieval.retrieval_metrics(embeddings, labels, recall_at=recall_at)
    expected = reference_retrieval(embeddings, labels, recall_at=recall_at)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    gallery, gallery_labels = rng.normal(size=(30, 3)), rng.integers(0, 7, 30)
    got = retrieval.retrieval_metrics(
        embeddings, labels, reference=gallery, reference_labels=gallery_labels, recall_at=recall_at
    )
    expected = reference_retrieval(embeddings, labels, gallery, gallery_labels, recall_at=recall_at)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    values = [got[f"recall_at_{k}"] for k in recall_at]
    assert values == sorted(values) and (recall_at[-1] < 30 or values[-1] == 1.0)  # K >= gallery: every match
    with pytest.raises(ValueError, match=r"recall_at=\(0, 4\) must be positive integers"):
        retrieval.retrieval_metrics(embeddings, labels, recall_at=(0, 4))


def test_perfectly_separated_embeddings_score_one_everywhere():
    labels = np.repeat(np.arange(4), 10)
    embeddings = np.eye(4)[labels] + 0.01 * np.random.default_rng(2).normal(size=(40, 4))
    got = retrieval.retrieval_metrics(embeddings, labels)
    for key in ("precision_at_1", "r_precision", "mean_average_precision_at_r", "nmi", "ami"):
        assert got[key] == pytest.approx(1.0), key


def test_undefined_retrieval_metrics_are_none_not_zero():
    one = retrieval.retrieval_metrics(np.ones((1, 4)), np.array([3]))  # one query: nothing to retrieve or cluster
    assert {k: one[k] for k in ("precision_at_1", "r_precision", "mean_average_precision_at_r", "nmi", "ami")} == {
        "precision_at_1": None,
        "r_precision": None,
        "mean_average_precision_at_r": None,
        "nmi": None,
        "ami": None,
    }
    assert one["queries_without_match"] == 1
    every_class_once = retrieval.retrieval_metrics(np.eye(3), np.arange(3))
    assert every_class_once["precision_at_1"] is None and every_class_once["nmi"] is not None


def test_cluster_scores_match_the_contingency_table_formulas():
    rng = np.random.default_rng(3)
    labels, clusters = rng.integers(0, 4, 60), rng.integers(0, 5, 60)
    clusters[:20] = labels[:20]  # partly informative
    got = retrieval.cluster_scores(labels, clusters)
    expected = reference_nmi_ami(labels, clusters)
    assert got["nmi"] == pytest.approx(expected["nmi"], rel=1e-9)
    assert got["ami"] == pytest.approx(expected["ami"], rel=1e-9)


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (5, 0.07), (200, 0.1)])
def test_knn_matches_brute_force(k, temperature):
    rng = np.random.default_rng(4)
    gallery, gallery_labels = rng.normal(size=(60, 6)), rng.integers(0, 5, 60)
    queries = rng.normal(size=(25, 6))
    got = knn.knn_predict(queries, gallery, gallery_labels, k=k, temperature=temperature, num_classes=5, block_size=7)
    np.testing.assert_array_equal(got, reference_knn(queries, gallery, gallery_labels, min(k, 60), temperature, 5))


def test_knn_on_separable_and_on_random_data():
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(10, 16)) * 5
    train_labels, test_labels = rng.integers(0, 10, 500), rng.integers(0, 10, 200)
    train = centers[train_labels] + rng.normal(size=(500, 16))
    test = centers[test_labels] + rng.normal(size=(200, 16))
    assert knn.knn_accuracy(test, test_labels, train, train_labels, k=20) == 1.0
    random_accuracy = knn.knn_accuracy(
        rng.normal(size=(400, 16)), rng.integers(0, 10, 400), rng.normal(size=(500, 16)), rng.integers(0, 10, 500), k=20
    )
    assert random_accuracy < 0.2  # chance is 0.1


def test_knn_rejects_bad_parameters():
    with pytest.raises(ValueError, match="knn temperature=0"):
        knn.knn_predict(np.ones((2, 2)), np.ones((2, 2)), np.zeros(2, int), temperature=0)


# ----------------------------------------------------------------------------- pictures and report


def assert_png(path):
    assert os.path.getsize(path) > 5000
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 300


def test_embedding_maps_and_curves_are_written(tmp_path):
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(3), 30)
    paths = visualize.embedding_maps(np.eye(3)[labels] + 0.1 * rng.normal(size=(90, 3)), labels, str(tmp_path))
    assert [os.path.basename(p) for p in paths[:2]] == ["test_pca.png", "test_tsne.png"]
    # Too few points for t-SNE (its perplexity is at least 5), then for any map: skipped, not an error
    assert visualize.embedding_maps(np.eye(4), np.arange(4), str(tmp_path / "four")) == [
        str(tmp_path / "four" / "test_pca.png")
    ]
    assert visualize.embedding_maps(np.eye(2), np.arange(2), str(tmp_path / "two")) == []
    curves = visualize.training_curves(
        [{"step": s, "loss": 1 / s, "val/encoder/knn_top1": s / 10} for s in range(1, 5)], str(tmp_path / "c.png")
    )
    once = visualize.training_curves(  # validation logged once, at the end: drawn as bars
        [{"step": s, "loss": 1 / s} for s in range(1, 5)] + [{"step": 4, "val/encoder/knn_top1": 0.9}],
        str(tmp_path / "once.png"),
    )
    for path in paths + [curves, once]:
        assert_png(path)


def test_pretraining_validates_keeps_the_best_checkpoint_and_reports(pretrain_config, tmp_path):
    pretrain_config.update(
        dict(total_steps=4, eval_every_steps=2, checkpoint_every_steps=2, keep_checkpoints=1, plots=True)
    )
    mesh = parallel.create_mesh(jax.devices()[:2])
    workdir = str(tmp_path / "pre")
    summary = pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    validated = [r for r in read_metrics(workdir) if "val/encoder/knn_top1" in r]
    assert [r["step"] for r in validated] == [2, 4]
    assert {"val/head/knn_top1", "val/encoder/mean_average_precision_at_r", "val/head/ami"} <= set(validated[0])
    assert summary["val/encoder/knn_top1"] == validated[-1]["val/encoder/knn_top1"]
    best = max(validated, key=lambda r: (r["val/encoder/knn_top1"], r["step"]))["step"]
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == sorted({best, 4})
    for name in ("curves.png", "test_encoder_pca.png", "test_encoder_tsne.png"):
        assert_png(os.path.join(workdir, "plots", name))
    with open(os.path.join(workdir, report.REPORT_FILE)) as f:
        text = f.read()
    assert "val/encoder/knn_top1" in text and "![test_encoder_tsne](plots/test_encoder_tsne.png)" in text

    from configs import digits_embed

    with open(os.path.join(workdir, "config.json")) as f:
        embed_config = json.load(f)
    config = digits_embed.get_config()
    config.data.image_size = embed_config["data"]["image_size"]
    config.pretrained_workdir = workdir
    config.eval_batch_size = 64
    config.plots = False
    out = embed.train_and_evaluate(config, str(tmp_path / "embed"), mesh=mesh)
    assert out["pretrained_step"] == best and out["examples"] == 360
    arrays = np.load(out["embeddings"])
    assert arrays["encoder"].shape == (360, 16) and arrays["projection"].shape == (360, 8)
    np.testing.assert_array_equal(arrays["ids"], np.arange(360))
    np.testing.assert_allclose(np.linalg.norm(arrays["projection"], axis=1), 1.0, rtol=1e-5)

    with pytest.raises(ValueError, match=r"checkpoint='3'; allowed: 'latest', 'best' or one of the saved steps"):
        stage_one.restore_encoder(workdir, mesh, "3")


def _tiny_folder(root, test_images):
    """3 training classes of 12 images, and `test_images` [(class, count)] in the test split."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", [(c, 12) for c in range(3)]), ("test", test_images)):
        for label, count in counts:
            os.makedirs(root / split / f"c{label}", exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                pixels[..., label] = 255
                Image.fromarray(pixels).save(root / split / f"c{label}" / f"{i}.png")


def test_a_one_image_test_split_skips_what_it_cannot_define_and_the_run_finishes(pretrain_config, tmp_path, caplog):
    """No retrieval or clustering metric (absent, not 0) and no map, each said in a logged line;
    summary.json and report.md are written, and a restart reports them."""
    _tiny_folder(tmp_path / "data", [(0, 1)])
    pretrain_config.data.name = f"folder:{tmp_path / 'data'}"
    pretrain_config.update(dict(total_steps=2, eval_every_steps=2, plots=True, batch_size=8))
    workdir = str(tmp_path / "run")
    mesh = parallel.create_mesh(jax.devices()[:2])
    with caplog.at_level("WARNING"):
        summary = pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    validated = [r for r in read_metrics(workdir) if "val/encoder/knn_top1" in r]
    assert len(validated) == 1 and not any(value is None for value in validated[0].values())
    assert not any(name in key for key in validated[0] for name in ("precision", "nmi", "ami"))
    assert summary["val/encoder/knn_top1"] == validated[0]["val/encoder/knn_top1"]
    assert not any(name.startswith("test_") for name in os.listdir(os.path.join(workdir, "plots")))
    assert "plots: no embedding maps of test_encoder embeddings: 1 points, they need at least 3" in caplog.text
    assert "undefined on this test split (1 images, 1 classes, 1 without another image" in caplog.text
    assert os.path.exists(os.path.join(workdir, report.REPORT_FILE))
    again = pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    assert again["val/encoder/knn_top1"] == summary["val/encoder/knn_top1"]


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match=r"reference must be \[M, 3\] and reference_labels \[M\]"):
        retrieval.retrieval_metrics(
            np.ones((4, 3)), np.zeros(4), reference=np.ones((5, 2)), reference_labels=np.zeros(5)
        )
    with pytest.raises(ValueError, match="knn needs at least one reference item besides the query"):
        knn.knn_predict(np.ones((1, 2)), np.ones((1, 2)), np.zeros(1, int), exclude_self=True)


def _embedded(rng, *, gallery=None, probe=None):
    from jax_supcon.evaluate import evaluators

    def space(n):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    labels = np.repeat(np.arange(3), 4)
    queries = {"encoder": space(12), "projection": space(12), "labels": labels}
    reference = {"encoder": space(30), "projection": space(30), "labels": np.repeat(np.arange(3), 10)}
    return evaluators.Embedded(
        queries=queries,
        gallery=gallery or (lambda: reference),
        seen=lambda: queries,
        probe=probe or (lambda: None),
        num_classes=3,
    )


def test_evaluators_are_chosen_by_config_and_compute_only_what_they_need(pretrain_config):
    from jax_supcon.evaluate import evaluators

    config = pretrain_config
    assert evaluators.selected(config, open_set=False) == ("knn", "retrieval", "probe")
    assert evaluators.selected(config, open_set=True) == ("open_set", "probe")
    rng = np.random.default_rng(0)

    def no_gallery():
        raise AssertionError("retrieval alone never embeds the training split")

    config.eval.evaluators = "retrieval"
    metrics = evaluators.evaluate(config, _embedded(rng, gallery=no_gallery), open_set=False)
    assert set(metrics) == set(evaluators.metric_names(config, open_set=False)) and "val/encoder/r_precision" in metrics
    config.eval.evaluators = "knn,probe"
    kernel = np.eye(4, 3, dtype=np.float32)
    metrics = evaluators.evaluate(
        config, _embedded(rng, probe=lambda: {"kernel": kernel, "bias": np.zeros(3)}), open_set=False
    )
    assert set(metrics) == {"val/encoder/knn_top1", "val/head/knn_top1", "val/probe_top1"}
    for spec, message in (
        ("knn,recall", r"names 'recall'; allowed: 'auto' or some of \('knn', 'retrieval', 'open_set', 'probe'"),
        (" , ", r"names no evaluator"),
    ):
        config.eval.evaluators = spec
        with pytest.raises(ValueError, match=message):
            evaluators.selected(config, open_set=False)
    config.eval.evaluators = "knn"
    with pytest.raises(ValueError, match=r"'knn' does not apply to a run with held-out classes"):
        evaluators.selected(config, open_set=True)


def test_a_registered_evaluator_is_a_plug_in_and_best_metric_must_be_logged(pretrain_config):
    from jax_supcon.config import validate_config
    from jax_supcon.evaluate import evaluators

    def mean_norm(embedded, config):
        return {"val/encoder/mean_norm": float(np.linalg.norm(embedded.queries["encoder"], axis=1).mean())}

    evaluators.register("mean_norm", evaluators.Evaluator(mean_norm, lambda config: ("val/encoder/mean_norm",)))
    try:
        config = pretrain_config
        config.eval.evaluators = "retrieval,mean_norm"
        config.eval_every_steps = 2
        metrics = evaluators.evaluate(config, _embedded(np.random.default_rng(1)), open_set=False)
        assert metrics["val/encoder/mean_norm"] == pytest.approx(1.0)
        with pytest.raises(ValueError, match=r"best_metric='auto' \(val/encoder/knn_top1\) is not logged by"):
            validate_config(config)
        config.best_metric = "val/encoder/mean_average_precision_at_r"
        validate_config(config)
    finally:
        del evaluators.EVALUATORS["mean_norm"]


def test_pretraining_logs_only_the_configured_evaluators(pretrain_config, tmp_path):
    pretrain_config.update(dict(total_steps=2, eval_every_steps=2, best_metric="val/encoder/r_precision"))
    pretrain_config.eval.evaluators = "retrieval"
    workdir = str(tmp_path / "pre")
    summary = pretrain.train_and_evaluate(pretrain_config, workdir, mesh=parallel.create_mesh(jax.devices()[:2]))
    (validated,) = [r for r in read_metrics(workdir) if "val/encoder/r_precision" in r]
    assert not any("knn" in key or "probe" in key for key in validated) and "val/head/ami" in validated
    assert summary["val/encoder/r_precision"] == validated["val/encoder/r_precision"]
