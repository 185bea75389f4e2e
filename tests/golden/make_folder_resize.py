"""Golden outputs for tests/datasets_test.ts: torchvision 0.14 on PIL images (Pillow 9), what the
folder dataset reproduces on the CPU.

- "cases": the evaluation transform Resize(resize) + CenterCrop(size), antialiased bilinear,
  with resize = round(size * 256 / 224) as the folder dataset uses (shorter side kept in ratio).
- "crops": RandomResizedCrop's resample of a given box, F.resized_crop(img, top, left, h, w,
  size, interpolation), bilinear and bicubic, then the flip where asked (F.hflip).

Run: /usr/bin/python3 tests/golden/make_folder_resize.py -> folder_resize.json
Pillow rounds its intermediate pass to 8 bits (fixed-point weights); ours keeps it in float, so
the test allows a difference of one level.
"""
import json
import os
import random

from PIL import Image
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

random.seed(0)


def random_image(width, height):
    pixels = bytes(random.randrange(256) for _ in range(width * height * 3))
    return pixels, Image.frombytes("RGB", (width, height), pixels)


cases = []
for (width, height, size) in [(37, 23, 16), (9, 12, 16), (48, 40, 12), (30, 61, 14)]:
    resize = round(size * 256 / 224)
    pixels, image = random_image(width, height)
    transform = T.Compose([
        T.Resize(resize, interpolation=InterpolationMode.BILINEAR),
        T.CenterCrop(size),
    ])
    out = transform(image)
    assert out.size == (size, size)
    cases.append({
        "width": width, "height": height, "size": size, "resize": resize,
        "input": list(pixels), "output": list(out.tobytes()),
    })

crops = []
for (width, height, box, size, filt, flip) in [
    (31, 22, (0, 0, 22, 31), 16, "bilinear", False),  # the whole image: borders reach the output
    (31, 22, (3, 5, 10, 7), 16, "bicubic", True),  # a small box, enlarged
    (40, 27, (2, 1, 25, 36), 12, "bicubic", False),  # shrunk
    (40, 27, (6, 9, 13, 17), 9, "bilinear", True),
]:
    pixels, image = random_image(width, height)
    top, left, h, w = box
    mode = InterpolationMode.BILINEAR if filt == "bilinear" else InterpolationMode.BICUBIC
    out = F.resized_crop(image, top, left, h, w, [size, size], mode)
    if flip:
        out = F.hflip(out)
    crops.append({
        "width": width, "height": height, "size": size, "filter": filt, "flip": flip,
        "box": {"top": top, "left": left, "height": h, "width": w},
        "input": list(pixels), "output": list(out.tobytes()),
    })

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "folder_resize.json"), "w") as f:
    json.dump({"cases": cases, "crops": crops}, f)
