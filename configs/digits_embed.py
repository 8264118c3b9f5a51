"""Embeddings of the digits test split from a stage-1 workdir (`--config.pretrained_workdir=DIR`).

`--config.checkpoint=best|latest|STEP` picks the checkpoint; `--config.embed_split=train` the split.
"""

from jax_supcon.config import base_config, sibling


def get_config():
    config = base_config()
    config.job = "embed"
    sibling(__file__, "datasets").digits(config)
    config.eval_batch_size = 256
    config.total_steps = 1  # unused by this job; kept so durations resolve like every other job
    config.checkpoint = "best"
    return config
