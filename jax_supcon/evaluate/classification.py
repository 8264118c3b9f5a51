"""Top-1 and top-5 accuracy of any classifier over a whole split: one evaluator for linear
evaluation and the cross-entropy baseline. Padding rows (`mask == 0`) never count, and the
counts stay on the devices until the pass is over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jax_supcon import parallel
from jax_supcon.data import pipeline
from jax_supcon.data.sources import Source
from jax_supcon.report.progress import progress


def sum_over_split(count: Callable[[dict], jax.Array], source: Source, mesh: Mesh, batch_size: int) -> np.ndarray:
    """Sum `count(global_batch)` (a jitted per-batch tally that honours `mask`) over one padded
    evaluation pass of `source`; the sum stays on the devices and is fetched once at the end."""
    total = None
    batches = pipeline.eval_batches(
        source, global_batch=batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    )
    for batch in progress(batches, total=-(-source.num_examples // batch_size), desc=f"evaluate {source.split}"):
        value = count(parallel.to_global(batch, mesh))
        total = value if total is None else total + value
    return np.asarray(jax.device_get(total))


def top_k_hits(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """[top-1 hits, top-5 hits] among the unpadded (`mask` = 1) rows of a batch of logits."""
    top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    hits = top == labels[:, None]
    return jnp.stack([jnp.sum(hits[:, 0] * mask), jnp.sum(jnp.any(hits, axis=-1) * mask)])


def top_k_accuracy(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    source: Source,
    mesh: Mesh,
    *,
    batch_size: int,
    split: str = "test",
) -> dict[str, float]:
    """`{split}_top1` and `{split}_top5` of `logits_fn(variables, uint8 images)` over the whole `source`."""
    count = jax.jit(lambda v, batch: top_k_hits(logits_fn(v, batch["image"]), batch["label"], batch["mask"]))
    top1, top5 = sum_over_split(lambda batch: count(variables, batch), source, mesh, batch_size)
    return {f"{split}_top1": int(top1) / source.num_examples, f"{split}_top5": int(top5) / source.num_examples}


def validation_and_test_accuracy(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    validation: Source | None,
    test: Source | None,
    mesh: Mesh,
    *,
    batch_size: int,
) -> dict[str, float]:
    """`val_top1/5` on the validation images and, with a `test` split (None: not read),
    `test_top1/5` and `test_examples`; one pass when validation is the test split itself."""
    results = {}
    if test is not None:
        results = top_k_accuracy(logits_fn, variables, test, mesh, batch_size=batch_size)
        results["test_examples"] = test.num_examples
    if validation is not None and validation is test:
        results |= {key.replace("test_", "val_", 1): value for key, value in results.items() if key != "test_examples"}
    elif validation is not None:
        results |= top_k_accuracy(logits_fn, variables, validation, mesh, batch_size=batch_size, split="val")
    return results
