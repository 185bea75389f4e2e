/**
 * Stacked views: an SslModel running both views as one batch [view1; view2] (BatchNorm with each
 * view's own statistics) trains as one running each view on its own. The only difference is the
 * summation order of the weight gradients (one GEMM over both views' pixels instead of two
 * accumulated ones), so after two LARS steps every tensor agrees to f32 rounding; a view
 * normalised with the other's statistics, a swapped half or a lost gradient moves them by O(0.01).
 * The PyTorch goldens check each path's maths (ssl_step: stacked, batch 16; ssl_step_accum:
 * separate, batch 6).
 */
import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { type MicroBatch, SslModel, type SslModelConfig } from "../models/ssl.ts";
import type { LossConfig } from "../models/loss.ts";

const TOL = { atol: 2e-5, rtol: 1e-4 };
const BATCH = 8;

const LOSSES: { name: string; loss: LossConfig; targetViews: boolean }[] = [
  {
    name: "triplet, target views of their own size",
    loss: { kind: "triplet", window: [2, 5], gamma: 2, margin: 100 },
    targetViews: true,
  },
  { name: "BYOL", loss: { kind: "byol" }, targetViews: false },
  { name: "InfoNCE", loss: { kind: "infonce", temperature: 0.2 }, targetViews: false },
];

for (const { name, loss, targetViews } of LOSSES) {
  Deno.test({
    name: `stacked views: ${name}, batch ${BATCH}, 2 steps of 2 micro-batches agree with ` +
      `separate views (tol ${TOL.atol}/${TOL.rtol}) in half the convolution dispatches`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      assert.equal((BATCH * 4) % gpu.limits.minStorageBufferOffsetAlignment, 0, "stackable");
      const config: SslModelConfig = {
        backbone: { arch: "resnet18", inChannels: 1, smallImage: true, widths: [4, 8, 8, 16] },
        projectorHidden: 32,
        projectorOut: 16,
        predictorHidden: 32,
        loss,
      };
      const rng = new Rng(21);
      const view = (size: number) =>
        gpu.upload(rng.normals(BATCH * size * size), [BATCH, size, size, 1]);
      const microBatches: MicroBatch[][] = Array.from(
        { length: 2 },
        () =>
          Array.from({ length: 2 }, () => ({
            view1: view(8),
            view2: view(8),
            ...(targetViews ? { targetView1: view(12), targetView2: view(12) } : {}),
          })),
      );
      const train = async (stackViews: boolean) => {
        const model = new SslModel(
          gpu,
          config,
          BATCH,
          5,
          { momentum: 0.9, weightDecay: 1e-4, eta: 0.02 },
          { stackViews },
        );
        const losses = gpu.zeros([model.lossSlots(2)]);
        let convForwards = 0;
        const stop = gpu.observeDispatches(({ kernel }) => {
          if (kernel.name === "conv2d:main") convForwards++;
        });
        const lossValues: number[] = [];
        for (const step of microBatches) {
          model.step(step, 0.5, 0.9, losses);
          lossValues.push(...await losses.read());
        }
        stop();
        const tensors = [
          ...model.online.parameters().map((p) => p.value),
          ...model.online.states().map((s) => s.value),
          ...model.velocity,
          ...model.target.parameters().map((p) => p.value),
          ...model.target.states().map((s) => s.value),
        ];
        return {
          convForwards,
          lossValues,
          counters: model.online.batchCounters().map((c) => c.count),
          values: await gpu.read(tensors),
        };
      };
      const stacked = await train(true);
      const separate = await train(false);
      assert.ok(
        stacked.convForwards > 0 && 2 * stacked.convForwards <= separate.convForwards + 4,
        `conv GEMM dispatches: stacked ${stacked.convForwards}, separate ${separate.convForwards}`,
      );
      assert.deepEqual(stacked.counters, separate.counters, "BatchNorm batch counters");
      assertClose(stacked.lossValues, separate.lossValues, TOL, "losses");
      stacked.values.forEach((v, i) => assertClose(v, separate.values[i], TOL, `tensor ${i}`));
    },
  });
}
