import assert from "node:assert/strict";
import { assertClose, gpuTest, testGpu } from "./util.ts";
import { byolReference } from "./ssl_loss_reference.ts";
import { Context } from "../models/layers.ts";
import { parameterCount, ResNet, scaledWidths } from "../models/resnet.ts";
import { Rng } from "../runtime/random.ts";
import { SslModel } from "../models/ssl.ts";
import { checkBatchFits, estimateStepMemory, viewsStack } from "../models/memory.ts";

const torchvision = JSON.parse(
  await Deno.readTextFile(new URL("./golden/torchvision_keys.json", import.meta.url)),
);

Deno.test({
  name: "resnet: ResNet-50 backbone without fc has exactly 23,508,032 parameters (torchvision)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const ctx = new Context(gpu);
    const net = new ResNet(ctx, {
      arch: "resnet50",
      inChannels: 3,
      smallImage: false,
      widths: scaledWidths(1),
    }, new Rng(0));
    assert.equal(parameterCount(net), 23_508_032);
    assert.equal(torchvision.models["resnet50:parameters_without_fc"], 23_508_032);
    assert.equal(net.featureDim, 2048);
    for (const p of net.parameters()) p.value.release();
  },
});

for (const arch of ["resnet18", "resnet34", "resnet50"] as const) {
  Deno.test({
    name: `resnet: ${arch} names and shapes equal torchvision's state_dict (minus fc.*)`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const net = new ResNet(new Context(gpu), {
        arch,
        inChannels: 3,
        smallImage: false,
        widths: scaledWidths(1),
      }, new Rng(0));
      const ours = new Map<string, number[]>();
      for (const p of net.parameters()) {
        // HWIO here, OIHW in torchvision.
        const [kh, kw, ci, co] = p.value.shape;
        ours.set(p.name, p.layout === "hwio" ? [co, ci, kh, kw] : p.value.shape);
      }
      for (const s of net.states()) ours.set(s.name, s.value.shape);
      for (const c of net.batchCounters()) ours.set(c.name, []);
      const expected = Object.entries(
        torchvision.models[arch] as Record<string, { shape: number[] }>,
      ).filter(([name]) => !name.startsWith("fc."));
      assert.equal(ours.size, expected.length, "tensor count");
      for (const [name, { shape }] of expected) {
        assert.deepEqual(ours.get(name), shape, `${name}`);
      }
      for (const p of net.parameters()) p.value.release();
    },
  });
}

Deno.test({
  name: "resnet: ResNet-50 SSL step (forward + backward + LARS + EMA) at 32px, batch 2",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const model = new SslModel(
      gpu,
      {
        backbone: { arch: "resnet50", inChannels: 3, smallImage: false, widths: scaledWidths(1) },
        projectorHidden: 64,
        projectorOut: 32,
        predictorHidden: 64,
        loss: { kind: "byol" },
      },
      2,
      7,
      { momentum: 0.9, weightDecay: 1e-6, eta: 0.001 },
    );
    const rng = new Rng(1);
    const view1 = gpu.upload(rng.normals(2 * 32 * 32 * 3), [2, 32, 32, 3]);
    const view2 = gpu.upload(rng.normals(2 * 32 * 32 * 3), [2, 32, 32, 3]);
    const lossOut = gpu.empty([2]);
    const before = await model.online.parameters()[0].value.read();
    // The step's own outputs, computed first without updating anything: online predictions p
    // (batch statistics, as in the step) and target projections z.
    const online = model.online;
    online.ctx.mode = "no-grad-train";
    const [p1, p2, z1, z2] = await gpu.read([
      online.forward(view1, true),
      online.forward(view2, true),
      model.target.forward(view1, false),
      model.target.forward(view2, false),
    ]);
    online.ctx.releaseActivations();
    model.target.ctx.releaseActivations();
    online.ctx.mode = "train";
    model.step([{ view1, view2 }], 0.1, 0.99, lossOut);
    const params = model.online.parameters();
    const [losses, after, stemGrad, lastGrad] = await gpu.read([
      lossOut,
      params[0].value,
      params[0].grad,
      params.at(-1)!.grad,
    ]);
    // BYOL (2 - 2 cos, batch mean) in float64 from those outputs: slot 0 is p1 against z2, slot 1
    // p2 against z1. The predictor's last bias receives the sum over rows of both directions'
    // dL/dp (one micro-batch: no scaling).
    const d12 = byolReference(p1, z2, 2, 32);
    const d21 = byolReference(p2, z1, 2, 32);
    assertClose(
      losses,
      [d12.loss, d21.loss],
      { atol: 1e-5, rtol: 1e-5 },
      "BYOL loss per direction",
    );
    assert.equal(params.at(-1)!.name, "predictor.3.bias");
    const biasGrad = new Float64Array(32);
    for (let i = 0; i < 2 * 32; i++) biasGrad[i % 32] += d12.dp[i] + d21.dp[i];
    assertClose(lastGrad, biasGrad, { atol: 1e-6, rtol: 1e-4 }, "predictor.3.bias gradient");
    const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));
    assert.ok(norm(stemGrad) > 0, "the stem conv received a gradient");
    assert.ok(norm(lastGrad) > 0, "the predictor's last layer received a gradient");
    assert.ok(after.some((v, i) => v !== before[i]), "LARS changed the stem weights");
    for (const t of [view1, view2, lossOut]) t.release();
  },
});

Deno.test("memory: the estimate finds the largest batch that fits one binding", () => {
  const config = {
    arch: "resnet50" as const,
    inChannels: 3,
    smallImage: false,
    widths: scaledWidths(1),
  };
  // layer1 output at 56x56x256 floats per sample is the largest tensor: 3.06 MiB per sample.
  const estimate = estimateStepMemory(config, 64, 224, 128 * 2 ** 20);
  assert.equal(estimate.largestTensorBytes, 64 * 56 * 56 * 256 * 4);
  assert.equal(estimate.maxBatch, Math.floor(128 * 2 ** 20 / (56 * 56 * 256 * 4)));
  assert.throws(
    () => checkBatchFits(config, 64, 1, 224, 128 * 2 ** 20),
    /largest batch that fits is 41: use --batch 41 --accum 2/,
  );
  assert.doesNotThrow(() => checkBatchFits(config, 41, 1, 224, 128 * 2 ** 20));
  // Stacking the two views doubles the largest tensor: 41 fits one view, not two; 20 fits two.
  assert.equal(viewsStack(config, 41, 224, 32, 128 * 2 ** 20), false);
  assert.equal(viewsStack(config, 20, 224, 32, 128 * 2 ** 20), false, "20 x 4 bytes: unaligned");
  assert.equal(viewsStack(config, 16, 224, 32, 128 * 2 ** 20), true);
  assert.equal(viewsStack(config, 16, 224, 256, 128 * 2 ** 20), false, "alignment 256 needs 64");
  assert.equal(viewsStack(config, 64, 224, 256, 2 ** 30), true);
});
