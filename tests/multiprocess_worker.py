"""One process of a two-process CPU run (gloo collectives): `python multiprocess_worker.py ID PORT WORKDIR`.

Used by tests/test_parallel.py; prints the run's summary as JSON on its last line.
"""

import json
import os
import sys

os.environ["JAX_NUM_CPU_DEVICES"] = "2"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import jax  # noqa: E402

process_id, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

from conftest import tiny  # noqa: E402

from configs import digits_supcon  # noqa: E402
from jax_supcon.train import pretrain  # noqa: E402

config = tiny(digits_supcon.get_config())
config.update(dict(total_steps=4, eval_every_steps=2, plots=True))
summary = pretrain.train_and_evaluate(config, workdir)
print(json.dumps(summary), flush=True)
