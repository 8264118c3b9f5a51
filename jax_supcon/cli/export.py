"""Export a trained embedding for serving.

    jax-supcon-export --workdir=DIR --out=OUT [--checkpoint=best|latest|STEP] [--use_ema]
                                                                   (or python -m jax_supcon.export)

OUT gets `saved_model/`, a TensorFlow SavedModel (through `jax.experimental.jax2tf`) whose
`serving_default` signature takes uint8 images `[batch, S, S, 3]` at the run's size (any batch
of one or more; `jax.export`'s symbolic batch is at least 1)
and returns `encoder` (and `projection`, L2-normalised, for a pretraining run), and
`embedder.jax_export`, the same function serialised with `jax.export` for CPU and CUDA
(`jax.export.deserialize(open(path, "rb").read()).call(images)`), plus `export.json` saying what
they hold. Preprocessing (scaling, normalisation) is inside; resizing is the caller's.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

from absl import app, flags

from jax_supcon import cli

EXPORT_PLATFORMS = ("cpu", "cuda")


def define_flags(values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """The command's flags, defined into `values` (`sys_argv`: unused; every command takes it)."""
    flags.DEFINE_string("workdir", None, "A pretrain, finetune or supervised workdir.", flag_values=values)
    flags.DEFINE_string("out", None, "Output folder (new, or empty).", flag_values=values)
    flags.DEFINE_string(
        "checkpoint", None, "best, latest or a step (default: best where kept, else latest).", flag_values=values
    )
    flags.DEFINE_bool("use_ema", False, "Export the run's EMA weights.", flag_values=values)
    flags.mark_flags_as_required(["workdir", "out"], flag_values=values)


def _folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _check_out(out: str) -> None:
    """A one-line ValueError unless `out` can become the export's folder: absent or an empty folder,
    under folders (or where folders can be made)."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out={out!r} exists and is not an empty folder; nothing is overwritten")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--out={out!r} is under {parent!r}, which is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out={out!r}: cannot write under {parent!r}")


def _publish(staging: str, out: str) -> None:
    """Move the finished `staging` folder to `out` in one rename, which refuses a non-empty `out`:
    of two exports to one folder, the second gets a one-line error and its files are removed."""
    try:
        os.rename(staging, out)  # replaces an empty folder, never a non-empty one
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        raise ValueError(
            f"--out={out!r} was filled by another export while this one ran; nothing is overwritten"
        ) from None


def export(workdir: str, out: str, *, checkpoint: str | None = None, use_ema: bool = False) -> dict:
    """Write the SavedModel and the `jax.export` file of a run's embedding into `out`, through a
    staging folder of this call's own beside it (removed if anything fails)."""
    _check_out(out)
    import jax
    from jax import export as jax_export

    from jax_supcon.embedder import Embedder

    embedder = Embedder.from_workdir(workdir, checkpoint, use_ema)
    serve, size = embedder.serving_function(), embedder.image_size
    shape = jax_export.symbolic_shape(f"b, {size}, {size}, 3")
    exported = jax_export.export(jax.jit(serve), platforms=EXPORT_PLATFORMS)(jax.ShapeDtypeStruct(shape, "uint8"))

    parent, name = os.path.split(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f"{name}.partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is private; the export is not
    try:
        info = _write(staging, workdir, embedder, serve, exported, use_ema)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sizes = {
        "saved_model_bytes": _folder_size(os.path.join(out, "saved_model")),
        "jax_export_bytes": os.path.getsize(os.path.join(out, "embedder.jax_export")),
    }
    return info | sizes | {"out": out}


def _write(staging: str, workdir: str, embedder, serve, exported, use_ema: bool) -> dict:
    """The export's files into `staging`; what `export.json` says of them."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    size = embedder.image_size
    with open(os.path.join(staging, "embedder.jax_export"), "wb") as f:
        f.write(exported.serialize())
    module = tf.Module()
    module.serve = tf.function(
        jax2tf.convert(serve, polymorphic_shapes=[f"(b, {size}, {size}, 3)"], with_gradient=False),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")],
        autograph=False,
    )
    tf.saved_model.save(module, os.path.join(staging, "saved_model"), signatures={"serving_default": module.serve})
    info = {
        "workdir": os.path.abspath(workdir),
        "job": embedder.config.job,
        "checkpoint_step": embedder.step,
        "weights": "ema" if use_ema else "trained",
        "input": f"uint8 [batch, {size}, {size}, 3]",
        "outputs": list(embedder.names),
        "platforms": list(EXPORT_PLATFORMS),
    }
    with open(os.path.join(staging, "export.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    with cli.user_errors("jax-supcon-export"):
        summary = export(options.workdir, options.out, checkpoint=options.checkpoint, use_ema=options.use_ema)
    print(json.dumps(summary, indent=1))


DESCRIPTION = f"""jax-supcon-export: a trained run's embedding as a TensorFlow SavedModel and a jax.export file.

{__doc__.split(chr(10), 2)[2].strip()}
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-export`)."""
    define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__)
