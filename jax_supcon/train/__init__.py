"""One module per job; `JOBS` maps `config.job` to its `train_and_evaluate(config, workdir)`."""

from jax_supcon.train import embed, linear_eval, pretrain, supervised

JOBS = {
    "pretrain": pretrain.train_and_evaluate,
    "linear_eval": linear_eval.train_and_evaluate,
    "embed": embed.train_and_evaluate,
    "supervised": supervised.train_and_evaluate,
}
