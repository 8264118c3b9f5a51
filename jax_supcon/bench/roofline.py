"""`roofline`: what the device can do, measured in the same run as the figures it bounds: a
square bf16 matmul, an fp32 one at the default precision (TF32 where the device has it) and at
"highest", and a device-to-device copy (`x + 1` over `--copy_mib`: bytes read + written / s)."""

from __future__ import annotations

from absl import flags

from jax_supcon.bench import common

USAGE = "[--matmul_size=8192] [--copy_mib=1024] [--repeats=3]"
SUMMARY = "matmul TFLOP/s (bf16, fp32) and copy GiB/s of this device"


def define_flags(values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
    flags.DEFINE_integer("matmul_size", 8192, "Side of the square matmuls.", flag_values=values)
    flags.DEFINE_integer("copy_mib", 1024, "Size of the copied fp32 array (MiB).", flag_values=values)
    common.define_repeats(values, __name__)


def run(options: flags.FlagValues) -> None:
    """Matmul rates (bf16, fp32 default and highest precision) and copy bandwidth of device 0."""
    import jax
    import jax.numpy as jnp

    common.check_counts(options, ("matmul_size", "copy_mib", "repeats"))
    size, repeats = options.matmul_size, options.repeats
    device = jax.devices()[0].device_kind
    for case, dtype, precision in (
        ("matmul_bf16", jnp.bfloat16, None),
        ("matmul_fp32", jnp.float32, None),
        ("matmul_fp32_highest", jnp.float32, jax.lax.Precision.HIGHEST),
    ):
        a, b = (jax.random.normal(jax.random.PRNGKey(i), (size, size), dtype) for i in range(2))
        compiled = jax.jit(lambda x, y, p=precision: jnp.matmul(x, y, precision=p)).lower(a, b).compile()
        seconds = common.median_s(lambda c=compiled, x=a, y=b: c(x, y), repeats)
        record = {"bench": "roofline", "case": case, "size": size, "time_s": common.significant(seconds)}
        flops = 2 * size**3 / seconds / 1e12
        print(common.to_json(record | {"tflop_per_s": common.significant(flops), "device": device}), flush=True)
        del a, b
    x = jnp.zeros((options.copy_mib * 2**20 // 4,), jnp.float32)
    compiled = jax.jit(lambda v: v + 1.0).lower(x).compile()
    seconds = common.median_s(lambda: compiled(x), repeats)
    record = {"bench": "roofline", "case": "copy_fp32", "mib": options.copy_mib, "time_s": common.significant(seconds)}
    rate = common.significant(2 * x.nbytes / seconds / 2**30)
    print(common.to_json(record | {"gib_per_s": rate, "device": device}), flush=True)
