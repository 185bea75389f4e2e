"""Golden values for one ResNet-50 bottleneck block with downsample (tests/bottleneck_golden_test.ts).

torchvision's Bottleneck(inplanes=64, planes=32, stride=2, downsample=conv1x1(64->128, stride 2)+BN)
in training mode (batch-statistics BatchNorm, running stats updated with momentum 0.1), on an
input of 2 x 64 x 9 x 9 (odd size: the 3x3 stride-2 conv and the strided shortcut give 5 x 5).
Parameters are Kaiming fan-in convs and random BatchNorm affine parameters and running stats, all
rounded to float32 first; the forward and backward then run in float64, so the recorded outputs
are the exact answer for the float32 inputs our kernels see.

Recorded (our layouts: activations NHWC, conv weights HWIO = [KH, KW, Cin, Cout]):
  input x, every parameter and the initial running stats; the block output; a fixed upstream
  gradient dOut (loss = sum(out * dOut)); dx and every parameter gradient; the running stats
  after the step; and a few intermediates (each BN+ReLU output) for diagnosing a mismatch.

Run with Debian's PyTorch 1.13: /usr/bin/python3 tests/golden/make_bottleneck.py
Outputs: tests/golden/bottleneck.json (manifest) and tests/golden/bottleneck.bin (f32 little-endian).
"""
import json
import os

import torch
import torch.nn as nn
from torchvision.models.resnet import Bottleneck

SEED = 20240611
BATCH, SIZE = 2, 9
INPLANES, PLANES, STRIDE = 64, 32, 2  # out channels = PLANES * Bottleneck.expansion = 128


def build_block():
    out_channels = PLANES * Bottleneck.expansion
    downsample = nn.Sequential(
        nn.Conv2d(INPLANES, out_channels, 1, STRIDE, bias=False), nn.BatchNorm2d(out_channels))
    block = Bottleneck(INPLANES, PLANES, STRIDE, downsample)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c) + 0.5)
                m.bias.copy_(torch.rand(c) - 0.5)
                m.running_mean.copy_(torch.randn(c) * 0.1)
                m.running_var.copy_(torch.rand(c) + 0.5)
        for t in list(block.parameters()) + list(block.buffers()):
            if t.dtype.is_floating_point:
                t.copy_(t.to(torch.float32).to(t.dtype))  # float32-representable values
    return block


def main():
    torch.manual_seed(SEED)
    block = build_block().double()
    block.train()
    bn_names = ["bn1", "bn2", "bn3", "downsample.1"]
    conv_names = ["conv1", "conv2", "conv3", "downsample.0"]
    modules = dict(block.named_modules())
    initial_stats = {
        n: (modules[n].running_mean.clone(), modules[n].running_var.clone()) for n in bn_names}

    x = torch.randn(BATCH, INPLANES, SIZE, SIZE).to(torch.float32).double().requires_grad_()
    intermediates = {}

    def keep(name):
        def hook(_module, _inputs, output):
            intermediates[name] = output.detach().clone()
        return hook

    # Hooks clone each BN output before the block's in-place ReLU / residual add touch it.
    for n in bn_names:
        modules[n].register_forward_hook(keep(n))
    out = block(x)
    d_out = torch.randn(out.shape).to(torch.float32).double()
    (out * d_out).sum().backward()

    blobs, manifest = [], {}

    def add(name, tensor, layout="plain"):
        t = tensor.detach().to(torch.float32)
        if layout == "nhwc":  # NCHW -> NHWC
            t = t.permute(0, 2, 3, 1)
        elif layout == "hwio":  # OIHW -> [KH, KW, Cin, Cout]
            t = t.permute(2, 3, 1, 0)
        t = t.contiguous()
        offset = sum(b.numel() for b in blobs)
        blobs.append(t.flatten())
        manifest[name] = {"shape": list(t.shape), "offset": offset, "layout": layout}

    add("x", x, "nhwc")
    for n in conv_names:
        add(f"{n}.weight", modules[n].weight, "hwio")
    for n in bn_names:
        add(f"{n}.weight", modules[n].weight)
        add(f"{n}.bias", modules[n].bias)
        add(f"{n}.running_mean", initial_stats[n][0])
        add(f"{n}.running_var", initial_stats[n][1])
    add("out", out, "nhwc")
    add("dOut", d_out, "nhwc")
    add("intermediate/bn1_relu", torch.relu(intermediates["bn1"]), "nhwc")
    add("intermediate/bn2_relu", torch.relu(intermediates["bn2"]), "nhwc")
    add("intermediate/bn3", intermediates["bn3"], "nhwc")
    add("intermediate/downsample_bn", intermediates["downsample.1"], "nhwc")
    add("grad/x", x.grad, "nhwc")
    for n in conv_names:
        add(f"grad/{n}.weight", modules[n].weight.grad, "hwio")
    for n in bn_names:
        add(f"grad/{n}.weight", modules[n].weight.grad)
        add(f"grad/{n}.bias", modules[n].bias.grad)
        add(f"updated/{n}.running_mean", modules[n].running_mean)
        add(f"updated/{n}.running_var", modules[n].running_var)

    here = os.path.dirname(os.path.abspath(__file__))
    torch.cat(blobs).numpy().astype("<f4").tofile(os.path.join(here, "bottleneck.bin"))
    doc = {
        "generator": "tests/golden/make_bottleneck.py",
        "torch": torch.__version__,
        "config": {
            "seed": SEED, "batch": BATCH, "height": SIZE, "width": SIZE, "inplanes": INPLANES,
            "planes": PLANES, "outChannels": PLANES * Bottleneck.expansion, "stride": STRIDE,
            "eps": block.bn1.eps, "momentum": block.bn1.momentum,
            "outHeight": out.shape[2], "outWidth": out.shape[3],
        },
        "layouts": {"nhwc": "activations NCHW -> NHWC", "hwio": "conv OIHW -> [KH, KW, Cin, Cout]"},
        "tensors": manifest,
    }
    with open(os.path.join(here, "bottleneck.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print("out", list(out.shape), "floats", sum(b.numel() for b in blobs))


if __name__ == "__main__":
    main()
