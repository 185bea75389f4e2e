import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { SslModel, type SslModelConfig } from "../models/ssl.ts";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { loadSafetensors, saveSafetensors } from "../models/safetensors.ts";
import { loadBackbone } from "../models/load.ts";
import { type Arch, type ResNetConfig } from "../models/resnet.ts";
import { backboneFeatureDim, backboneLayout } from "../models/export.ts";

const ROOT = new URL("..", import.meta.url).pathname;
// The system Python with PyTorch (TRITRAIN_PYTHON overrides it, e.g. to check the skip path).
const PYTHON = Deno.env.get("TRITRAIN_PYTHON") ?? "/usr/bin/python3";

const torchvision = JSON.parse(
  await Deno.readTextFile(new URL("./golden/torchvision_keys.json", import.meta.url)),
);

/** Whether the system Python has torch (CI does not: that part of the test is skipped). */
async function pythonHasTorch(): Promise<boolean> {
  try {
    const { code } = await new Deno.Command(PYTHON, {
      args: ["-c", "import torch"],
      stdout: "null",
      stderr: "null",
    }).output();
    return code === 0;
  } catch {
    return false;
  }
}
const HAS_TORCH = await pythonHasTorch();

async function runExport(args: string[]): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tasks/export.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

Deno.test("export: backboneLayout equals torchvision's state_dict keys and shapes (less fc)", () => {
  for (const arch of ["resnet18", "resnet34", "resnet50"] as Arch[]) {
    const expected = Object.entries(
      torchvision.models[arch] as Record<string, { shape: number[]; dtype: string }>,
    ).filter(([name]) => !name.startsWith("fc."));
    const layout = backboneLayout({
      arch,
      inChannels: 3,
      smallImage: false,
      widths: [64, 128, 256, 512],
    });
    assert.deepEqual(
      layout.map((t) => [t.name, t.shape, t.dtype === "F32" ? "float32" : "int64"]),
      expected.map(([name, e]) => [name, e.shape, e.dtype]),
      arch,
    );
  }
});

/** A checkpoint of `backbone` with random weights and BatchNorm statistics (so eval BN matters). */
async function randomCheckpoint(dir: string, backbone: ResNetConfig, imageSize: number) {
  const gpu = await testGpu();
  const config: SslModelConfig = {
    backbone,
    projectorHidden: 8,
    projectorOut: 4,
    predictorHidden: 8,
    loss: { kind: "triplet", window: [1, 2] },
  };
  const path = `${dir}/checkpoint.safetensors`;
  await saveCheckpoint(
    path,
    new SslModel(gpu, config, 4, 5, { momentum: 0.9, weightDecay: 1e-6, eta: 0.001 }),
    {
      step: 3,
      trainConfig: { imageSize },
    },
  );
  const file = await loadSafetensors(path);
  const rng = new Rng(11);
  for (const [name, tensor] of file.tensors) {
    if (tensor.dtype !== "F32" || name.startsWith("target.") || name.startsWith("optimizer.")) {
      continue;
    }
    const values = tensor.data as Float32Array;
    for (let i = 0; i < values.length; i++) {
      if (name.endsWith("running_var")) values[i] = rng.uniform(0.5, 1.5);
      else if (name.endsWith("running_mean") || name.endsWith(".bias")) {
        values[i] = 0.2 * rng.normal();
      } else if (name.endsWith(".weight") && tensor.shape.length === 1) {
        values[i] = 1 + 0.3 * rng.normal();
      }
    }
  }
  await saveSafetensors(path, file);
  return { gpu, path, file };
}

const CASES: { label: string; backbone: ResNetConfig; imageSize: number }[] = [
  {
    label: "resnet18, 1 channel, small-image stem, widths 4/8/8/16",
    backbone: { arch: "resnet18", inChannels: 1, smallImage: true, widths: [4, 8, 8, 16] },
    imageSize: 12,
  },
  {
    label: "resnet50, 3 channels, torchvision stem, widths 2/4/4/8",
    backbone: { arch: "resnet50", inChannels: 3, smallImage: false, widths: [2, 4, 4, 8] },
    imageSize: 32,
  },
];

// Float32 on both sides, summed in different orders over up to ~20 layers: features agree to
// |a-e| <= 1e-4 + 1e-3*|e| (measured worst absolute difference: 3.8e-6 for the resnet18 case,
// 3.1e-4 for resnet50, whose features are larger).
const FEATURE_TOLERANCE = { atol: 1e-4, rtol: 1e-3 };

