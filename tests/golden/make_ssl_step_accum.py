"""Golden values for an SSL step over two micro-batches with rescaled target views
(tests/ssl_step_accum_golden_test.ts).

The model is make_ssl_step.py's (small torchvision-structured ResNet-18, widths 4/8/16/32, one input
channel, projector and predictor MLPs, truncated triplet loss, LARS, EMA target). What differs, and
is what this file checks: each optimizer step runs two micro-batches; the online branch sees 8x8
views while the target branch sees its own 12x12 views of each micro-batch (the per-branch rescale);
the gradient is the mean over micro-batches of the symmetrised loss, sum_m (l12_m + l21_m) / 2; and
the losses come per micro-batch and direction in the order l12_0, l21_0, l12_1, l21_1. Records the
initial weights, the views (NHWC), the step-0 loss and gradients, the losses of 3 LARS+EMA steps,
and after them the heads and the stem of both the online and the target network.

Run with Debian's PyTorch 1.13: /usr/bin/python3 tests/golden/make_ssl_step_accum.py
Outputs: tests/golden/ssl_step_accum.json (manifest + losses) and tests/golden/ssl_step_accum.bin (f32).
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

# The model, LARS and the EMA momentum are make_ssl_step.py's (same widths, heads and optimizer).
from make_ssl_step import Branch, ema_momentum, lars_step

SEED = int(os.environ.get("SEED", "7"))
torch.manual_seed(SEED)
torch.set_default_dtype(torch.float64)  # float64 reference; the test tolerances absorb f32

BATCH, SIZE, TARGET_SIZE, CHANNELS = 6, 8, 12, 1
MICRO_BATCHES = 2
WIDTHS = [4, 8, 16, 32]
PROJ_HIDDEN, PROJ_OUT, PRED_HIDDEN = 32, 16, 32
WINDOW = (2, 5)  # a batch of 6 has 5 negatives per row
GAMMA, MARGIN = 2.0, 100.0
LR, MOMENTUM, WD, ETA = 4.8, 0.9, 1e-6, 0.001
STEPS = 3
BASE_EMA = 0.99
# Recorded after the steps for both networks: the stem and the heads' layers.
FINAL = ["backbone.conv1.weight", "projector.0.weight", "projector.0.bias", "projector.1.weight",
         "projector.3.weight", "projector.3.bias"]
FINAL_ONLINE_ONLY = ["predictor.0.weight", "predictor.3.weight", "predictor.3.bias"]


def triplet_direction(p, z):
    p = F.normalize(p, dim=1, eps=1e-12)
    z = F.normalize(z.detach(), dim=1, eps=1e-12)
    d = -2.0 * p @ z.t()
    n = d.shape[0]
    d_ap = d.diagonal()
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    negatives, _ = d[off_diagonal].view(n, n - 1).sort(dim=1)
    d_an = negatives[:, WINDOW[0] - 1:WINDOW[1]].mean(dim=1)
    # The smallest gap at the window's edges (rank 1 | rank 2; the window ends at the last rank),
    # to make sure f32 cannot reorder the selection.
    gaps = (negatives[:, WINDOW[0] - 1] - negatives[:, WINDOW[0] - 2]).abs()
    return F.relu(GAMMA * d_ap - d_an + MARGIN).mean(), gaps.min().item()


def main():
    online = Branch(predictor=True)
    target = Branch(predictor=False)
    target.load_state_dict(online.state_dict(), strict=False)
    for m in target.modules():  # the target forward uses batch stats but updates nothing
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    online.train()
    target.train()
    initial = {k: v.clone() for k, v in online.state_dict().items()}
    micro = []
    for _ in range(MICRO_BATCHES):
        views = [torch.rand(BATCH, CHANNELS, SIZE, SIZE) for _ in range(2)]
        # The target's views: the same images rescaled (bilinear) to TARGET_SIZE, as the
        # released per-branch rescale does; the test only needs them to differ in size.
        target_views = [F.interpolate(v, size=(TARGET_SIZE, TARGET_SIZE), mode="bilinear",
                                      align_corners=False) for v in views]
        micro.append((views, target_views))

    params = [(n, p) for n, p in online.named_parameters()]
    velocity = {n: torch.zeros_like(p) for n, p in params}
    losses, min_gap, gradients = [], float("inf"), {}
    for step in range(STEPS):
        for _, p in params:
            p.grad = None
        step_losses, total = [], 0.0
        for (v1, v2), (t1, t2) in micro:
            p1, p2 = online(v1, True), online(v2, True)
            with torch.no_grad():
                z1, z2 = target(t1, False), target(t2, False)
            l12, gap12 = triplet_direction(p1, z2)
            l21, gap21 = triplet_direction(p2, z1)
            min_gap = min(min_gap, gap12, gap21)
            total = total + l12 + l21
            step_losses += [l12.item(), l21.item()]
        (total / MICRO_BATCHES).backward()
        losses.append(step_losses)
        if step == 0:
            gradients = {n: p.grad.clone() for n, p in params}
        lars_step(params, velocity, LR)
        m = ema_momentum(step, STEPS)
        with torch.no_grad():
            online_state = online.state_dict()
            for name, t in target.state_dict().items():
                if t.dtype.is_floating_point:
                    t.mul_(m).add_((1 - m) * online_state[name])

    blobs, manifest = [], {}

    def add(name, tensor, layout="plain"):
        t = tensor.detach().to(torch.float32)
        if layout == "nhwc":
            t = t.permute(0, 2, 3, 1)
        t = t.contiguous()
        offset = sum(b.numel() for b in blobs)
        blobs.append(t.flatten())
        manifest[name] = {"shape": list(t.shape), "offset": offset}

    for name, t in initial.items():
        if t.dtype.is_floating_point:
            add(f"initial/{name}", t)
    for i, ((v1, v2), (t1, t2)) in enumerate(micro):
        add(f"micro{i}/view1", v1, "nhwc")
        add(f"micro{i}/view2", v2, "nhwc")
        add(f"micro{i}/targetView1", t1, "nhwc")
        add(f"micro{i}/targetView2", t2, "nhwc")
    for name, g in gradients.items():
        add(f"grad/{name}", g)
    online_state, target_state = online.state_dict(), target.state_dict()
    for name in FINAL + FINAL_ONLINE_ONLY:
        add(f"final/online/{name}", online_state[name])
    for name in FINAL:
        add(f"final/target/{name}", target_state[name])
    here = os.path.dirname(os.path.abspath(__file__))
    torch.cat(blobs).numpy().astype("<f4").tofile(os.path.join(here, "ssl_step_accum.bin"))
    doc = {
        "generator": "tests/golden/make_ssl_step_accum.py",
        "torch": torch.__version__,
        "config": {
            "batch": BATCH, "size": SIZE, "targetSize": TARGET_SIZE, "channels": CHANNELS,
            "microBatches": MICRO_BATCHES, "widths": WIDTHS,
            "projectorHidden": PROJ_HIDDEN, "projectorOut": PROJ_OUT,
            "predictorHidden": PRED_HIDDEN, "window": list(WINDOW), "gamma": GAMMA,
            "margin": MARGIN, "lr": LR, "momentum": MOMENTUM, "weightDecay": WD, "eta": ETA,
            "steps": STEPS, "baseEma": BASE_EMA,
        },
        "losses": losses,
        "minSelectionGap": min_gap,
        "tensors": manifest,
    }
    with open(os.path.join(here, "ssl_step_accum.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print("losses", losses, "min gap", min_gap)


if __name__ == "__main__":
    main()
