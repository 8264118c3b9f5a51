"""Held-out classes (`data.train_classes`): which classes training may see, and a `Source` cut
down to some classes.

Metric learning is judged on classes the network never saw (Musgrave et al. 2020: CUB-200 and
Cars-196 train on the first half of the classes and test on the second; Catalyst trains on some
MNIST digits and retrieves the others). A spec names the training classes by their ids in the
data set: `"0-4"`, `"0,2,4,6,8"`, `"0-4,7"`, `"first_half"` or `"second_half"`; `""` means all
classes (nothing held out). Training sources keep only those classes, relabelled 0..n-1 in
increasing id order (`class_ids[new] = old`), so a classifier or the online probe has n outputs;
the held-out classes' evaluation examples keep their own ids.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from jax_supcon.data import subsets
from jax_supcon.data.sources import Source, tf_module

NAMED_SPECS = ("first_half", "second_half")
SPEC_HELP = "'' (all classes), 'first_half', 'second_half', or ids and ranges such as '0-4' or '0,2,4,6,8'"
_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def check_spec_syntax(spec: str) -> None:
    """A one-line error for a spec that cannot name classes whatever the data set (checked
    before any data is read); ids beyond the data set are checked by `parse_train_classes`."""
    if not isinstance(spec, str):
        raise ValueError(f"data.train_classes={spec!r}; allowed: {SPEC_HELP}")
    if spec.strip() in ("", *NAMED_SPECS):
        return
    for part in spec.split(","):
        match = _PART.match(part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise ValueError(f"data.train_classes={spec!r}: cannot read {part!r}; allowed: {SPEC_HELP}")


def parse_train_classes(spec: str, num_classes: int) -> tuple[int, ...] | None:
    """The sorted class ids a spec names among `num_classes` classes; None when it names all of
    them (or is empty): nothing is held out. An id outside the data set is a one-line error."""
    check_spec_syntax(spec)
    spec = spec.strip()
    if not spec:
        return None
    if spec == "first_half":
        ids = set(range(num_classes // 2))
    elif spec == "second_half":
        ids = set(range(num_classes // 2, num_classes))
    else:
        ids = set()
        for part in spec.split(","):
            low, high = _PART.match(part).groups()
            ids.update(range(int(low), int(high if high is not None else low) + 1))
    unknown = sorted(i for i in ids if i >= num_classes)
    if unknown:
        raise ValueError(
            f"data.train_classes={spec!r} names class {unknown[0]}, but the data set has classes 0-{num_classes - 1}"
        )
    if not ids:
        raise ValueError(f"data.train_classes={spec!r} names no class of the {num_classes}")
    return None if len(ids) == num_classes else tuple(sorted(ids))


@dataclasses.dataclass(frozen=True)
class ClassSplit:
    """Seen (training) and held-out classes of a data set with `num_classes` classes."""

    seen: tuple[int, ...]
    num_classes: int

    @property
    def held_out(self) -> tuple[int, ...]:
        return tuple(sorted(set(range(self.num_classes)) - set(self.seen)))

    def relabel_table(self) -> np.ndarray:
        """int32 [num_classes]: the training label of each class id, -1 for held-out ones."""
        table = np.full(self.num_classes, -1, np.int32)
        table[list(self.seen)] = np.arange(len(self.seen), dtype=np.int32)
        return table


def class_split(spec: str, num_classes: int) -> ClassSplit | None:
    """The `ClassSplit` of `data.train_classes` for a data set of `num_classes`; None: nothing held out."""
    seen = parse_train_classes(spec, num_classes)
    return None if seen is None else ClassSplit(seen, num_classes)


def restrict(
    source: Source, classes: tuple[int, ...], *, relabel: bool, missing_ok: bool = False, role: str = "chosen"
) -> Source | None:
    """`source` with only the examples of `classes`, in their original order; with `relabel`,
    labels become positions in `classes` (0..n-1) and `num_classes` becomes n. Indexable sources
    stay indexable (an index map in front of `load`); streamed ones filter their records. A split
    with no example of `classes` gives None with `missing_ok`, else a one-line error that calls
    them the `role` classes."""
    keep_class = np.zeros(source.num_classes, bool)
    keep_class[list(classes)] = True
    table = np.full(source.num_classes, -1, np.int32)
    table[list(classes)] = np.arange(len(classes), dtype=np.int32)
    num_classes = len(classes) if relabel else source.num_classes
    labels = source.labels if source.indexable else source.read_labels()
    kept = np.flatnonzero(keep_class[labels])
    if kept.size == 0:
        if missing_ok:
            return None
        raise ValueError(
            f"data.name={source.name!r}: split {source.split!r} has no example of the {role} classes "
            f"{_short(classes)}; check data.train_classes"
        )
    new_labels = (table[labels[kept]] if relabel else labels[kept]).astype(np.int32)
    if source.indexable:
        return subsets.subset(source, kept, new_labels, num_classes)
    return _restrict_streamed(source, keep_class, table if relabel else None, num_classes, new_labels)


def _restrict_streamed(
    source: Source, keep_class: np.ndarray, table: np.ndarray | None, num_classes: int, labels: np.ndarray
) -> Source:
    tf = tf_module()
    keep = tf.constant(keep_class)
    records, decode = source.records, source.decode

    @functools.cache  # one tf.data object per share, as the source's own records
    def restricted_records(process_index: int, process_count: int):
        return records(process_index, process_count).filter(
            lambda record: tf.gather(keep, tf.cast(record["label"], tf.int32))
        )

    def restricted_decode(record):
        image, label = decode(record)
        return image, (label if table is None else tf.gather(tf.constant(table), label))

    return dataclasses.replace(
        source,
        num_examples=int(labels.shape[0]),
        num_classes=num_classes,
        records=restricted_records,
        decode=restricted_decode,
        read_labels=lambda: labels,
    )


def _short(classes: tuple[int, ...]) -> str:
    return str(list(classes[:8]))[:-1] + (", ...]" if len(classes) > 8 else "]")
