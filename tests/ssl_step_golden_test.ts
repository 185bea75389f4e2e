/**
 * The whole SSL training step against PyTorch (llm.c's test_gpt2 is the model): a small
 * ResNet-18 with fixed weights and fixed views; the online features, the step's loss per
 * direction and every parameter gradient, then the loss sequence of 5 LARS + EMA steps.
 * Golden values: tests/golden/make_ssl_step.py (float64 PyTorch 1.13).
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, testGpu } from "./util.ts";
import { SslModel } from "../models/ssl.ts";
import { oihwToHwio } from "../models/checkpoint.ts";
import { momentumAt } from "../models/schedule.ts";

interface Golden {
  config: {
    batch: number;
    size: number;
    channels: number;
    widths: [number, number, number, number];
    projectorHidden: number;
    projectorOut: number;
    predictorHidden: number;
    window: [number, number];
    gamma: number;
    margin: number;
    lr: number;
    momentum: number;
    weightDecay: number;
    eta: number;
    steps: number;
    baseEma: number;
  };
  losses: [number, number][];
  tensors: Record<string, { shape: number[]; offset: number }>;
}

const dir = new URL("./golden/", import.meta.url);
const golden: Golden = JSON.parse(await Deno.readTextFile(new URL("ssl_step.json", dir)));
const blob = new Float32Array((await Deno.readFile(new URL("ssl_step.bin", dir))).buffer);

function tensor(name: string): { data: Float32Array; shape: number[] } {
  const entry = golden.tensors[name];
  if (!entry) throw new Error(`golden file has no ${name}`);
  const size = entry.shape.reduce((a, b) => a * b, 1);
  return { data: blob.subarray(entry.offset, entry.offset + size), shape: entry.shape };
}

/** torch name (`backbone.layer1.0.conv1.weight`, `projector.0.weight`) of one of our tensors. */
function torchName(ours: string, isHead: boolean): string {
  return isHead ? ours : `backbone.${ours}`;
}

Deno.test({
  name: "ssl step golden: features, loss, gradients and 5 LARS+EMA steps match PyTorch",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const c = golden.config;
    const model = new SslModel(
      gpu,
      {
        backbone: { arch: "resnet18", inChannels: c.channels, smallImage: true, widths: c.widths },
        projectorHidden: c.projectorHidden,
        projectorOut: c.projectorOut,
        predictorHidden: c.predictorHidden,
        loss: { kind: "triplet", window: c.window, gamma: c.gamma, margin: c.margin },
      },
      c.batch,
      0,
      { momentum: c.momentum, weightDecay: c.weightDecay, eta: c.eta },
    );
    const backboneNames = new Set(model.online.backbone.parameters().map((p) => p.name));
    for (const s of model.online.backbone.states()) backboneNames.add(s.name);
    const load = (name: string, t: { write(d: Float32Array): void }, hwio: boolean) => {
      const g = tensor(`initial/${torchName(name, !backboneNames.has(name))}`);
      t.write(hwio ? oihwToHwio(g.data, g.shape).data : g.data);
    };
    for (const p of model.online.parameters()) load(p.name, p.value, p.layout === "hwio");
    for (const s of model.online.states()) load(s.name, s.value, false);
    model.copyOnlineToTarget();

    const view1 = gpu.upload(tensor("view1").data, [c.batch, c.size, c.size, c.channels]);
    const view2 = gpu.upload(tensor("view2").data, [c.batch, c.size, c.size, c.channels]);

    // Backbone features of view 1 with batch statistics (train-mode BN), nothing updated.
    const ctx = model.online.ctx;
    ctx.mode = "no-grad-train";
    const features = model.online.backbone.forward(view1);
    const [gotFeatures] = await gpu.read([features]);
    ctx.releaseActivations();
    ctx.mode = "train";
    // Features are O(1) after BN + ReLU + pooling; f32 vs f64 through 17 layers.
    assertClose(gotFeatures, tensor("features").data, { atol: 1e-4, rtol: 1e-3 }, "features");

    const losses: number[][] = [];
    for (let step = 0; step < c.steps; step++) {
      const lossOut = gpu.empty([2]);
      model.step([{ view1, view2 }], c.lr, momentumAt(step, c.steps, c.baseEma), lossOut);
      const [values] = await gpu.read([lossOut]);
      losses.push(Array.from(values));
      lossOut.release();
      if (step === 0) {
        const params = model.online.parameters();
        const grads = await gpu.read(params.map((p) => p.grad));
        const reference = (name: string) =>
          tensor(`grad/${torchName(name, !backboneNames.has(name))}`);
        const maxAbs = (values: ArrayLike<number>) =>
          Array.from(values).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        params.forEach((p, i) => {
          const g = reference(p.name);
          const expected = p.layout === "hwio" ? oihwToHwio(g.data, g.shape).data : g.data;
          // Gradients mix the loss's 1/n and LARS-free raw values; scale atol to the tensor.
          const scale = maxAbs(expected);
          let atol = 2e-3 * scale + 1e-7;
          if (scale < 1e-12) {
            // A bias feeding a BatchNorm: its gradient is zero analytically (PyTorch's are
            // ~1e-16) and ours is float32 cancellation noise, which scales with the layer's
            // weight gradient (measured up to 3e-7 of it): allow 2e-5 of that.
            assert.ok(p.name.endsWith(".bias"), `grad ${p.name}: all zero in PyTorch`);
            atol = 2e-5 * maxAbs(reference(p.name.replace(/bias$/, "weight")).data);
          }
          assertClose(grads[i], expected, { atol, rtol: 2e-3 }, `grad ${p.name}`);
        });
      }
    }
    // The bar: each step's loss within 1e-3 relative. The loss is ~100 (margin), so also
    // check the part that moves, loss - margin, to 1e-3 absolute.
    losses.forEach((pair, step) => {
      pair.forEach((got, direction) => {
        const expected = golden.losses[step][direction];
        assert.ok(
          Math.abs(got - expected) <= 1e-3 * Math.abs(expected),
          `step ${step} direction ${direction}: loss ${got}, PyTorch ${expected}`,
        );
        assert.ok(
          Math.abs((got - c.margin) - (expected - c.margin)) <= 1e-3,
          `step ${step} direction ${direction}: loss - margin ${got - c.margin}, ` +
            `PyTorch ${expected - c.margin}`,
        );
      });
    });
    view1.release();
    view2.release();
  },
});
