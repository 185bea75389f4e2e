#!/usr/bin/env python3
"""The SSL training step of bench/step.ts in PyTorch on the CPU (the peer of `SslModel.step`).

METHOD.md's BYOL-style step with the truncated triplet loss: ResNet-18 (small-image variant: 3x3
stride-1 stem, no max pool) at the given stage widths, 1 input channel, global average pool ->
projector Linear -> BatchNorm1d -> ReLU -> Linear (online: the same predictor after it), two
random-normal views of a batch. One step = zero the gradients, online forward of both views,
target forward of both views (no grad, batch statistics), the loss of both directions (normalise,
S = P_hat Z_hat^T, each row's negatives sorted by distance d = -2 S, the mean distance of the
window's ranks as the deputy, hinge max(0, gamma d_ap - d_an + M), mean), backward, LARS (trust
ratio per tensor; BatchNorm weights/biases and biases excluded: trust 1, no weight decay), EMA of
the target's parameters and BatchNorm running statistics, loss read back (`.item()`).

Prints one JSON line: {"pytorchSecondsPerStep": median, "stepSeconds": [...], "threads": n,
"torch": version} (the median of --steps timed steps after one warm-up), or, without torch,
{"error": "..."} with exit status 3. Optional: bench/step.ts runs it when torch imports.

Usage: /usr/bin/python3 bench/torch_ssl_step.py [--batch 64] [--widths 8,16,32,64]
  [--image-size 28] [--projector-hidden 512] [--projector-out 64] [--predictor-hidden 512]
  [--window 11,19] [--gamma 2] [--margin 100] [--lr 3.0] [--momentum 0.9] [--weight-decay 1e-6]
  [--eta 0.001] [--ema 0.9] [--steps 5] [--threads N] [--serve]
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

TORCH_MISSING_EXIT = 3
IN_CHANNELS = 1


def int_list(text):
    return [int(v) for v in text.split(",")]


def build_backbone(nn, widths, in_channels=IN_CHANNELS):
    from torchvision.models.resnet import BasicBlock

    def stage(in_planes, planes, stride):
        downsample = None
        if stride != 1 or in_planes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        return nn.Sequential(
            BasicBlock(in_planes, planes, stride, downsample),
            BasicBlock(planes, planes),
        )

    layers = [
        nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    in_planes = widths[0]
    for index, planes in enumerate(widths):
        layers.append(stage(in_planes, planes, 1 if index == 0 else 2))
        in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def mlp(nn, in_features, hidden, out_features):
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )


def serve(step, torch):
    """Time one step per line on stdin, one JSON line each, until stdin closes."""
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}),
          flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        loss = step()
        seconds = time.perf_counter() - start
        if loss != loss:
            print(json.dumps({"error": "the loss is NaN"}), flush=True)
            sys.exit(1)
        print(json.dumps({"seconds": seconds}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--widths", type=int_list, default=[8, 16, 32, 64])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--projector-hidden", type=int, default=512)
    parser.add_argument("--projector-out", type=int, default=64)
    parser.add_argument("--predictor-hidden", type=int, default=512)
    parser.add_argument("--window", type=int_list, default=[11, 19], help="1-based ranks")
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--margin", type=float, default=100.0)
    parser.add_argument("--lr", type=float, default=3.0)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-6)
    parser.add_argument("--eta", type=float, default=0.001)
    parser.add_argument("--ema", type=float, default=0.9, help="EMA momentum m")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--serve", action="store_true",
                        help="after the warm-up print {\"ready\": true}, then time one step per "
                        "line read from stdin and print {\"seconds\": x} (bench/step.ts "
                        "interleaves these steps with its own)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if len(args.widths) != 4 or len(args.window) != 2:
        parser.error("--widths takes four stage widths and --window two ranks")
    first, last = args.window
    if not 1 <= first <= last <= args.batch - 1:
        parser.error(f"--window {first},{last} must lie within the {args.batch - 1} negatives")
    try:
        import torch
        import torchvision  # noqa: F401  (BasicBlock comes from torchvision)
        from torch import nn
        import torch.nn.functional as F
    except ImportError as error:
        print(json.dumps({"error": f"torch missing: {error}"}))
        sys.exit(TORCH_MISSING_EXIT)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    backbone = build_backbone(nn, args.widths)
    projector = mlp(nn, args.widths[-1], args.projector_hidden, args.projector_out)
    predictor = mlp(nn, args.projector_out, args.predictor_hidden, args.projector_out)
    online = nn.Sequential(backbone, projector, predictor).train()
    # The target starts as a copy of the online backbone + projector; gradients never reach it.
    target = copy.deepcopy(nn.Sequential(backbone, projector)).train()
    for p in target.parameters():
        p.requires_grad_(False)

    parameters = list(online.parameters())
    # METHOD.md's exclusions: BatchNorm weights/biases and all biases are exactly the 1-d tensors.
    excluded = [p.ndim == 1 for p in parameters]
    velocity = [torch.zeros_like(p) for p in parameters]
    # Online tensors the target mirrors (parameters and BN running statistics, in module order).
    online_mirrored = list(backbone.parameters()) + list(projector.parameters())
    target_mirrored = list(target.parameters())
    online_stats = [b for b in nn.Sequential(backbone, projector).buffers() if b.is_floating_point()]
    target_stats = [b for b in target.buffers() if b.is_floating_point()]

    shape = (args.batch, IN_CHANNELS, args.image_size, args.image_size)
    view1, view2 = torch.randn(shape), torch.randn(shape)
    eye = torch.eye(args.batch, dtype=torch.bool)

    def direction(p, z):
        """One direction of the truncated triplet loss (sort-based deputy)."""
        distances = -2.0 * (F.normalize(p, dim=1) @ F.normalize(z, dim=1).t())
        positive = distances.diagonal()
        # The positive sorts last, so ranks 1..n-1 of each row are its negatives, ascending.
        negatives = distances.masked_fill(eye, float("inf"))
        ranked, _ = negatives.sort(dim=1)
        deputy = ranked[:, first - 1:last].mean(dim=1)
        return F.relu(args.gamma * positive - deputy + args.margin).mean()

    @torch.no_grad()
    def lars():
        for p, v, skip in zip(parameters, velocity, excluded):
            g = p.grad
            if skip:
                v.mul_(args.momentum).add_(g, alpha=args.lr)
            else:
                w_norm, g_norm = p.norm(), g.norm()
                trust = torch.where(
                    (w_norm > 0) & (g_norm > 0),
                    args.eta * w_norm / (g_norm + args.weight_decay * w_norm),
                    torch.ones_like(w_norm),
                )
                v.mul_(args.momentum).add_((g + args.weight_decay * p) * (args.lr * trust))
            p.sub_(v)

    @torch.no_grad()
    def ema():
        for t, o in zip(target_mirrored + target_stats, online_mirrored + online_stats):
            t.mul_(args.ema).add_(o, alpha=1 - args.ema)

    def step():
        online.zero_grad(set_to_none=False)
        p1, p2 = online(view1), online(view2)
        with torch.no_grad():
            z1, z2 = target(view1), target(view2)
        loss = direction(p1, z2) + direction(p2, z1)
        loss.backward()
        lars()
        ema()
        return loss.item()

    step()  # warm-up: allocations, oneDNN primitive caches
    if args.serve:
        serve(step, torch)
        return
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        seconds.append(time.perf_counter() - start)
        if loss != loss:
            print(json.dumps({"error": "the loss is NaN"}))
            sys.exit(1)
    print(json.dumps({
        "pytorchSecondsPerStep": statistics.median(seconds),
        "stepSeconds": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
