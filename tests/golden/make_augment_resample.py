"""Golden outputs for tests/augment_test.ts: crop + antialiased resize (torch F.interpolate with
antialias=True, bilinear and bicubic, which reproduce Pillow's resampling in float) and the
batch rescale (F.interpolate bilinear, align_corners=False, no antialias).

Run: /usr/bin/python3 tests/golden/make_augment_resample.py  (PyTorch 1.13) -> augment_resample.json
Inputs are in [0.25, 0.75] so bicubic overshoot never reaches the [0, 1] clamp of our kernel.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
H, W, C = 12, 10, 3
image = 0.25 + 0.5 * torch.rand(1, H, W, C, dtype=torch.float32)  # NHWC
nchw = image.permute(0, 3, 1, 2)

crop_cases = []
for (top, left, h, w, size) in [
    (0, 0, 12, 10, 7),    # whole image, shrink
    (2, 1, 5, 6, 11),     # small box, enlarge
    (3, 2, 9, 8, 4),      # shrink by ~2
    (1, 4, 10, 3, 6),     # thin box, mixed
]:
    crop = nchw[:, :, top:top + h, left:left + w]
    for mode in ["bilinear", "bicubic"]:
        out = F.interpolate(crop, size=(size, size), mode=mode, align_corners=False, antialias=True)
        crop_cases.append({
            "top": top, "left": left, "height": h, "width": w, "size": size, "filter": mode,
            "output": out.permute(0, 2, 3, 1).reshape(-1).tolist(),
        })

rescale_cases = []
for (oh, ow) in [(5, 7), (17, 13), (12, 10)]:
    out = F.interpolate(nchw, size=(oh, ow), mode="bilinear", align_corners=False)
    rescale_cases.append({"height": oh, "width": ow, "output": out.permute(0, 2, 3, 1).reshape(-1).tolist()})

golden = {
    "torch": torch.__version__,
    "shape": [1, H, W, C],
    "input": image.reshape(-1).tolist(),
    "crops": crop_cases,
    "rescales": rescale_cases,
}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "augment_resample.json"), "w") as f:
    json.dump(golden, f)