for (const { label, backbone, imageSize } of CASES) {
  Deno.test({
    name: `export: ${label}: weights file holds the backbone only; the Python module loads ` +
      `strictly and matches our forward`,
    ...gpuTest,
    fn: async () => {
      const dir = await Deno.makeTempDir();
      const { gpu, path, file } = await randomCheckpoint(dir, backbone, imageSize);
      const out = `${dir}/exported`;
      const result = await runExport(["--checkpoint", path, "--out", out, "--name", "tiny"]);
      assert.equal(result.code, 0, result.output);

      const exported = await loadSafetensors(`${out}/tiny.safetensors`);
      const layout = backboneLayout(backbone);
      assert.deepEqual([...exported.tensors.keys()], layout.map((t) => t.name));
      for (const t of layout) {
        const got = exported.tensors.get(t.name)!;
        assert.deepEqual(got.shape, t.shape, t.name);
        assert.equal(got.dtype, t.dtype, t.name);
        assert.deepEqual(
          [...got.data as Iterable<number | bigint>],
          [...file.tensors.get(t.name)!.data as Iterable<number | bigint>],
          t.name,
        );
      }
      const python = await Deno.readTextFile(`${out}/tiny.py`);
      assert.match(python, new RegExp(`WIDTHS = \\[${backbone.widths.join(", ")}\\]`));
      assert.match(python, new RegExp(`IMAGE_SIZE = ${imageSize}\\b`));
      assert.doesNotMatch(python, /import (torchvision|numpy|safetensors)/);

      // Existing files are not replaced without --overwrite; a bad module name is refused.
      if (backbone.arch === "resnet18") {
        const again = await runExport(["--checkpoint", path, "--out", out, "--name", "tiny"]);
        assert.equal(again.code, 2, again.output);
        assert.match(again.output, /tiny.safetensors exists; pass --overwrite/);
        const badName = await runExport(["--checkpoint", path, "--out", out, "--name", "2-bad"]);
        assert.equal(badName.code, 2, badName.output);
        assert.match(badName.output, /--name must be a Python module name/);
      }

      if (!HAS_TORCH) {
        console.log(
          `SKIPPED the PyTorch half: ${PYTHON} cannot import torch (CI has no torch); ` +
            `file and key checks above still ran`,
        );
        return;
      }
      const count = 3;
      const c = backbone.inChannels;
      const rng = new Rng(21);
      const nhwc = rng.normals(count * imageSize * imageSize * c);
      const nchw = new Float32Array(nhwc.length);
      for (let n = 0; n < count; n++) {
        for (let y = 0; y < imageSize; y++) {
          for (let x = 0; x < imageSize; x++) {
            for (let ch = 0; ch < c; ch++) {
              nchw[((n * c + ch) * imageSize + y) * imageSize + x] =
                nhwc[((n * imageSize + y) * imageSize + x) * c + ch];
            }
          }
        }
      }
      await Deno.writeFile(`${dir}/input.f32`, new Uint8Array(nchw.buffer));
      const script = [
        "import json, sys, torch",
        `sys.path.insert(0, ${JSON.stringify(out)})`,
        "import tiny",
        "model = tiny.load()",
        `x = torch.frombuffer(bytearray(open(${JSON.stringify(`${dir}/input.f32`)}, 'rb').read()),`,
        `    dtype=torch.float32).reshape(${count}, ${c}, ${imageSize}, ${imageSize})`,
        "with torch.no_grad():",
        "    features = model(x).flatten().tolist()",
        "import runpy  # the module's own check, as `python3 tiny.py` runs it",
        `runpy.run_path(${JSON.stringify(`${out}/tiny.py`)}, run_name="__main__")`,
        "print(json.dumps(features))",
      ].join("\n");
      const run = await new Deno.Command(PYTHON, {
        args: ["-c", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(run.stderr);
      assert.equal(run.code, 0, stderr);
      const printed = new TextDecoder().decode(run.stdout).trim().split("\n");
      assert.match(
        printed[0],
        new RegExp(
          `loaded .*tiny.safetensors strictly; features \\(2, ${backboneFeatureDim(backbone)}\\)`,
        ),
      );
      const torchFeatures: number[] = JSON.parse(printed[1]);
      assert.equal(torchFeatures.length, count * backboneFeatureDim(backbone));

      const { backbone: ours } = await loadBackbone(gpu, path);
      const [ourFeatures] = await gpu.read([
        ours.forward(gpu.upload(nhwc, [count, imageSize, imageSize, c])),
      ]);
      let worst = 0;
      for (let i = 0; i < torchFeatures.length; i++) {
        worst = Math.max(worst, Math.abs(torchFeatures[i] - ourFeatures[i]));
      }
      console.log(`${label}: worst |torch - ours| = ${worst.toExponential(2)}`);
      assertClose(ourFeatures, torchFeatures, FEATURE_TOLERANCE, "features (ours vs PyTorch)");
    },
  });
}
