"""Where the CPU step's time goes: every convolution of ResNet-18 (CIFAR stem, 128 views of 32x32)
timed alone, forward, input gradient and weight gradient, in JAX (this library's convolution) or
in PyTorch, so the two sides compare layer by layer.

    .venv/bin/python benchmarks/conv_layers.py jax
    .venv-torch/bin/python benchmarks/conv_layers.py torch [--channels_last]

One line per layer shape (milliseconds, median of 7), then the totals weighted by how often each
shape occurs in the network. PyTorch's gradients are timed as forward + backward minus forward.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

BATCH = 128
LAYOUT = ("NHWC", "HWIO", "NHWC")
# name, spatial size of the input, in channels, out channels, kernel, stride, occurrences
LAYERS = [
    ("stem", 32, 3, 64, 3, 1, 1),
    ("layer1", 32, 64, 64, 3, 1, 4),
    ("layer2 3x3/2", 32, 64, 128, 3, 2, 1),
    ("layer2 1x1/2", 32, 64, 128, 1, 2, 1),
    ("layer2", 16, 128, 128, 3, 1, 3),
    ("layer3 3x3/2", 16, 128, 256, 3, 2, 1),
    ("layer3 1x1/2", 16, 128, 256, 1, 2, 1),
    ("layer3", 8, 256, 256, 3, 1, 3),
    ("layer4 3x3/2", 8, 256, 512, 3, 2, 1),
    ("layer4 1x1/2", 8, 256, 512, 1, 2, 1),
    ("layer4", 4, 512, 512, 3, 1, 3),
]


def median_ms(fn: Callable[[], object], repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def jax_layer(size: int, c_in: int, c_out: int, kernel: int, stride: int) -> tuple[float, float, float]:
    import jax

    from jax_supcon.models.conv import conv_general_dilated

    pad = kernel // 2

    def conv(x, w):
        return conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=LAYOUT)

    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, size, size, c_in))
    w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, c_in, c_out)) * 0.05
    dy = jax.random.normal(jax.random.PRNGKey(2), conv(x, w).shape)
    forward = jax.jit(conv)
    input_grad = jax.jit(lambda x, w, dy: jax.vjp(lambda x_: conv(x_, w), x)[1](dy)[0])
    weight_grad = jax.jit(lambda x, w, dy: jax.vjp(lambda w_: conv(x, w_), w)[1](dy)[0])
    return (
        median_ms(lambda: forward(x, w).block_until_ready()),
        median_ms(lambda: input_grad(x, w, dy).block_until_ready()),
        median_ms(lambda: weight_grad(x, w, dy).block_until_ready()),
    )


def torch_layer(size: int, c_in: int, c_out: int, kernel: int, stride: int, channels_last: bool):
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(BATCH, c_in, size, size).contiguous(memory_format=fmt)
    w = (torch.randn(c_out, c_in, kernel, kernel) * 0.05).contiguous(memory_format=fmt)

    def conv(x, w):
        return torch.nn.functional.conv2d(x, w, stride=stride, padding=kernel // 2)

    dy = torch.randn_like(conv(x, w))
    x_req, w_req = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with torch.no_grad():
        forward = median_ms(lambda: conv(x, w))
    input_grad = median_ms(lambda: torch.autograd.grad(conv(x_req, w), x_req, dy)) - forward
    weight_grad = median_ms(lambda: torch.autograd.grad(conv(x, w_req), w_req, dy)) - forward
    return forward, input_grad, weight_grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=("jax", "torch"))
    parser.add_argument("--channels_last", action="store_true", help="PyTorch only: NHWC memory format")
    args = parser.parse_args()
    if args.framework == "jax":
        from jax_supcon import platform

        platform.configure(huge_pages=True)  # as the training entry points do
    totals = [0.0, 0.0, 0.0]
    for name, size, c_in, c_out, kernel, stride, count in LAYERS:
        if args.framework == "jax":
            times = jax_layer(size, c_in, c_out, kernel, stride)
        else:
            times = torch_layer(size, c_in, c_out, kernel, stride, args.channels_last)
        totals = [total + count * t for total, t in zip(totals, times, strict=True)]
        print(
            f"{name:13s} x{count}  forward {times[0]:6.1f}  input grad {times[1]:6.1f}  weight grad {times[2]:6.1f} ms"
        )
    print(
        f"network total  forward {totals[0]:.0f}  input grad {totals[1]:.0f}  weight grad {totals[2]:.0f}"
        f"  all {sum(totals):.0f} ms"
    )


if __name__ == "__main__":
    main()
