"""What every job shares: the train state and its jitted step (`state`), the step loop with its
stop rules (`loop`), the workdir's files and resume rules (`workdir`), the training input
(`inputs`) and restoring a stage-1 run (`pretrained`). Jobs live in `jax_supcon.jobs`."""
