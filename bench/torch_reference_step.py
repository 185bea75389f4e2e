#!/usr/bin/env python3
"""The reference training step of bench/step.ts in PyTorch on the CPU (the speed target).

ResNet-18, small-image variant (3x3 stride-1 stem, no max pool, stage widths 32/64/128/256),
1 input channel, 28x28 input, batch 64, global average pool -> Linear(256 -> 128), loss = mean of
the squared outputs, SGD with momentum 0.9 (lr 0.01). One step = zero_grad, forward, backward,
update, loss read back (`.item()`). Prints one JSON line:
  {"pytorchSecondsPerStep": x, "threads": n, "torch": version}
(the median of --steps timed steps after one warm-up step), or, without torch, prints
{"error": "..."} and exits with status 3. Optional: bench/step.ts runs it when torch imports.

Usage: /usr/bin/python3 bench/torch_reference_step.py [--steps 5] [--threads N] [--serve]
"""
import argparse
import json
import os
import statistics
import sys
import time

from torch_ssl_step import build_backbone, serve

TORCH_MISSING_EXIT = 3

BATCH = 64
IMAGE_SIZE = 28
IN_CHANNELS = 1
WIDTHS = (32, 64, 128, 256)
OUT_FEATURES = 128
LR = 0.01
MOMENTUM = 0.9


def build_model(torch):
    # The SSL peer's backbone (same torchvision BasicBlocks) with a linear head.
    from torch import nn
    return nn.Sequential(build_backbone(nn, WIDTHS, IN_CHANNELS), nn.Linear(WIDTHS[-1], OUT_FEATURES))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--serve", action="store_true",
                        help="after the warm-up print {\"ready\": true}, then time one step per "
                        "line read from stdin and print {\"seconds\": x} (bench/step.ts "
                        "interleaves these steps with its own)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    try:
        import torch
        import torchvision  # noqa: F401  (BasicBlock comes from torchvision)
    except ImportError as error:
        print(json.dumps({"error": f"torch missing: {error}"}))
        sys.exit(TORCH_MISSING_EXIT)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_model(torch).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    images = torch.randn(BATCH, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss = model(images).square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    step()  # warm-up: allocations, oneDNN primitive caches
    if args.serve:
        serve(step, torch)
        return
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({
        "pytorchSecondsPerStep": statistics.median(seconds),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
