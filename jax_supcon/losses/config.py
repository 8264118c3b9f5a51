"""The `config.loss` side: which loss each name means, the section's checks, and the loss a
config builds (`from_config`), sharded over the mesh with the job's queue arguments."""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
from jax.sharding import Mesh
from ml_collections.config_dict import placeholder

from jax_supcon.losses.layout import CONTRAST_MODES
from jax_supcon.losses.metric import TRIPLET_MINING, contrastive_pair_loss, multi_similarity_loss, triplet_loss
from jax_supcon.losses.sharding import sharded
from jax_supcon.losses.supcon import DENOMINATORS, LOSS_TYPES, ntxent_loss, supcon_loss

QUEUE_VIEWS = ("all", "one")  # loss.queue_views: what a step enqueues (see train/queue.py)

FEATURE_LOSSES = {
    "supcon": supcon_loss,
    "simclr": ntxent_loss,
    "pair": contrastive_pair_loss,
    "triplet": triplet_loss,
    "multi_similarity": multi_similarity_loss,
}


def validate_loss_config(loss) -> None:
    """One-line errors for a bad `config.loss` section (name, temperature, options, views)."""
    if loss.name not in FEATURE_LOSSES:
        raise ValueError(f"loss.name={loss.name!r}; allowed: {tuple(FEATURE_LOSSES)}")
    if not loss.temperature > 0:
        raise ValueError(f"loss.temperature={loss.temperature} must be > 0")
    choices = {"contrast_mode": CONTRAST_MODES, "loss_type": LOSS_TYPES, "denominator": DENOMINATORS}
    for key, allowed in (choices | {"mining": TRIPLET_MINING}).items():
        if loss[key] not in allowed:
            raise ValueError(f"loss.{key}={loss[key]!r}; allowed: {allowed}")
    if loss.chunk_size is not None and loss.chunk_size <= 0:
        raise ValueError(f"loss.chunk_size={loss.chunk_size} must be > 0 (or unset)")
    if loss.margin is not None and not loss.margin > 0:
        raise ValueError(f"loss.margin={loss.margin} must be > 0 (or unset)")
    for key in ("ms_alpha", "ms_beta"):
        if not loss.get(key, 1.0) > 0:
            raise ValueError(f"loss.{key}={loss[key]} must be > 0")
    if loss.num_views < 1 or (loss.name == "simclr" and loss.num_views < 2):
        raise ValueError(f"loss.num_views={loss.num_views}; needs >= 2 for simclr, >= 1 for supcon")


def loss_options(loss) -> dict:
    """The keyword arguments the feature loss named by `loss.name` takes from the `config.loss`
    section (temperature and SupCon's options; margin, mining, multi-similarity's weights)."""
    name = loss.name
    options = {"contrast_mode": loss.contrast_mode, "chunk_size": loss.chunk_size}
    if name in ("supcon", "simclr"):
        options |= {
            "temperature": loss.temperature,
            "base_temperature": loss.base_temperature,
            "loss_type": loss.loss_type,
            "denominator": loss.denominator,
        }
    if name in ("pair", "triplet", "multi_similarity") and loss.margin is not None:
        options["margin"] = loss.margin
    if name == "triplet":
        options["mining"] = loss.mining
    if name == "multi_similarity":
        options |= {"alpha": loss.ms_alpha, "beta": loss.ms_beta, "base": loss.ms_base}
    return options


def from_config(loss, mesh: Mesh, axis_name: str = "data") -> Callable[..., jax.Array]:
    """The loss the `config.loss` section names, sharded over `mesh` (see `sharded`):
    `fn(z, labels, contrast=None)` on `[batch, views, dim]` projections, where `contrast` holds a
    feature queue's `contrast_*` samples and a momentum encoder's `key_features` (SimCLR ignores
    the labels: only the other views of an example are its positives)."""
    loss_fn = sharded(FEATURE_LOSSES[loss.name], mesh, axis_name)
    options = loss_options(loss)
    uses_labels = loss.name != "simclr"

    def configured(z: jax.Array, labels: jax.Array, contrast: dict[str, jax.Array] | None = None) -> jax.Array:
        return loss_fn(z, labels if uses_labels else None, **options, **(contrast or {}))

    return configured


def loss_config() -> ml_collections.ConfigDict:
    """The `config.loss` section's defaults (validated by `validate_loss_config`)."""
    section = ml_collections.ConfigDict()
    section.name = "supcon"
    section.temperature = 0.1
    section.base_temperature = placeholder(float)
    section.contrast_mode = "all"
    section.num_views = 2
    section.loss_type = "out"  # supcon/simclr: "out" (L_out) or "in" (L_in)
    section.denominator = "all"  # supcon/simclr: "all", "one_positive", "negatives_only"
    section.chunk_size = placeholder(int)  # anchors per row block; None: one block
    section.margin = placeholder(float)  # pair (default 1.0) / triplet (0.2) / multi_similarity mining (0.1)
    section.mining = "batch_hard"  # triplet: "batch_hard", "batch_all" or "semi_hard"
    section.ms_alpha = 2.0  # multi_similarity: positive scale (Wang et al. 2019)
    section.ms_beta = 50.0  # multi_similarity: negative scale
    section.ms_base = 0.5  # multi_similarity: similarity offset lambda
    section.queue_size = 0  # past features contrasted with each batch (0: none); see train/queue.py
    section.queue_views = "all"  # what a step enqueues: "all" views or "one" per example
    return section


def entries_per_step(loss: ml_collections.ConfigDict, batch_size: int) -> int:
    """Features a step enqueues: every view's projection (`queue_views="all"`) or the first
    view's (`"one"`, one per example, as MoCo v2 enqueues its keys)."""
    return batch_size * (loss.num_views if loss.queue_views == "all" else 1)


def validate_queue_config(loss: ml_collections.ConfigDict, batch_size: int) -> None:
    """One-line errors for `loss.queue_size` and `loss.queue_views`."""
    if loss.queue_views not in QUEUE_VIEWS:
        raise ValueError(f"loss.queue_views={loss.queue_views!r}; allowed: {QUEUE_VIEWS}")
    if loss.queue_size < 0:
        raise ValueError(f"loss.queue_size={loss.queue_size} must be >= 0 (0: no queue)")
    per_step = entries_per_step(loss, batch_size)
    if loss.queue_size % per_step:
        raise ValueError(
            f"loss.queue_size={loss.queue_size} must be a multiple of the {per_step} features a step enqueues "
            f"(batch_size={batch_size} x {loss.num_views if loss.queue_views == 'all' else 1} view(s), "
            f"loss.queue_views={loss.queue_views!r}), e.g. {max(1, round(loss.queue_size / per_step)) * per_step}"
        )
