"""Fine-tuning: a pretrained encoder (a stage-1 run's, `pretrained_workdir`, or imported weights,
`model.init_from`) and a new linear classifier trained end to end with cross-entropy, the encoder
at `optimizer.encoder_lr_multiplier` times the classifier's learning rate; with
`data.label_fraction` the semi-supervised protocol of SimCLR (1% / 10% of the labels). Reports
test top-1 and top-5 like the supervised baseline."""

from __future__ import annotations

import ml_collections
from jax.sharding import Mesh

from jax_supcon.train import end_to_end, inputs, lock, preemption, pretrained


@preemption.stops_on_sigterm
@lock.holds_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) fine-tuning in `workdir`; returns its summary."""
    data = inputs.load_training_data(config, mesh)
    config = data.config
    if not config.pretrained_workdir and not config.model.init_from:
        raise ValueError(
            "finetune needs a starting encoder: --config.pretrained_workdir=DIR (a stage-1 run) or "
            "--config.model.init_from=FILE (torchvision/timm weights)"
        )
    if config.pretrained_workdir and config.model.init_from:
        raise ValueError(
            f"finetune starts from one encoder: pretrained_workdir={config.pretrained_workdir!r} or "
            f"model.init_from={config.model.init_from!r}, not both"
        )
    pin = None
    if config.pretrained_workdir:
        pre_config, _, state, _, pin = pretrained.restore_pinned(
            workdir, config.pretrained_workdir, data.mesh, str(config.checkpoint)
        )
        config = pretrained.inherit_pretrained(config, pre_config)
        pretrained.check_same_validation(config, pre_config)
        trained = pretrained.pretrained_variables(state, pre_config, config.pretrained_ema)
        encoder = pretrained.encoder_variables(trained)

        def initial_encoder(target):
            return lambda: encoder
    else:

        def initial_encoder(target):
            return pretrained.encoder_importer(config.model, target)

    return end_to_end.train_end_to_end(
        config,
        workdir,
        data,
        job="finetune",
        initial_encoder=initial_encoder,
        encoder_lr_multiplier=config.optimizer.encoder_lr_multiplier,
        before_start=lambda: pretrained.write_pin(workdir, pin),
    )
