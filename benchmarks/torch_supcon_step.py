"""The PyTorch side of the step comparisons: the SupContrast reference's ResNet-18 or ResNet-50
(`resnet_big.py`: CIFAR stem, or the ImageNet stem for 224 px), MLP head and SupConLoss, SGD with
momentum, one step on ready-made views, timed like `jax-supcon-bench step`.

Not part of the package and not a dependency: run it from its own virtual environment,

    make bench-cpu    # creates .venv-torch with torch==2.13.0 and runs both sides (CPU)

or on a GPU, as benchmarks/accelerator.sh does:

    python benchmarks/torch_supcon_step.py --device=cuda --model=resnet50 --image_size=224 \
        --batch=256 --dtype=bfloat16 --channels_last

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


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != 4 * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


ARCHITECTURES = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


class SupConResNet(nn.Module):
    """SupContrast's `SupConResNet`: a ResNet, then the MLP head feature-feature-128 and L2 norm.

    `stem="cifar"`: 3x3 convolution, no max-pool (the reference); `"imagenet"`: 7x7 stride-2
    convolution and a 3x3 stride-2 max-pool, as torchvision's and jax_supcon's ImageNet stem."""

    def __init__(self, name: str = "resnet18", stem: str = "cifar", feat_dim: int = 128):
        super().__init__()
        block, depths = ARCHITECTURES[name]
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        layers, in_planes = [], 64
        for planes, stride, depth in zip((64, 128, 256, 512), (1, 2, 2, 2), depths, strict=True):
            for index in range(depth):
                layers.append(block(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(in_planes, in_planes), nn.ReLU(inplace=True), nn.Linear(in_planes, feat_dim)
        )

    def forward(self, x):
        out = self.layers(self.stem(x))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return F.normalize(self.head(out).float(), dim=1)


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupContrast's SupConLoss (contrast_mode='all', base_temperature=temperature): [batch, views, dim]."""
    batch, views = features.shape[:2]
    mask = torch.eq(labels[:, None], labels[None, :]).float().repeat(views, views)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    self_mask = 1 - torch.eye(batch * views, device=features.device)
    mask = mask * self_mask
    log_prob = logits - torch.log((torch.exp(logits) * self_mask).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return -mean_log_prob_pos.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ARCHITECTURES), default="resnet18")
    parser.add_argument("--stem", choices=("cifar", "imagenet"), default=None, help="default: imagenet from 96 px")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="bfloat16: autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--channels_last", action="store_true", help="NHWC memory format")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    stem = args.stem or ("imagenet" if args.image_size >= 96 else "cifar")
    torch.manual_seed(0)
    model = SupConResNet(args.model, stem).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    views = torch.randn(2 * args.batch, 3, args.image_size, args.image_size, device=device)  # views 1 then 2
    labels = torch.randint(0, 10, (args.batch,), device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        views = views.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def step() -> torch.Tensor:
        with autocast:
            features = model(views)
        f1, f2 = torch.split(features, [args.batch, args.batch], dim=0)
        loss = supcon_loss(torch.stack([f1, f2], dim=1), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        loss = float(step())  # the host read waits for the device
        if i >= 2:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    record = {
        "bench": "step",
        "framework": f"torch {torch.__version__}",
        "model": f"{args.model} w1.0 {stem} {args.dtype}" + (" channels_last" if args.channels_last else ""),
        "batch": args.batch,
        "views": 2,
        "image_size": args.image_size,
        "steps_timed": len(times),
        "step_time_s": round(median, 4),
        "images_per_s": round(args.batch / median, 1),
        "views_per_s": round(2 * args.batch / median, 1),
        "loss_value": loss,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "huge_pages": "glibc.malloc.hugetlb=1" in os.environ.get("GLIBC_TUNABLES", ""),
    }
    if cuda:
        record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
