"""PNG pictures of a run: 2-D embedding maps coloured by class, training curves, augmentation
and retrieval grids."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from absl import logging
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

PLOTS_DIR = "plots"
MIN_PCA_POINTS = 3  # a 2-D map of fewer points shows nothing (scikit-learn's PCA needs 2)
MIN_NEIGHBOUR_POINTS = 6  # t-SNE needs more points than its perplexity, which is at least 5 here


def _skipped(what: str, name: str, count: int, minimum: int) -> None:
    logging.warning("plots: no %s of %s embeddings: %d points, they need at least %d", what, name, count, minimum)


def _point_size(count: int) -> float:
    """Big dots for a few hundred points, fine ones for many thousands."""
    return float(np.clip(3000.0 / max(count, 1), 1.0, 20.0))


def _scatter(points: np.ndarray, labels: np.ndarray, title: str, path: str) -> str:
    fig = Figure(figsize=(7, 6), dpi=120)
    ax = fig.subplots()
    classes = np.unique(labels)
    cmap = matplotlib.colormaps.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo")
    for i, label in enumerate(classes):
        chosen = labels == label
        color = cmap(i % cmap.N) if len(classes) <= 20 else cmap(i / max(len(classes) - 1, 1))
        ax.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=_point_size(len(labels)),
            color=color,
            label=str(label),
            alpha=0.8,
            linewidths=0,
        )
    if len(classes) <= 20:
        ax.legend(
            title="class",
            markerscale=max(1.0, 30 / _point_size(len(labels))) ** 0.5,
            fontsize=8,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    ax.set_title(title)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    fig.tight_layout()
    fig.savefig(path)
    return path


def embedding_maps(
    embeddings: np.ndarray,
    labels: np.ndarray,
    directory: str,
    *,
    name: str = "test",
    seed: int = 0,
    max_points: int = 5000,
) -> list[str]:
    """PCA, t-SNE and (if umap-learn is installed) UMAP maps of `embeddings`; returns the paths.
    A split too small for a map (PCA needs `MIN_PCA_POINTS`, t-SNE and UMAP `MIN_NEIGHBOUR_POINTS`)
    does not get it, said in one logged line."""
    if len(labels) < MIN_PCA_POINTS:
        _skipped("embedding maps", name, len(labels), MIN_PCA_POINTS)
        return []
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    if len(labels) > max_points:
        keep = np.sort(rng.choice(len(labels), max_points, replace=False))
        embeddings, labels = embeddings[keep], labels[keep]
    embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    count = f"{len(labels):,} points"
    pca = PCA(n_components=2, random_state=seed)
    points = pca.fit_transform(embeddings)
    explained = 100 * pca.explained_variance_ratio_
    paths = [
        _scatter(
            points,
            labels,
            f"PCA of {name} embeddings ({count}; PC1 {explained[0]:.1f}%, PC2 {explained[1]:.1f}% of variance)",
            os.path.join(directory, f"{name}_pca.png"),
        )
    ]
    if len(labels) < MIN_NEIGHBOUR_POINTS:
        _skipped("t-SNE and UMAP maps", name, len(labels), MIN_NEIGHBOUR_POINTS)
        return paths
    perplexity = float(min(30.0, max(5.0, (len(labels) - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)
    paths.append(
        _scatter(points, labels, f"t-SNE of {name} embeddings ({count})", os.path.join(directory, f"{name}_tsne.png"))
    )
    try:
        import umap  # optional dependency
    except ImportError:
        return paths
    points = umap.UMAP(n_neighbors=min(15, len(labels) - 1), random_state=seed).fit_transform(embeddings)
    paths.append(
        _scatter(points, labels, f"UMAP of {name} embeddings ({count})", os.path.join(directory, f"{name}_umap.png"))
    )
    return paths


def training_curves(records: Sequence[dict], path: str, *, title: str = "") -> str | None:
    """Logged scalars against the step: one panel per scalar (loss, learning rate, ...) and one
    per metric family (`val/encoder/*`, `val/head/*`), whose members share the panel."""
    keys = [k for k in dict.fromkeys(k for r in records for k in r) if k not in ("step", "steps_per_s")]
    panels: dict[str, list[str]] = {}
    for key in keys:
        panels.setdefault(key.rsplit("/", 1)[0] if "/" in key else key, []).append(key)
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4.6 * columns, 3.4 * rows), dpi=110)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (panel, members) in zip(axes.flat, panels.items(), strict=False):
        series = {key: [(r["step"], r[key]) for r in records if key in r] for key in members}
        name = panel if len(members) > 1 else members[0]
        if all(len(points) == 1 for points in series.values()):  # logged once (validation at the end): bars
            names = [key.rsplit("/", 1)[-1] for key in members][::-1]
            values = [series[key][0][1] for key in members][::-1]
            ax.barh(names, values, color="tab:blue")
            for y, value in enumerate(values):
                ax.text(value, y, f" {value:.4g}", va="center", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{name} (step {series[members[0]][0][0]})")
            ax.grid(axis="x", alpha=0.3)
            continue
        for key, points in series.items():
            steps, values = zip(*points, strict=True)
            label = key.rsplit("/", 1)[-1] if len(members) > 1 else None
            ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        if len(members) > 1:
            ax.legend(fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.95) if title else None)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    return path


def augmentation_grid(
    originals: np.ndarray,
    views: np.ndarray,
    labels: np.ndarray,
    path: str,
    *,
    title: str,
    column_titles: Sequence[str],
) -> str:
    """One row per example: `originals` [N, H, W, 3] next to its `views` [N, V, H, W, 3] (floats in
    [0, 1]), each row labelled with its class; small images are shown enlarged, pixel for pixel."""
    rows, columns = views.shape[0], views.shape[1] + 1
    cell = 1.4
    fig = Figure(figsize=(cell * columns, cell * rows + 0.5), dpi=100)
    axes = fig.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        for column in range(columns):
            ax = axes[row, column]
            ax.imshow(originals[row] if column == 0 else views[row, column - 1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(column_titles[column], fontsize=9)
        axes[row, 0].set_ylabel(f"class {labels[row]}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def retrieval_grid(
    query_images: np.ndarray,
    query_labels: np.ndarray | None,
    match_images: np.ndarray,
    match_labels: np.ndarray | None,
    path: str,
    *,
    title: str,
    match_notes: np.ndarray | None = None,
) -> str:
    """One row per query: its image [Q, H, W, 3] (uint8) then its nearest gallery images
    [Q, K, H, W, 3], nearest first, each framed green when its class is the query's and red
    when not, with its class written under it; without labels (None) frames stay grey and
    `match_notes` [Q, K] (e.g. similarities) are written instead."""
    labelled = query_labels is not None and match_labels is not None
    rows, k = match_images.shape[:2]
    cell = 1.3
    fig = Figure(figsize=(cell * (k + 1) + 0.3, cell * rows + 0.6), dpi=100)
    axes = fig.subplots(rows, k + 1, squeeze=False)
    for row in range(rows):
        for column in range(k + 1):
            ax = axes[row, column]
            image = query_images[row] if column == 0 else match_images[row, column - 1]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("query" if column == 0 else f"#{column}", fontsize=8)
            if not labelled:
                if column and match_notes is not None:
                    ax.set_xlabel(str(match_notes[row, column - 1]), fontsize=7)
                continue
            if column == 0:
                ax.set_xlabel(f"query: {query_labels[row]}", fontsize=7)
                color = "black"
            else:
                right = match_labels[row, column - 1] == query_labels[row]
                color = "tab:green" if right else "tab:red"
                ax.set_xlabel(
                    f"{match_labels[row, column - 1]}" + ("" if right else " (wrong)"), fontsize=7, color=color
                )
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(1 if column == 0 else 3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path
