"""Golden outputs for tests/datasets_test.ts: Pillow's antialiased bilinear resize of the centred
square of an RGB image (what the folder dataset does: shorter side -> size, centre crop).

Run: /usr/bin/python3 tests/golden/make_folder_resize.py (Pillow 9) -> folder_resize.json
Pillow rounds its intermediate pass to 8 bits; our resize keeps it in float, so the test allows
a difference of one level.
"""
import json
import os
import random

from PIL import Image

random.seed(0)
cases = []
for (width, height, size) in [(37, 23, 16), (9, 12, 16), (48, 40, 12)]:
    pixels = bytes(random.randrange(256) for _ in range(width * height * 3))
    image = Image.frombytes("RGB", (width, height), pixels)
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    out = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
    cases.append({
        "width": width, "height": height, "size": size,
        "input": list(pixels), "output": list(out.tobytes()),
    })

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "folder_resize.json"), "w") as f:
    json.dump({"cases": cases}, f)
