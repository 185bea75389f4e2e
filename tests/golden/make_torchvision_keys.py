"""Record torchvision's ResNet state_dict layout (names, shapes, dtypes) for the checkpoint test.

tests/checkpoint_test.ts builds our ResNet-18/50 backbones, writes checkpoints, and checks that
their backbone tensors are exactly torchvision's keys (minus fc.*) with the same shapes and dtypes,
so `torchvision.models.resnet50().load_state_dict(state, strict=False)` reports only fc.* missing.
With a checkpoint path argument it also loads that file into torchvision and prints the result.

Run with Debian's PyTorch 1.13: /usr/bin/python3 tests/golden/make_torchvision_keys.py [CKPT]
Output: tests/golden/torchvision_keys.json
"""
import json
import os
import sys

import torch
import torchvision

here = os.path.dirname(os.path.abspath(__file__))
doc = {"torchvision": torchvision.__version__, "models": {}}
for arch in ["resnet18", "resnet34", "resnet50"]:
    model = getattr(torchvision.models, arch)()
    state = model.state_dict()
    doc["models"][arch] = {
        name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
        for name, t in state.items()
    }
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    doc["models"][arch + ":parameters_without_fc"] = params
with open(os.path.join(here, "torchvision_keys.json"), "w") as f:
    json.dump(doc, f, indent=0)
print("resnet50 parameters without fc:", doc["models"]["resnet50:parameters_without_fc"])

if len(sys.argv) > 1:
    from safetensors_reader import read_safetensors  # noqa: E402 (only for the manual check)
    state = read_safetensors(sys.argv[1])
    model = torchvision.models.resnet50()
    result = model.load_state_dict(state, strict=False)
    print("missing:", result.missing_keys)
    print("unexpected:", len(result.unexpected_keys), "keys (heads, target, optimizer)")
    record = {
        "checkpoint": "a ResNet-50 tritrain checkpoint (tests/checkpoint_test.ts writes the same kind)",
        "missing_keys": result.missing_keys,
        "unexpected_key_prefixes": sorted({k.split(".")[0] for k in result.unexpected_keys}),
    }
    with open(os.path.join(here, "torchvision_load.json"), "w") as f:
        json.dump(record, f, indent=1)
