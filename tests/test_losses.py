"""Every loss against an independent float64 reference written from its equations, one anchor
(pair, triplet) at a time in plain Python loops; gradients against the reference's central
finite differences; sharded (8 fake devices) and chunked against the plain computation.

SupCon (Khosla et al. 2020, eq. 2 and 3), for anchor i with positives P(i), negatives N(i) and
A(i) = every sample but i:
  log_prob(i, p) = s_ip - log D(i, p),  s = z_i . z_j / tau
  D = sum_{a in A(i)} e^s_ia ("all") | e^s_ip + sum_{n in N(i)} e^s_in ("one_positive")
      | sum_{n in N(i)} e^s_in ("negatives_only")
  L_out(i) = -1/|P(i)| sum_p log_prob(i, p);   L_in(i) = -log(1/|P(i)| sum_p exp(log_prob(i, p)))
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_supcon import losses, parallel

# ----------------------------------------------------------------------------- references


def positive_relation(batch, labels, mask):
    if mask is not None:
        return np.asarray(mask) != 0
    ids = np.arange(batch) if labels is None else np.asarray(labels)
    return ids[:, None] == ids[None, :]


def samples_and_anchors(z, contrast_mode):
    batch, views, _ = z.shape
    samples = [(b, v) for v in range(views) for b in range(batch)]
    anchors = samples if contrast_mode == "all" else [(b, 0) for b in range(batch)]
    return samples, anchors


def logsumexp(values):
    values = np.asarray(values, np.float64)
    top = values.max()
    return top + np.log(np.exp(values - top).sum())


class Contrast:
    """The contrast set of the references: the batch's samples `(b, v)` (their `key_features`
    when given: another network's vectors for them), then the valid extra samples `("queue", k)`
    (positives of the anchors with their label; SimCLR: of none)."""

    def __init__(
        self, z, labels, mask, contrast_features=None, contrast_labels=None, contrast_mask=None, key_features=None
    ):
        self.z, self.related = z, positive_relation(z.shape[0], labels, mask)
        self.keys = z if key_features is None else np.asarray(key_features, np.float64)
        self.labels = None if labels is None else np.asarray(labels)
        self.queue = None if contrast_features is None else np.asarray(contrast_features, np.float64)
        self.queue_labels = None if contrast_labels is None else np.asarray(contrast_labels)
        size = 0 if self.queue is None else len(self.queue)
        valid = np.ones(size, bool) if contrast_mask is None else np.asarray(contrast_mask)
        self.extra = [("queue", k) for k in range(size) if valid[k]]

    def vector(self, s):
        """A contrast sample's vector: the queue entry, or the batch sample's key (itself without keys)."""
        return self.queue[s[1]] if s[0] == "queue" else self.keys[s]

    def is_positive(self, anchor_example, s):
        if s[0] == "queue":
            return self.labels is not None and self.labels[anchor_example] == self.queue_labels[s[1]]
        return bool(self.related[anchor_example, s[0]])


def reference_supcon(
    features,
    labels=None,
    mask=None,
    temperature=0.1,
    base_temperature=None,
    contrast_mode="all",
    loss_type="out",
    denominator="all",
    **queue,
):
    z = np.asarray(features, np.float64)
    contrast = Contrast(z, labels, mask, **queue)
    samples, anchors = samples_and_anchors(z, contrast_mode)
    per_anchor = []
    for b, v in anchors:
        others = [s for s in samples if s != (b, v)] + contrast.extra
        sim = {s: z[b, v] @ contrast.vector(s) / temperature for s in others}
        positives = [s for s in others if contrast.is_positive(b, s)]
        negatives = [s for s in others if not contrast.is_positive(b, s)]
        if not positives or (denominator == "negatives_only" and not negatives):
            continue
        log_probs = []
        for p in positives:
            if denominator == "all":
                log_d = logsumexp([sim[a] for a in others])
            elif denominator == "one_positive":
                log_d = logsumexp([sim[p]] + [sim[n] for n in negatives])
            else:
                log_d = logsumexp([sim[n] for n in negatives])
            log_probs.append(sim[p] - log_d)
        if loss_type == "out":
            per_anchor.append(-np.mean(log_probs))
        else:
            per_anchor.append(-(logsumexp(log_probs) - np.log(len(log_probs))))
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return scale * float(np.mean(per_anchor)) if per_anchor else 0.0


def reference_pair(features, labels=None, mask=None, margin=1.0, contrast_mode="all", **queue):
    z = np.asarray(features, np.float64)
    contrast = Contrast(z, labels, mask, **queue)
    samples, anchors = samples_and_anchors(z, contrast_mode)
    positive_terms, negative_terms = [], []
    for a in anchors:
        for s in samples + contrast.extra:
            if s == a:
                continue
            d = np.linalg.norm(z[a] - contrast.vector(s))
            if contrast.is_positive(a[0], s):
                positive_terms.append(d**2)
            else:
                negative_terms.append(max(0.0, margin - d) ** 2)
    return (np.mean(positive_terms) if positive_terms else 0.0) + (np.mean(negative_terms) if negative_terms else 0.0)


def reference_triplet(features, labels=None, mask=None, margin=0.2, mining="batch_hard", contrast_mode="all", **queue):
    z = np.asarray(features, np.float64)
    contrast = Contrast(z, labels, mask, **queue)
    samples, anchors = samples_and_anchors(z, contrast_mode)
    terms = []
    for a in anchors:
        others = [s for s in samples if s != a] + contrast.extra
        d = {s: np.linalg.norm(z[a] - contrast.vector(s)) for s in others}
        positives = [s for s in others if contrast.is_positive(a[0], s)]
        negatives = [s for s in others if not contrast.is_positive(a[0], s)]
        if mining == "batch_hard":
            if positives and negatives:
                terms.append(max(0.0, max(d[p] for p in positives) - min(d[n] for n in negatives) + margin))
        elif mining == "semi_hard":  # TensorFlow Addons: every positive pair counts
            for p in positives:
                farther = [d[n] for n in negatives if d[n] > d[p]]
                chosen = min(farther) if farther else max((d[n] for n in negatives), default=0.0)
                terms.append(max(0.0, d[p] - chosen + margin))
        else:
            terms += [max(0.0, d[p] - d[n] + margin) for p in positives for n in negatives]
    if mining in ("batch_hard", "semi_hard"):
        return float(np.mean(terms)) if terms else 0.0
    active = [t for t in terms if t > 0]
    return float(np.mean(active)) if active else 0.0


def reference_multi_similarity(
    features, labels=None, mask=None, alpha=2.0, beta=50.0, base=0.5, margin=0.1, contrast_mode="all", **queue
):
    """Wang et al. 2019, eq. 12 with the mining of Sec. 3.3, as the authors' code: per anchor,
    mined pairs only, anchors without a mined positive or negative adding 0, mean over anchors."""
    z = np.asarray(features, np.float64)
    contrast = Contrast(z, labels, mask, **queue)
    samples, anchors = samples_and_anchors(z, contrast_mode)
    total = 0.0
    for a in anchors:
        others = [s for s in samples if s != a] + contrast.extra
        sim = {s: z[a] @ contrast.vector(s) for s in others}
        positives = [sim[s] for s in others if contrast.is_positive(a[0], s)]
        negatives = [sim[s] for s in others if not contrast.is_positive(a[0], s)]
        if not positives or not negatives:
            continue
        kept_negatives = [s for s in negatives if s + margin > min(positives)]
        kept_positives = [s for s in positives if s - margin < max(negatives)]
        if not kept_negatives or not kept_positives:
            continue
        total += np.log1p(sum(np.exp(-alpha * (s - base)) for s in kept_positives)) / alpha
        total += np.log1p(sum(np.exp(beta * (s - base)) for s in kept_negatives)) / beta
    return total / len(anchors)


def reference_cross_entropy(logits, labels, label_smoothing=0.0):
    logits = np.asarray(logits, np.float64)
    classes = logits.shape[1]
    total = 0.0
    for row, label in zip(logits, labels, strict=True):
        log_softmax = row - logsumexp(row)
        target = np.full(classes, label_smoothing / classes)
        target[label] += 1.0 - label_smoothing
        total += -(target * log_softmax).sum()
    return total / len(labels)


def finite_difference_grad(fn, x, eps=1e-6):
    grad = np.zeros_like(x, np.float64)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


def random_features(seed, batch, views, dim):
    x = np.random.default_rng(seed).normal(size=(batch, views, dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


LABELS = np.array([0, 1, 0, 2, 1, 0])  # class 2 has one example
ASYMMETRIC_MASK = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 1, 0],
        [1, 0, 0, 0, 0, 1],  # the other views of example 2 are its negatives
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ]
)


def check_against_reference(loss_fn, reference_fn, features, *, rtol=1e-5, grad_atol=2e-5, **kwargs):
    """Value and gradient of `loss_fn` (float32, jitted) against the float64 reference."""
    arrays = ("labels", "mask", *losses.CONTRAST_ARGUMENTS)
    inputs = {k: jnp.asarray(v) for k, v in kwargs.items() if k in arrays and v is not None}
    options = {k: v for k, v in kwargs.items() if k not in arrays}
    value, grad = jax.jit(jax.value_and_grad(lambda x: loss_fn(x, **inputs, **options)))(
        jnp.asarray(features, jnp.float32)
    )
    semantics = {k: v for k, v in kwargs.items() if k != "chunk_size"}  # chunking changes no value
    expected = reference_fn(features, **semantics)
    np.testing.assert_allclose(float(value), expected, rtol=rtol, atol=1e-6)
    expected_grad = finite_difference_grad(lambda x: reference_fn(x, **semantics), features)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-3, atol=grad_atol)


# ----------------------------------------------------------------------------- SupCon family

SUPCON_CASES = [
    dict(labels=LABELS),  # defaults: the fast symmetric path
    dict(labels=LABELS, contrast_mode="one"),
    dict(labels=LABELS, loss_type="in"),
    dict(labels=LABELS, denominator="one_positive"),
    dict(labels=LABELS, denominator="negatives_only"),
    dict(labels=LABELS, loss_type="in", denominator="one_positive", contrast_mode="one"),
    dict(labels=LABELS, temperature=0.07, base_temperature=0.07),
    dict(labels=LABELS, temperature=0.2, base_temperature=0.07, chunk_size=5),
    dict(mask=ASYMMETRIC_MASK),
    dict(mask=ASYMMETRIC_MASK, loss_type="in", denominator="negatives_only"),
    dict(temperature=0.5),  # SimCLR
    dict(temperature=0.5, contrast_mode="one", loss_type="in"),
]


# SimCLR with one view has no positive at all: that case is the no-positive test below.
SUPCON_GRID = [
    (case, views) for case in SUPCON_CASES for views in (1, 2, 3) if views > 1 or "labels" in case or "mask" in case
]


@pytest.mark.parametrize("case, views", SUPCON_GRID, ids=lambda c: "-".join(c) if isinstance(c, dict) else f"v{c}")
def test_supcon_matches_reference(case, views):
    check_against_reference(losses.supcon_loss, reference_supcon, random_features(0, 6, views, 5), **case)


def test_simclr_equals_supcon_with_one_example_per_class_and_ntxent():
    features = jnp.asarray(random_features(1, 8, 2, 16), jnp.float32)
    distinct = jnp.arange(8) * 7
    expected = reference_supcon(np.asarray(features), temperature=0.5)
    np.testing.assert_allclose(losses.supcon_loss(features, distinct, temperature=0.5), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.ntxent_loss(features), expected, rtol=1e-5)


@pytest.mark.parametrize("denominator", losses.DENOMINATORS)
def test_all_one_class(denominator):
    """Every other sample is a positive: no negative at all ("negatives_only" then counts nothing)."""
    features = random_features(5, 5, 2, 4)
    check_against_reference(
        losses.supcon_loss, reference_supcon, features, labels=np.zeros(5, int), denominator=denominator
    )


@pytest.mark.parametrize(
    "case", [dict(labels=np.arange(5)), dict(mask=np.zeros((5, 5))), dict(labels=np.arange(5), chunk_size=2)]
)
def test_no_positive_anywhere_gives_zero_loss_and_zero_gradient(case):
    features = jnp.asarray(random_features(2, 5, 1, 4), jnp.float32)
    inputs = {k: jnp.asarray(v) if k != "chunk_size" else v for k, v in case.items()}
    value, grad = jax.value_and_grad(lambda x: losses.supcon_loss(x, **inputs))(features)
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)


def check_supcon_at_temperature_0_01(features, labels, **case):
    """Logits up to 100 (> log of float32's max): value and gradient finite and equal to the reference."""
    check_against_reference(
        losses.supcon_loss,
        reference_supcon,
        features,
        labels=labels,
        temperature=0.01,
        rtol=1e-4,
        grad_atol=1e-3,
        **case,
    )


@pytest.mark.parametrize("case", [dict(), dict(loss_type="in", denominator="one_positive", chunk_size=3)])
def test_temperature_0_01_is_finite_and_matches_reference(case):
    check_supcon_at_temperature_0_01(random_features(3, 8, 2, 8), np.array([0, 0, 1, 1, 2, 2, 3, 3]), **case)


@pytest.mark.parametrize("case", [dict(), dict(chunk_size=3), dict(contrast_mode="one"), dict(chunk_size=2, views=2)])
def test_an_anchor_without_positives_next_to_a_near_duplicate_at_temperature_0_01_keeps_the_gradient_finite(case):
    """Examples 2 and 3 are singletons and nearly the same vector: their logit is ~100 > log(float32 max),
    and their own log-sum-exp is unused (not counted); the gradient must stay finite and exact."""
    case = dict(case)
    views = case.pop("views", 1)
    features = random_features(4, 6, views, 8)
    features[3] = features[2] + 1e-3
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    check_supcon_at_temperature_0_01(features, np.array([0, 0, 1, 2, 3, 3]), **case)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_bfloat16_inputs_are_computed_in_float32(chunk_size):
    features = jnp.asarray(random_features(4, 8, 2, 32), jnp.bfloat16)
    labels = jnp.array([0, 1, 2, 3, 0, 1, 2, 3])
    value = losses.supcon_loss(features, labels, chunk_size=chunk_size)
    assert value.dtype == jnp.float32
    rounded = np.asarray(features.astype(jnp.float32))  # the loss must see exactly these values
    np.testing.assert_allclose(float(value), reference_supcon(rounded, np.asarray(labels)), rtol=1e-5)
    grad = jax.grad(lambda x: losses.supcon_loss(x, labels, chunk_size=chunk_size))(features)
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


# ----------------------------------------------------------------------------- metric learning


@pytest.mark.parametrize(
    "case",
    [dict(labels=LABELS), dict(labels=LABELS, margin=0.5, contrast_mode="one"), dict(mask=ASYMMETRIC_MASK), dict()],
    ids=["labels", "margin-one", "mask", "instances"],
)
def test_pair_loss_matches_reference(case):
    check_against_reference(losses.contrastive_pair_loss, reference_pair, random_features(6, 6, 2, 5), **case)


@pytest.mark.parametrize("mining", losses.TRIPLET_MINING)
@pytest.mark.parametrize(
    "case",
    [
        dict(labels=LABELS),
        dict(labels=LABELS, margin=0.5, contrast_mode="one"),
        dict(mask=ASYMMETRIC_MASK),
        dict(labels=LABELS, chunk_size=4),
    ],
    ids=["labels", "margin-one", "mask", "chunked"],
)
def test_triplet_loss_matches_reference(case, mining):
    check_against_reference(losses.triplet_loss, reference_triplet, random_features(7, 6, 2, 5), mining=mining, **case)


@pytest.mark.parametrize("loss_fn", [losses.contrastive_pair_loss, losses.triplet_loss])
def test_metric_losses_with_all_one_class_and_one_example_per_class(loss_fn):
    reference = reference_pair if loss_fn is losses.contrastive_pair_loss else reference_triplet
    features = random_features(8, 5, 2, 4)
    for labels in (np.zeros(5, int), np.arange(5)):
        check_against_reference(loss_fn, reference, features, labels=labels)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_matches_reference(label_smoothing):
    logits = np.random.default_rng(9).normal(size=(6, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2, 0])
    value, grad = jax.value_and_grad(
        lambda x: losses.cross_entropy_loss(x, jnp.asarray(labels), label_smoothing=label_smoothing)
    )(jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(float(value), reference_cross_entropy(logits, labels, label_smoothing), rtol=1e-5)
    expected = finite_difference_grad(lambda x: reference_cross_entropy(x, labels, label_smoothing), logits)
    np.testing.assert_allclose(np.asarray(grad), expected, atol=1e-5)


# ----------------------------------------------------------------------------- sharded and chunked

SHARDED_CASES = [
    ("supcon", losses.supcon_loss, dict(labels=True)),
    (
        "supcon-one-in-negatives_only",
        losses.supcon_loss,
        dict(labels=True, contrast_mode="one", loss_type="in", denominator="negatives_only"),
    ),
    ("supcon-mask-one_positive", losses.supcon_loss, dict(mask=True, denominator="one_positive")),
    ("simclr", losses.ntxent_loss, dict()),
    ("pair", losses.contrastive_pair_loss, dict(labels=True)),
    ("triplet-hard", losses.triplet_loss, dict(labels=True)),
    ("triplet-all-mask", losses.triplet_loss, dict(mask=True, mining="batch_all")),
    ("triplet-semi_hard", losses.triplet_loss, dict(labels=True, mining="semi_hard")),
    ("multi_similarity", losses.multi_similarity_loss, dict(labels=True)),
]


def sharded_inputs(case):
    rng = np.random.default_rng(10)
    features = jnp.asarray(random_features(10, 16, 2, 8), jnp.float32)
    extra = dict(case)
    if extra.pop("labels", False):
        extra["labels"] = jnp.asarray(rng.integers(0, 5, 16))
    if extra.pop("mask", False):
        extra["mask"] = jnp.asarray(rng.random((16, 16)) < 0.3)
    return features, extra


@pytest.mark.parametrize("name, loss_fn, case", SHARDED_CASES, ids=[c[0] for c in SHARDED_CASES])
def test_eight_devices_and_chunks_equal_one_device(name, loss_fn, case):
    features, kwargs = sharded_inputs(case)
    mesh = parallel.create_mesh()
    features_sharded = jax.device_put(features, parallel.data_sharding(mesh))
    plain = jax.jit(jax.value_and_grad(lambda x: loss_fn(x, **kwargs)))(features)
    variants = {
        "sharded": jax.jit(jax.value_and_grad(lambda x: losses.sharded(loss_fn, mesh)(x, **kwargs)))(features_sharded),
        "chunked": jax.jit(jax.value_and_grad(lambda x: loss_fn(x, chunk_size=7, **kwargs)))(features),
        "sharded+chunked": jax.jit(
            jax.value_and_grad(lambda x: losses.sharded(loss_fn, mesh)(x, chunk_size=3, **kwargs))
        )(features_sharded),
    }
    assert float(plain[0]) > 0
    for label, (value, grad) in variants.items():
        np.testing.assert_allclose(float(value), float(plain[0]), rtol=1e-5, err_msg=label)
        scale = np.abs(np.asarray(plain[1])).max()
        np.testing.assert_allclose(np.asarray(grad) / scale, np.asarray(plain[1]) / scale, atol=1e-5, err_msg=label)


def test_sharded_loss_runs_inside_jit_on_a_globally_sharded_batch():
    mesh = parallel.create_mesh()
    features, kwargs = sharded_inputs(dict(labels=True))
    batch = parallel.to_global({"features": np.asarray(features), "labels": np.asarray(kwargs["labels"])}, mesh)
    value = jax.jit(lambda b: losses.sharded(losses.supcon_loss, mesh)(b["features"], b["labels"]))(batch)
    np.testing.assert_allclose(
        float(value), reference_supcon(np.asarray(features), np.asarray(kwargs["labels"])), rtol=1e-5
    )


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "features, kwargs, message",
    [
        (np.zeros((4, 8)), {}, r"\[batch, views, dim\]"),
        (np.zeros((4, 2, 8)), {"labels": np.zeros(3, np.int32)}, r"labels must be \[batch\]=\[4\]"),
        (
            np.zeros((4, 2, 8)),
            {"labels": np.zeros((4, 1), np.int32)},
            r"labels must be \[batch\]=\[4\], got shape \(4, 1\)",
        ),
        (
            np.zeros((4, 2, 8)),
            {"mask": np.zeros((4, 3))},
            r"mask must be \[batch, batch\]=\[4, 4\], got shape \(4, 3\)",
        ),
        (np.zeros((4, 2, 8)), {"mask": np.zeros((4, 4)), "labels": np.zeros(4, np.int32)}, "labels or mask, not both"),
        (np.zeros((4, 2, 8)), {"temperature": 0.0}, "temperature=0.0 must be > 0"),
        (np.zeros((4, 2, 8)), {"temperature": -1}, "temperature=-1 must be > 0"),
        (np.zeros((4, 2, 8)), {"contrast_mode": "any"}, "contrast_mode='any'; allowed"),
        (np.zeros((4, 2, 8)), {"loss_type": "mid"}, "loss_type='mid'; allowed"),
        (np.zeros((4, 2, 8)), {"denominator": "some"}, "denominator='some'; allowed"),
        (np.zeros((4, 2, 8)), {"chunk_size": 0}, "chunk_size=0 must be a positive int"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(features, kwargs, message):
    arrays = {k: jnp.asarray(v) for k, v in kwargs.items() if k in ("labels", "mask")}
    options = {k: v for k, v in kwargs.items() if k not in arrays}
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda x: losses.supcon_loss(x, **arrays, **options))(jnp.asarray(features, jnp.float32))


@pytest.mark.parametrize(
    "loss_fn, kwargs, message",
    [
        (
            losses.triplet_loss,
            {"mining": "semihard"},
            "mining='semihard'; allowed",
        ),
        (losses.multi_similarity_loss, {"beta": 0.0}, "beta=0.0 must be > 0"),
        (losses.triplet_loss, {"margin": 0.0}, "margin=0.0 must be > 0"),
        (losses.contrastive_pair_loss, {"margin": -1.0}, "margin=-1.0 must be > 0"),
    ],
)
def test_bad_metric_loss_options(loss_fn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        loss_fn(jnp.zeros((4, 2, 8)), **kwargs)


def test_sharded_batch_must_divide_by_the_devices():
    mesh = parallel.create_mesh()
    with pytest.raises(ValueError, match="batch=12 must divide by the 8 devices"):
        losses.sharded(losses.supcon_loss, mesh)(jnp.zeros((12, 2, 8)))


def test_numpy_and_jax_scalar_temperatures_are_checked_and_a_traced_one_works():
    features = jnp.asarray(random_features(11, 6, 2, 4), jnp.float32)
    labels = jnp.asarray(LABELS)
    for bad in (np.float32(-0.1), jnp.float32(0.0)):
        with pytest.raises(ValueError, match="temperature=.* must be > 0"):
            losses.supcon_loss(features, labels, temperature=bad)
    traced = jax.jit(lambda t: losses.supcon_loss(features, labels, temperature=t))(0.3)
    np.testing.assert_allclose(
        float(traced), reference_supcon(np.asarray(features), LABELS, temperature=0.3), rtol=1e-5
    )
    grad = jax.grad(lambda t: losses.supcon_loss(features, labels, temperature=t))(0.3)
    expected = (
        reference_supcon(np.asarray(features), LABELS, temperature=0.3 + 1e-5)
        - reference_supcon(np.asarray(features), LABELS, temperature=0.3 - 1e-5)
    ) / 2e-5
    np.testing.assert_allclose(float(grad), expected, rtol=1e-3)


# ----------------------------------------------------------------------------- extra contrast samples (a queue)

QUEUE_FEATURES = random_features(11, 7, 1, 5)[:, 0]  # 7 past features, dim 5
QUEUE_LABELS = np.array([0, 2, 3, 1, 0, 3, 2])  # class 3 only in the queue; class 2 gains positives
QUEUE_VALID = np.array([True, True, False, True, True, True, False])
QUEUE = dict(contrast_features=QUEUE_FEATURES, contrast_labels=QUEUE_LABELS, contrast_mask=QUEUE_VALID)
SIMCLR_QUEUE = dict(contrast_features=QUEUE_FEATURES, contrast_mask=QUEUE_VALID)

QUEUE_CASES = [
    dict(labels=LABELS, **QUEUE),  # the fast default path
    dict(labels=LABELS, chunk_size=5, **QUEUE),
    dict(labels=LABELS, contrast_mode="one", **QUEUE),
    dict(labels=LABELS, loss_type="in", **QUEUE),
    dict(labels=LABELS, denominator="one_positive", **QUEUE),
    dict(labels=LABELS, denominator="negatives_only", chunk_size=4, **QUEUE),
    dict(labels=LABELS, contrast_features=QUEUE_FEATURES, contrast_labels=QUEUE_LABELS),  # no mask: all used
    dict(temperature=0.5, **SIMCLR_QUEUE),  # SimCLR: every entry a negative
    dict(temperature=0.5, contrast_mode="one", loss_type="in", **SIMCLR_QUEUE),
]


# SimCLR with one view has no positive (only labelled cases run with one view).
QUEUE_GRID = [(case, views) for case in QUEUE_CASES for views in (1, 2) if views > 1 or "labels" in case]


@pytest.mark.parametrize(
    "case, views",
    QUEUE_GRID,
    ids=lambda c: "-".join(k for k in c if not k.startswith("contrast")) if isinstance(c, dict) else f"v{c}",
)
def test_supcon_with_extra_contrast_samples_matches_reference(case, views):
    check_against_reference(losses.supcon_loss, reference_supcon, random_features(0, 6, views, 5), **case)


@pytest.mark.parametrize(
    "loss_fn, reference_fn, options",
    [
        (losses.contrastive_pair_loss, reference_pair, {}),
        (losses.triplet_loss, reference_triplet, {"mining": "batch_hard"}),
        (losses.triplet_loss, reference_triplet, {"mining": "batch_all", "chunk_size": 5}),
    ],
    ids=["pair", "triplet-hard", "triplet-all"],
)
def test_metric_losses_with_extra_contrast_samples_match_reference(loss_fn, reference_fn, options):
    check_against_reference(loss_fn, reference_fn, random_features(6, 6, 2, 5), labels=LABELS, **QUEUE, **options)


def test_an_all_masked_queue_equals_no_queue_and_the_queue_gets_no_gradient():
    features = jnp.asarray(random_features(1, 6, 2, 5), jnp.float32)
    labels = jnp.asarray(LABELS)
    queue = jnp.asarray(QUEUE_FEATURES, jnp.float32)
    for loss_fn in (losses.supcon_loss, losses.contrastive_pair_loss, losses.triplet_loss):
        plain = jax.value_and_grad(lambda x, loss_fn=loss_fn: loss_fn(x, labels))(features)
        masked = jax.value_and_grad(
            lambda x, loss_fn=loss_fn: loss_fn(
                x,
                labels,
                contrast_features=queue,
                contrast_labels=jnp.asarray(QUEUE_LABELS),
                contrast_mask=jnp.zeros(7, bool),
            )
        )(features)
        np.testing.assert_allclose(masked[0], plain[0], rtol=1e-6, err_msg=loss_fn.__name__)
        np.testing.assert_allclose(masked[1], plain[1], atol=1e-6, err_msg=loss_fn.__name__)
    queue_grad = jax.grad(
        lambda q: losses.supcon_loss(features, labels, contrast_features=q, contrast_labels=jnp.asarray(QUEUE_LABELS))
    )(queue)
    assert np.all(np.asarray(queue_grad) == 0.0)


@pytest.mark.parametrize(
    "name, loss_fn, extra",
    [
        ("supcon", losses.supcon_loss, {"labels": True}),
        ("simclr", losses.ntxent_loss, {}),
        ("pair", losses.contrastive_pair_loss, {"labels": True}),
    ],
)
def test_a_queue_sharded_over_eight_devices_and_chunked_equals_one_device(name, loss_fn, extra):
    features = jnp.asarray(random_features(7, 16, 2, 8), jnp.float32)
    queue = jnp.asarray(random_features(8, 24, 1, 8)[:, 0], jnp.float32)
    kwargs = {"contrast_features": queue, "contrast_mask": jnp.arange(24) % 5 != 0}
    if extra.get("labels"):
        rng = np.random.default_rng(9)
        kwargs |= {
            "labels": jnp.asarray(rng.integers(0, 4, 16)),
            "contrast_labels": jnp.asarray(rng.integers(0, 5, 24)),
        }
    mesh = parallel.create_mesh()
    assert mesh.size == 8
    plain = jax.jit(jax.value_and_grad(lambda x: loss_fn(x, **kwargs)))(features)
    sharded_inputs = parallel.to_global(kwargs, mesh)  # the queue sharded like the batch
    features_sharded = parallel.to_global({"features": features}, mesh)["features"]
    variants = {
        "sharded": jax.jit(jax.value_and_grad(lambda x, kw: losses.sharded(loss_fn, mesh)(x, **kw)))(
            features_sharded, sharded_inputs
        ),
        "chunked": jax.jit(jax.value_and_grad(lambda x: loss_fn(x, chunk_size=7, **kwargs)))(features),
        "sharded+chunked": jax.jit(
            jax.value_and_grad(lambda x, kw: losses.sharded(loss_fn, mesh)(x, chunk_size=3, **kw))
        )(features_sharded, sharded_inputs),
    }
    for label, (value, grad) in variants.items():
        np.testing.assert_allclose(float(value), float(plain[0]), rtol=1e-5, err_msg=label)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(plain[1]), atol=1e-5, err_msg=label)


def test_bfloat16_features_with_a_float32_queue():
    features = jnp.asarray(random_features(2, 6, 2, 5), jnp.bfloat16)
    value, grad = jax.value_and_grad(
        lambda x: losses.supcon_loss(
            x,
            jnp.asarray(LABELS),
            contrast_features=jnp.asarray(QUEUE_FEATURES, jnp.float32),
            contrast_labels=jnp.asarray(QUEUE_LABELS),
        )
    )(features)
    expected = reference_supcon(
        np.asarray(features, np.float32), LABELS, **{k: v for k, v in QUEUE.items() if k != "contrast_mask"}
    )
    np.testing.assert_allclose(float(value), expected, rtol=2e-2)
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask=np.eye(6), contrast_features=np.zeros((3, 5))), "cannot be used with mask="),
        (dict(labels=LABELS, contrast_features=np.zeros((3, 5))), "contrast_labels must be given exactly when"),
        (dict(contrast_features=np.zeros((3, 5)), contrast_labels=np.zeros(3, int)), "exactly when labels are"),
        (dict(labels=LABELS, contrast_features=np.zeros((3, 4)), contrast_labels=np.zeros(3, int)), "[K, dim]=[K, 5]"),
        (dict(labels=LABELS, contrast_features=np.zeros((3, 5)), contrast_labels=np.zeros(2, int)), "[K]=[3]"),
        (dict(contrast_features=np.zeros((3, 5)), contrast_mask=np.ones(3)), "contrast_mask must be bool"),
        (dict(contrast_labels=np.zeros(3, int)), "need contrast_features"),
    ],
)
def test_bad_extra_contrast_samples_raise_a_clear_value_error(kwargs, message):
    features = jnp.asarray(random_features(0, 6, 2, 5), jnp.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        losses.supcon_loss(features, **{k: jnp.asarray(v) for k, v in kwargs.items()})


def test_a_queue_that_does_not_divide_by_the_devices_is_refused():
    mesh = parallel.create_mesh()
    features = jnp.asarray(random_features(0, 8, 2, 5), jnp.float32)
    with pytest.raises(ValueError, match="contrast_features has 9 rows; it must divide by the 8 devices"):
        losses.sharded(losses.supcon_loss, mesh)(features, contrast_features=jnp.zeros((9, 5)))


KEYS = random_features(12, 6, 2, 5)  # a momentum encoder's view of the same 6 examples x 2 views
KEY_CASES = [
    dict(labels=LABELS, key_features=KEYS),  # the fast default path
    dict(labels=LABELS, key_features=KEYS, chunk_size=4, **QUEUE),  # MoCo-style: keys and a queue
    dict(labels=LABELS, key_features=KEYS, contrast_mode="one", denominator="one_positive"),
    dict(temperature=0.2, key_features=KEYS, **SIMCLR_QUEUE),  # MoCo v2 with both views as queries
    dict(mask=ASYMMETRIC_MASK, key_features=KEYS, loss_type="in"),
]


@pytest.mark.parametrize("case", KEY_CASES, ids=["default", "queue-chunked", "one-anchor", "simclr-queue", "mask"])
def test_key_features_from_another_network_match_reference(case):
    check_against_reference(losses.supcon_loss, reference_supcon, random_features(0, 6, 2, 5), **case)


def test_keys_sharded_over_eight_devices_equal_one_device_and_get_no_gradient():
    features = jnp.asarray(random_features(7, 16, 2, 8), jnp.float32)
    kwargs = {
        "labels": jnp.asarray(np.random.default_rng(3).integers(0, 4, 16)),
        "key_features": jnp.asarray(random_features(8, 16, 2, 8), jnp.float32),
        "contrast_features": jnp.asarray(random_features(9, 24, 1, 8)[:, 0], jnp.float32),
        "contrast_labels": jnp.asarray(np.random.default_rng(4).integers(0, 5, 24)),
    }
    mesh = parallel.create_mesh()
    plain = jax.jit(jax.value_and_grad(lambda x: losses.supcon_loss(x, **kwargs)))(features)
    sharded = jax.jit(jax.value_and_grad(lambda x, kw: losses.sharded(losses.supcon_loss, mesh)(x, **kw)))(
        parallel.to_global({"x": features}, mesh)["x"], parallel.to_global(kwargs, mesh)
    )
    np.testing.assert_allclose(float(sharded[0]), float(plain[0]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sharded[1]), np.asarray(plain[1]), atol=1e-5)
    key_grad = jax.grad(lambda k: losses.supcon_loss(features, kwargs["labels"], key_features=k))(
        kwargs["key_features"]
    )
    assert np.all(np.asarray(key_grad) == 0.0)
    with pytest.raises(ValueError, match=re.escape("key_features must have the shape of features (16, 2, 8)")):
        losses.supcon_loss(features, kwargs["labels"], key_features=features[:, :1])


@pytest.mark.parametrize(
    "case",
    [
        dict(labels=LABELS),
        dict(labels=LABELS, margin=0.5, contrast_mode="one"),
        dict(mask=ASYMMETRIC_MASK),
        dict(labels=LABELS, chunk_size=4, **QUEUE),
        dict(labels=np.zeros(6, int)),  # no negative anywhere: TFA's farthest negative is the self distance, 0
    ],
    ids=["labels", "margin-one", "mask", "chunked-queue", "one-class"],
)
def test_semi_hard_triplet_loss_matches_reference(case):
    check_against_reference(
        losses.triplet_loss, reference_triplet, random_features(7, 6, 2, 5), mining="semi_hard", **case
    )


@pytest.mark.parametrize(
    "case",
    [
        dict(labels=LABELS),
        dict(labels=LABELS, alpha=3.0, beta=20.0, base=0.3, margin=0.4, contrast_mode="one"),
        dict(mask=ASYMMETRIC_MASK, margin=0.5),
        dict(labels=LABELS, chunk_size=4, margin=0.6, **QUEUE),
        dict(labels=np.zeros(6, int)),  # no negative: nothing mined, 0
    ],
    ids=["labels", "options-one", "mask", "chunked-queue", "one-class"],
)
def test_multi_similarity_loss_matches_reference(case):
    features = random_features(8, 6, 2, 5)
    check_against_reference(losses.multi_similarity_loss, reference_multi_similarity, features, grad_atol=1e-4, **case)
