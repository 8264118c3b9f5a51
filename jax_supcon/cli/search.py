"""Search a folder of images with a trained embedding: what a user runs to see whether it does the job.

    jax-supcon-search --workdir=DIR --gallery=FOLDER --queries=FOLDER [--k=5] [--out=DIR]
        [--checkpoint=best|latest|STEP] [--space=encoder|projection]      (or python -m jax_supcon.search)

The gallery is embedded once and cached as `OUT/gallery_index.npz`, reused while the run's
checkpoint and the gallery's files (names, sizes, modification times) are unchanged. Each query's
k nearest gallery images (cosine) are found on the device in blocks. OUT (default DIR/search/)
gets `results.json` (per query: its path, the neighbours' paths and similarities, and the classes
where images sit in class folders, `FOLDER/<class>/...`, with precision@1 and recall@k over the
queries) and `grid.png` (queries and their neighbours, marked right or wrong when classes exist).
A query whose file (or an identical copy) is in the gallery never retrieves it: the summary counts
such queries (`queries_in_gallery`). Hidden files and folders are skipped; images are what the
folder data sets read (JPEG, PNG, GIF, BMP, WEBP).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from absl import app, flags

from jax_supcon import cli

INDEX_FILE = "gallery_index.npz"


def define_flags(values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """The command's flags, defined into `values` (`sys_argv`: unused; every command takes it)."""
    flags.DEFINE_string("workdir", None, "A pretrain, finetune or supervised workdir.", flag_values=values)
    flags.DEFINE_string(
        "gallery", None, "Folder of gallery images (class sub-folders give labels).", flag_values=values
    )
    flags.DEFINE_string("queries", None, "Folder of query images (class sub-folders give labels).", flag_values=values)
    flags.DEFINE_integer("k", 5, "Neighbours per query.", flag_values=values)
    flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/search).", flag_values=values)
    flags.DEFINE_string(
        "checkpoint", None, "best, latest or a step (default: best where kept, else latest).", flag_values=values
    )
    flags.DEFINE_enum(
        "space", "encoder", ["encoder", "projection"], "Which embedding to search with.", flag_values=values
    )
    flags.DEFINE_integer("grid_rows", 8, "Queries shown in grid.png.", flag_values=values)
    flags.mark_flags_as_required(["workdir", "gallery", "queries"], flag_values=values)


