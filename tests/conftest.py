"""Eight fake CPU devices for every test, and the platform setup the entry points apply (both
before JAX initialises its backend). A 1-device run in the same process uses a mesh over
`jax.devices()[:1]`.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
# One persistent XLA compilation cache for the session, its test workers and the CLI processes the
# tests start: most tests compile the same tiny programs, and a hit costs milliseconds instead of a
# compilation (a tiny pretraining run: 13.5 s cold, 6.0 s warm). It lives in .pytest_cache.
_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, ".pytest_cache", "jax-compilation")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.normpath(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests compile hundreds of tiny programs and run each a few steps, so compiling is most of
# their time. Two XLA:CPU settings make it cheaper: no LLVM backend optimisation, and the elemental
# fusion emitters instead of the MLIR ones. A tiny pretraining step compiles in 1.4 s with both,
# 4.2 s with the first alone, 7.8 s with neither (one core, 2026-12-08). Numerics are compared with
# tolerances or within one setting, which they do not change. Also for the processes tests start.
TEST_XLA_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}
for _flag, _value in TEST_XLA_FLAGS.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()

import json  # noqa: E402

import pytest  # noqa: E402

from jax_supcon import platform  # noqa: E402

platform.configure()  # XLA:CPU flags and CPU convolutions, as the console scripts (no huge-page restart)


def tiny(config):
    """Shrink a recipe to a seconds-long run: 8x8 images, an 8-channel two-stage ResNet."""
    config.data.image_size = 8
    config.model.name = "resnet_tiny"
    config.model.width = 0.125
    config.model.proj_dim = 8
    config.batch_size = 16
    config.eval_batch_size = 64
    config.total_steps = 3
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.optimizer.warmup_steps = 0
    config.eval_every_steps = 0  # validation and plots only in the tests about them
    config.plots = False
    config.knn_k = 20
    return config


# The command-line twin of `tiny` (a seconds-long digits pretraining run), for subprocess tests.
TINY_CLI = (
    "--config=configs/digits_supcon.py",
    "--config.model.name=resnet_tiny",
    "--config.model.width=0.125",
    "--config.model.proj_dim=8",
    "--config.data.image_size=8",
    "--config.batch_size=16",
    "--config.eval_batch_size=64",
    "--config.optimizer.warmup_steps=0",
    "--config.eval_every_steps=0",
    "--config.plots=False",
)


@pytest.fixture
def pretrain_config():
    from configs import digits_supcon

    return tiny(digits_supcon.get_config())


@pytest.fixture
def linear_config():
    from configs import digits_linear

    config = tiny(digits_linear.get_config())
    config.linear_augment = True  # the path most linear-evaluation tests exercise (augmented views per step);
    config.precompute_features = False  # the demo's precomputed features have tests of their own
    return config


def read_metrics(workdir):
    with open(f"{workdir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def compiled_pretraining(config, mesh):
    """(config with the data's class count, training source, fresh state, compiled pretraining step)
    on `mesh`, without a workdir: for tests that drive the step themselves (the job's own program,
    `jobs.pretrain.compiled_pretraining`)."""
    from jax_supcon.jobs import pretrain
    from jax_supcon.train import inputs
    from jax_supcon.train.state import init_state

    data = inputs.load_training_data(config, mesh)
    config, train = data.config, data.train
    program = pretrain.compiled_pretraining(config, mesh, total_steps=data.total_steps, warmup_steps=data.warmup_steps)
    state, step = init_state(program.init, program.target), program.step
    return config, train, state, step
