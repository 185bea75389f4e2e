import assert from "node:assert/strict";
import { gpuTest, Rng, testGpu } from "./util.ts";
import { SslModel, type SslModelConfig } from "../models/ssl.ts";
import { hwioToOihw, loadCheckpoint, oihwToHwio, saveCheckpoint } from "../models/checkpoint.ts";
import { decodeSafetensors, encodeSafetensors, loadSafetensors } from "../models/safetensors.ts";
import { scaledWidths } from "../models/resnet.ts";

const torchvision = JSON.parse(
  await Deno.readTextFile(new URL("./golden/torchvision_keys.json", import.meta.url)),
);

const LARS = { momentum: 0.9, weightDecay: 1e-6, eta: 0.001 };
const SMALL: SslModelConfig = {
  backbone: { arch: "resnet18", inChannels: 1, smallImage: true, widths: [4, 8, 8, 16] },
  projectorHidden: 16,
  projectorOut: 8,
  predictorHidden: 16,
  loss: { kind: "triplet", window: [1, 2] },
};

Deno.test("checkpoint: HWIO <-> OIHW conversion round-trips and puts elements right", () => {
  const shape = [3, 2, 4, 5];
  const data = Float32Array.from({ length: 120 }, (_, i) => i);
  const oihw = hwioToOihw(data, shape);
  assert.deepEqual(oihw.shape, [5, 4, 3, 2]);
  // w[kh=2, kw=1, ci=3, co=4] sits at ((2*2+1)*4+3)*5+4 in HWIO and ((4*4+3)*3+2)*2+1 in OIHW.
  assert.equal(oihw.data[((4 * 4 + 3) * 3 + 2) * 2 + 1], ((2 * 2 + 1) * 4 + 3) * 5 + 4);
  assert.deepEqual(oihwToHwio(oihw.data, oihw.shape).data, data);
});

Deno.test("safetensors: encode/decode round trip; truncated and garbage files give clear errors", () => {
  const file = {
    tensors: new Map([
      ["a", { dtype: "F32" as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
      ["n", { dtype: "I64" as const, shape: [], data: BigInt64Array.from([7n]) }],
    ]),
    metadata: { format: "x" },
  };
  const bytes = encodeSafetensors(file);
  const back = decodeSafetensors(bytes);
  assert.deepEqual(Array.from(back.tensors.get("a")!.data as Float32Array), [1, 2, 3, 4, 5, 6]);
  assert.equal((back.tensors.get("n")!.data as BigInt64Array)[0], 7n);
  assert.equal(back.metadata.format, "x");
  assert.throws(
    () => decodeSafetensors(bytes.subarray(0, bytes.length - 4), "f.st"),
    /f.st.*truncated/,
  );
  assert.throws(
    () => decodeSafetensors(new Uint8Array([1, 2, 3]), "g.st"),
    /g.st is not a readable/,
  );
});

Deno.test({
  name: "checkpoint: save, load into a fresh model, identical outputs and optimizer state",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    const path = `${dir}/checkpoint.safetensors`;
    const a = new SslModel(gpu, SMALL, 4, 1, LARS);
    const rng = new Rng(3);
    const images = gpu.upload(rng.normals(4 * 8 * 8), [4, 8, 8, 1]);
    const other = gpu.upload(rng.normals(4 * 8 * 8), [4, 8, 8, 1]);
    // Take one step so the velocity, target and running statistics are not at their initial values.
    const lossOut = gpu.empty([2]);
    a.step([{ view1: images, view2: other }], 0.5, 0.9, lossOut);
    await saveCheckpoint(path, a, { step: 1, note: "test" });
    const b = new SslModel(gpu, SMALL, 4, 99, LARS);
    const state = await loadCheckpoint(path, b);
    assert.equal(state.step, 1);
    for (const model of [a, b]) model.online.ctx.mode = "eval";
    const [fa, fb] = await gpu.read([
      a.online.backbone.forward(images),
      b.online.backbone.forward(images),
    ]);
    assert.deepEqual(Array.from(fb), Array.from(fa), "eval-mode features after loading");
    const [va, vb] = await gpu.read([a.velocity[0], b.velocity[0]]);
    assert.deepEqual(Array.from(vb), Array.from(va), "LARS velocity");
    const ta = a.target.parameters()[0].value;
    const tb = b.target.parameters()[0].value;
    const [xa, xb] = await gpu.read([ta, tb]);
    assert.deepEqual(Array.from(xb), Array.from(xa), "target network");
    assert.deepEqual(
      b.online.batchCounters().map((c) => c.count),
      a.online.batchCounters().map((c) => c.count),
      "num_batches_tracked",
    );
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "checkpoint: a ResNet-50 checkpoint holds torchvision's backbone keys, shapes and dtypes",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    const path = `${dir}/r50.safetensors`;
    const model = new SslModel(
      gpu,
      {
        ...SMALL,
        backbone: { arch: "resnet50", inChannels: 3, smallImage: false, widths: scaledWidths(1) },
      },
      4,
      0,
      LARS,
    );
    await saveCheckpoint(path, model, { step: 0 });
    const file = await loadSafetensors(path);
    const expected = Object.entries(
      torchvision.models.resnet50 as Record<string, { shape: number[]; dtype: string }>,
    ).filter(([name]) => !name.startsWith("fc."));
    const dtypes: Record<string, string> = { float32: "F32", int64: "I64" };
    for (const [name, { shape, dtype }] of expected) {
      const t = file.tensors.get(name);
      assert.ok(t, `missing ${name}`);
      assert.deepEqual(t.shape, shape, `${name} shape`);
      assert.equal(t.dtype, dtypes[dtype], `${name} dtype`);
    }
    // Everything else is namespaced, so torchvision sees it only as unexpected keys.
    const known = new Set(expected.map(([name]) => name));
    for (const name of file.tensors.keys()) {
      if (known.has(name)) continue;
      assert.match(name, /^(projector|predictor|target|optimizer)\./, `stray key ${name}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
});