def list_images(folder: str, flag: str) -> tuple[list[str], list[str] | None, str]:
    """(sorted image paths under `folder`, their class folder names or None, why there are none):
    classes exist when every image sits in a first-level sub-folder. Hidden files and folders are
    skipped and the extensions are the folder data sets' (`folders.is_image_file`). No image at all
    is a one-line error."""
    from jax_supcon.data.folders import IMAGE_EXTENSIONS, is_hidden, is_image_file

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--{flag}={folder!r} is not a folder")
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        paths.extend(os.path.join(root, name) for name in files if is_image_file(name))
    paths.sort()
    if not paths:
        raise ValueError(f"--{flag}={folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    parts = [os.path.relpath(path, folder).split(os.sep) for path in paths]
    stray = next((path for path, p in zip(paths, parts, strict=True) if len(p) != 2), None)
    if stray is None:
        return paths, [p[0] for p in parts], ""
    where = "directly in" if len(os.path.relpath(stray, folder).split(os.sep)) == 1 else "nested deeper in"
    return paths, None, f"--{flag} has images outside class folders ({stray!r} is {where} it)"


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def identical_gallery_files(query_paths: list[str], gallery_paths: list[str]) -> list[list[int]]:
    """For each query, the gallery images that are the same file or have the same bytes (SHA-256;
    only gallery files as long as some query are read): a query must not retrieve itself."""
    sizes = {os.path.getsize(path) for path in query_paths}
    by_digest: dict[str, list[int]] = {}
    for index, path in enumerate(gallery_paths):
        if os.path.getsize(path) in sizes:
            by_digest.setdefault(_file_digest(path), []).append(index)
    return [by_digest.get(_file_digest(path), []) for path in query_paths]


def drop_identical(neighbours, similarity, identical: list[list[int]], k: int) -> tuple:
    """The first `k` neighbours of each query that are not in its `identical` gallery images (the
    search asked for `k` plus the most any query has)."""
    import numpy as np

    keep = np.array([[i not in set(same) for i in row] for row, same in zip(neighbours, identical, strict=True)])
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept ones first, in rank order
    return np.take_along_axis(neighbours, order, 1), np.take_along_axis(similarity, order, 1)


def index_key(workdir: str, step: int, space: str, paths: list[str]) -> str:
    """What the cached gallery embeddings depend on: the checkpoint (its fingerprint), the space,
    and every gallery file's path, size and modification time."""
    from jax_supcon.train.pretrained import checkpoint_fingerprint

    digest = hashlib.sha256(
        f"{os.path.abspath(workdir)}:{step}:{checkpoint_fingerprint(workdir, step)}:{space}".encode()
    )
    for path in paths:
        info = os.stat(path)
        digest.update(f"{os.path.abspath(path)}:{info.st_size}:{info.st_mtime_ns};".encode())
    return digest.hexdigest()


def gallery_embeddings(embedder, paths: list[str], space: str, cache: str, key: str):
    """(embeddings of the gallery, whether the cache was used)."""
    import numpy as np

    if os.path.exists(cache):
        with np.load(cache) as index:
            if str(index["key"]) == key:
                return index["embeddings"], True
    embeddings = embedder.embed(paths)[space]
    np.savez(f"{cache}.tmp.npz", embeddings=embeddings, paths=np.array(paths), key=np.array(key))
    os.replace(f"{cache}.tmp.npz", cache)
    return embeddings, False


def search(
    workdir: str,
    gallery: str,
    queries: str,
    *,
    k: int = 5,
    out: str | None = None,
    checkpoint: str | None = None,
    space: str = "encoder",
    grid_rows: int = 8,
) -> dict:
    """Run the search and write `results.json` and `grid.png` into `out`; returns the summary."""
    import time

    import numpy as np

    from jax_supcon.embedder import Embedder
    from jax_supcon.evaluate.retrieval import top_k_neighbours
    from jax_supcon.report import plots

    if k < 1 or grid_rows < 0:
        raise ValueError(f"--k={k} must be >= 1 and --grid_rows={grid_rows} >= 0")
    gallery_paths, gallery_labels, gallery_unlabelled = list_images(gallery, "gallery")
    query_paths, query_labels, query_unlabelled = list_images(queries, "queries")
    identical = identical_gallery_files(query_paths, gallery_paths)
    most_identical = max(map(len, identical))
    if most_identical >= len(gallery_paths):
        raise ValueError(f"--gallery={gallery!r} holds nothing but copies of a query: nothing left to retrieve")
    k = min(k, len(gallery_paths) - most_identical)
    embedder = Embedder.from_workdir(workdir, checkpoint)
    if space == "projection" and not embedder.has_head:
        raise ValueError(f"--space=projection: the {embedder.config.job!r} run in {workdir!r} has no projection head")
    out = out or os.path.join(workdir, "search")
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    key = index_key(workdir, embedder.step, space, gallery_paths)
    reference, cached = gallery_embeddings(embedder, gallery_paths, space, os.path.join(out, INDEX_FILE), key)
    indexed = time.perf_counter()
    query_embeddings = embedder.embed(query_paths)[space]
    neighbours, similarity = top_k_neighbours(query_embeddings, reference, k + most_identical)
    neighbours, similarity = drop_identical(neighbours, similarity, identical, k)
    labelled = gallery_labels is not None and query_labels is not None
    results = []
    for row, path in enumerate(query_paths):
        entry = {
            "query": path,
            "neighbours": [gallery_paths[i] for i in neighbours[row]],
            "similarities": [round(float(s), 6) for s in similarity[row]],
        }
        if labelled:
            entry |= {"label": query_labels[row], "neighbour_labels": [gallery_labels[i] for i in neighbours[row]]}
        results.append(entry)
    summary = {
        "workdir": os.path.abspath(workdir),
        "checkpoint_step": embedder.step,
        "space": space,
        "k": int(neighbours.shape[1]),
        "gallery_images": len(gallery_paths),
        "queries": len(query_paths),
        # Queries whose own file (or an identical copy) is in the gallery: excluded from their results.
        "queries_in_gallery": sum(map(bool, identical)),
        "gallery_index_cached": cached,
        "index_seconds": round(indexed - started, 3),
        "search_seconds": round(time.perf_counter() - indexed, 3),
    }
    if not labelled:
        summary["no_metrics"] = gallery_unlabelled or query_unlabelled
    if labelled:
        hits = np.array([[label == r["label"] for label in r["neighbour_labels"]] for r in results])
        summary |= {"precision_at_1": float(hits[:, 0].mean()), f"recall_at_{hits.shape[1]}": float(hits.any(1).mean())}
    with open(os.path.join(out, "results.json.tmp"), "w") as f:
        json.dump({"summary": summary, "results": results}, f, indent=1)
    os.replace(os.path.join(out, "results.json.tmp"), os.path.join(out, "results.json"))
    if grid_rows:  # queries spread evenly over the sorted list, so several classes show
        shown = np.unique(np.linspace(0, len(query_paths) - 1, min(grid_rows, len(query_paths))).round().astype(int))
        query_images = embedder.prepare([query_paths[i] for i in shown])
        match_images = embedder.prepare([gallery_paths[i] for i in neighbours[shown].ravel()])
        plots.retrieval_grid(
            query_images,
            np.array(query_labels)[shown] if labelled else None,
            match_images.reshape(neighbours[shown].shape + match_images.shape[1:]),
            np.array(gallery_labels)[neighbours[shown]] if labelled else None,
            os.path.join(out, "grid.png"),
            title=f"{os.path.basename(os.path.abspath(workdir))} step {embedder.step}: nearest gallery images, {space}",
            match_notes=np.round(similarity[shown], 3),
        )
    return summary | {"out": out}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    with cli.user_errors("jax-supcon-search"):
        summary = search(
            options.workdir,
            options.gallery,
            options.queries,
            k=options.k,
            out=options.out,
            checkpoint=options.checkpoint,
            space=options.space,
            grid_rows=options.grid_rows,
        )
    print(json.dumps(summary, indent=1))
    if "no_metrics" in summary:
        print(f"jax-supcon-search: no precision or recall: {summary['no_metrics']}", file=sys.stderr)


DESCRIPTION = f"""jax-supcon-search: retrieve the nearest gallery images of each query with a trained embedding.

{__doc__.split(chr(10), 2)[2].strip()}
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-search`)."""
    define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__)
