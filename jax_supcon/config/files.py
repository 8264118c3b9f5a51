"""Config files as `jax-supcon` reads them: `FILE[:ARG]` and `--config.KEY=VALUE` overrides,
parsed by absl and ml_collections (an unknown key or a wrong type is an error), without running
anything. The sweep plans with it; the documentation test checks every documented command with it."""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections


def flag_error_line(error: Exception) -> str:
    """One line from absl's and ml_collections' flag errors (some span several lines)."""
    text = str(error.args[0]) if error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(error, (KeyError, AttributeError)):  # an override of a key the config lacks
        key = lines[0].strip("\"'")
        return f"unknown config key {key!r}" + "".join(f"; {line}" for line in lines[1:])
    if isinstance(error, OSError):  # ml_collections' report of a config file: its last line says why
        lines = ["cannot load --config:", *lines[-1:]]
    elif any(line.startswith("Traceback") for line in lines):  # an exception in a config file: its last line
        lines = [lines[0].split("Traceback")[0].rstrip(":"), lines[-1]]
    return " ".join(" ".join(lines).split())


def load_config(spec: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config `jax-supcon --config=SPEC OVERRIDES...` would run; a one-line ValueError for a
    config file that does not load, an unknown key or a bad value."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["jax-supcon", f"--config={spec}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True, sys_argv=argv)
    try:
        values(argv)
        config = values["config"].value
        config.get("job")
    except (flags.Error, KeyError, AttributeError, OSError) as error:
        if overrides and not isinstance(error, OSError):
            plain = load_config(spec, [])
            for override in overrides:
                key = override.removeprefix("--config.").partition("=")[0]
                if not has_key(plain, key):
                    raise ValueError(f"{override}: unknown config key {key!r}") from None
        raise ValueError(flag_error_line(error)) from None
    return config


def has_key(config: ml_collections.ConfigDict, key: str) -> bool:
    """Whether dotted `key` (`loss.temperature`) names a value of `config`."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True
