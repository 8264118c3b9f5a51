"""Pretrained encoder weights in (`model.init_from`): a torchvision or timm ResNet state dict
mapped onto the Flax ResNet of the same depth.

Both libraries name a ResNet the same way (`conv1`, `bn1`, `layer{s}.{b}.conv{i}`, `bn{i}`,
`downsample.{0,1}`, `fc`), and jax_supcon's ResNet has torchvision's layer shapes, so the map is
by position: stem, stage s block b, i-th convolution / BatchNorm, projection shortcut.
Convolutions go from OIHW to HWIO; BatchNorm's weight, bias, running mean and running variance
become scale, bias, mean and var; `fc.*` (the classifier) and `num_batches_tracked` are dropped;
a `module.` prefix (DataParallel) is ignored.

`.safetensors` files are read with the safetensors library, no torch needed; `.pth`/`.pt` files
need torch and are read with `torch.load(weights_only=True)`, so a weight file can never run code.
Nothing is downloaded: get weights from torchvision (`ResNet50_Weights.IMAGENET1K_V2`, saved with
`safetensors.torch.save_file(model.state_dict(), "r50.safetensors")`) or the Hugging Face hub
(timm's `resnet50.a1_in1k` ships `model.safetensors`).
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

SUFFIXES = (".safetensors", ".pth", ".pt")
DROPPED = re.compile(r"(^fc\.|num_batches_tracked$)")
_BLOCK = re.compile(r"^stage(\d+)_block(\d+)$")
_NORM_FIELDS = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def check_init_from(path: str) -> None:
    """One-line errors for a `model.init_from` that cannot be a weight file (checked with the
    config, before anything is read or compiled); "" means random initialisation."""
    if not isinstance(path, str) or (path and not path.endswith(SUFFIXES)):
        raise ValueError(f"model.init_from={path!r}; allowed: '' (random) or a file ending in {' or '.join(SUFFIXES)}")
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"model.init_from={path!r} does not exist")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> NumPy array of a `.safetensors` or `.pth`/`.pt` weight file; a missing, unreadable
    or unknown file is a one-line error naming it."""
    check_init_from(path)
    if not path:
        raise ValueError("model.init_from is empty: no weight file to read")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"model.init_from={path!r} is not a readable safetensors file ({error})") from None
    else:
        state = _read_torch(path)
    return {name.removeprefix("module."): np.asarray(value) for name, value in state.items()}


def _checked_value(source: str, name: str, value: np.ndarray) -> np.ndarray:
    """A weight tensor as float32, or a one-line error: integer (quantised) or non-finite values
    are not float weights (BatchNorm's `num_batches_tracked` counter is dropped before this)."""
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(
            f"model.init_from={source!r}: {name!r} holds {value.dtype} values, not floating-point weights "
            "(a quantised file? save the float weights)"
        )
    if not np.all(np.isfinite(value)):
        raise ValueError(f"model.init_from={source!r}: {name!r} holds NaN or infinite values")
    return value.astype(np.float32)


def _read_torch(path: str) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"model.init_from={path!r}: reading .pth/.pt needs torch (pip install torch), or convert the file to "
            ".safetensors (safetensors.torch.save_file(torch.load(path), 'weights.safetensors'))"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad files (and for pickled code)
        raise ValueError(f"model.init_from={path!r} is not a readable weights-only state dict ({error})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"model.init_from={path!r} holds a {type(state).__name__}, not a state dict")
    return {
        name: value.float().numpy() if value.is_floating_point() else value.numpy() for name, value in state.items()
    }


def torch_name(path: tuple[str, ...]) -> str:
    """The torchvision name of a Flax encoder variable, by its path in `params` or `batch_stats`
    (e.g. ("stage2_block1", "proj_norm", "mean") -> "layer2.0.downsample.1.running_mean")."""
    *modules, field = path
    prefix = []
    for module in modules:
        block = _BLOCK.match(module)
        if block:
            prefix.append(f"layer{block.group(1)}.{int(block.group(2)) - 1}")
        elif module == "stem_conv":
            prefix.append("conv1")
        elif module == "stem_norm":
            prefix.append("bn1")
        elif module == "proj":
            prefix.append("downsample.0")
        elif module == "proj_norm":
            prefix.append("downsample.1")
        elif module.startswith("Conv_"):
            prefix.append(f"conv{int(module[5:]) + 1}")
        elif module.startswith("BatchNorm_"):
            prefix.append(f"bn{int(module[10:]) + 1}")
        else:
            raise ValueError(f"no torchvision name for encoder variable {'/'.join(path)}")
    return ".".join([*prefix, "weight" if field == "kernel" else _NORM_FIELDS[field]])


def to_flax_layout(name: str, value: np.ndarray) -> np.ndarray:
    """A torchvision array in the Flax layout: convolutions OIHW -> HWIO, the rest unchanged."""
    return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value


def to_torch_layout(name: str, value: np.ndarray) -> np.ndarray:
    return np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value


def encoder_from_state_dict(state: dict[str, np.ndarray], template: dict[str, Any], *, source: str) -> dict[str, Any]:
    """`{"params", "batch_stats"}` of the encoder shaped like `template` (its own initial
    variables), filled from a torchvision-layout state dict. The first variable the file lacks
    or has in another shape, or a file parameter the encoder has no place for (a deeper or wider
    network), is a one-line error naming it with both shapes."""
    import jax

    used = set()

    def fill(path, leaf):
        keys = tuple(getattr(entry, "key", str(entry)) for entry in path)
        name = torch_name(keys)
        if name not in state:
            raise ValueError(f"model.init_from={source!r} has no {name!r} (for encoder {'/'.join(keys)}, {leaf.shape})")
        value = to_flax_layout(name, state[name])
        if value.shape != tuple(leaf.shape):
            raise ValueError(
                f"model.init_from={source!r}: {name!r} has shape {tuple(state[name].shape)} (as Flax "
                f"{value.shape}), encoder {'/'.join(keys)} needs {tuple(leaf.shape)}: is model.name/width/stem "
                "the network the file was saved from?"
            )
        used.add(name)
        return _checked_value(source, name, value)

    filled = {key: jax.tree_util.tree_map_with_path(fill, template[key]) for key in ("params", "batch_stats")}
    extra = sorted(name for name in state if name not in used and not DROPPED.search(name))
    if extra:
        raise ValueError(
            f"model.init_from={source!r} has {extra[0]!r} {tuple(state[extra[0]].shape)} (and {len(extra) - 1} more) "
            "that the encoder has no place for: is model.name the depth the file was saved from?"
        )
    return filled


def state_dict_from_encoder(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    """The torchvision-layout state dict of encoder `variables` (the inverse map): for exporting
    a trained encoder to PyTorch, and for tests."""
    import jax

    state = {}
    for key in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables[key]):
            name = torch_name(tuple(getattr(entry, "key", str(entry)) for entry in path))
            # C order: safetensors writes the raw buffer of a transposed view as if it were contiguous
            state[name] = np.ascontiguousarray(to_torch_layout(name, np.asarray(leaf, np.float32)))
    return state
