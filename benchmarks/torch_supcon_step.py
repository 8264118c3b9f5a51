"""The PyTorch side of the CPU step comparison: the SupContrast reference's ResNet-18 (CIFAR stem),
MLP head and SupConLoss, SGD with momentum, one step on ready-made views, timed like
`python -m jax_supcon.bench step --config=configs/bench_cifar_resnet18.py`.

Not part of the package and not a dependency: run it from its own virtual environment,

    make bench-cpu    # creates .venv-torch with torch==2.13.0 and runs both sides

It prints one JSON line like the JAX benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SupConResNet18(nn.Module):
    """SupContrast's `SupConResNet(name='resnet18')`: 3x3 stem, no max-pool, MLP head 512-512-128."""

    def __init__(self, feat_dim: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, feat_dim))

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return F.normalize(self.head(out), dim=1)


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupContrast's SupConLoss (contrast_mode='all', base_temperature=temperature): [batch, views, dim]."""
    batch, views = features.shape[:2]
    mask = torch.eq(labels[:, None], labels[None, :]).float().repeat(views, views)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    self_mask = 1 - torch.eye(batch * views)
    mask = mask * self_mask
    log_prob = logits - torch.log((torch.exp(logits) * self_mask).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return -mean_log_prob_pos.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--channels_last", action="store_true", help="NHWC memory format")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SupConResNet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    views = torch.randn(2 * args.batch, 3, args.image_size, args.image_size)  # views 1 then views 2
    labels = torch.randint(0, 10, (args.batch,))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        views = views.contiguous(memory_format=torch.channels_last)

    def step() -> float:
        features = model(views)
        f1, f2 = torch.split(features, [args.batch, args.batch], dim=0)
        loss = supcon_loss(torch.stack([f1, f2], dim=1), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        loss = step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        json.dumps(
            {
                "bench": "step",
                "framework": f"torch {torch.__version__}",
                "model": "resnet18 w1.0 cifar float32" + (" channels_last" if args.channels_last else ""),
                "batch": args.batch,
                "views": 2,
                "image_size": args.image_size,
                "steps_timed": len(times),
                "step_time_s": round(median, 4),
                "images_per_s": round(args.batch / median, 1),
                "views_per_s": round(2 * args.batch / median, 1),
                "loss_value": loss,
                "threads": torch.get_num_threads(),
                "huge_pages": "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", ""),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
