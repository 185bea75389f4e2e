/**
 * The CPU and GPU kernel plans agree end to end: the online network of a small SSL model
 * (ResNet-18 widths 4/8/16/32 on 16x16 gray views, batch 8, projector and predictor) from the same
 * seed, run forward with batch statistics under each plan, gives the same backbone features and
 * predictions. The per-kernel tests (matmul, conv2d) check both plans' forward and backward passes
 * against float64 references; this checks that the plans compose through a whole network. Only
 * the forward runs: lavapipe compiles every plan's pipelines anew (~1.5 s of CPU each), and a
 * training step's backward pipelines would triple that.
 */
import assert from "node:assert/strict";
import { assertClose, FORCED_PLANS, gpuTest, Rng, testGpu, withKernelPlan } from "./util.ts";
import type { Gpu, Kernel } from "../runtime/gpu.ts";
import { SslModel } from "../models/ssl.ts";

const BATCH = 8;
const SIZE = 16;

// The plans may sum in different orders (tiles, K slices); f32 rounding then moves the O(1)
// outputs by ~1e-6 (today's plans measured bitwise equal at these shapes). A wrong tile, stride
// phase or operand load moves them by O(0.1).
const TOL = { atol: 1e-5, rtol: 1e-4 };

interface Outcome {
  features: number[];
  predictions: number[];
  /** The GEMM pipelines (matmul, conv2d) the forward dispatched. */
  gemmKernels: Set<Kernel>;
}

/** Backbone features and predictor outputs of a view; model and view from fixed seeds. */
async function forwardUnderPlan(gpu: Gpu): Promise<Outcome> {
  const gemmKernels = new Set<Kernel>();
  const unsubscribe = gpu.observeDispatches(({ kernel }) => {
    if (kernel.name === "matmul:main" || kernel.name === "conv2d:main") gemmKernels.add(kernel);
  });
  const model = new SslModel(
    gpu,
    {
      backbone: { arch: "resnet18", inChannels: 1, smallImage: true, widths: [4, 8, 16, 32] },
      projectorHidden: 32,
      projectorOut: 16,
      predictorHidden: 32,
      loss: { kind: "triplet", window: [2, 6], gamma: 2, margin: 100 },
    },
    BATCH,
    0,
    { momentum: 0.9, weightDecay: 1e-6, eta: 0.001 },
  );
  const view = gpu.upload(new Rng(11).normals(BATCH * SIZE * SIZE), [BATCH, SIZE, SIZE, 1]);
  const online = model.online;
  online.ctx.mode = "no-grad-train";
  const [features, predictions] = await gpu.read([
    online.backbone.forward(view),
    online.forward(view, true),
  ]);
  online.ctx.releaseActivations();
  view.release();
  unsubscribe();
  return { features: Array.from(features), predictions: Array.from(predictions), gemmKernels };
}

Deno.test({
  name: `plans agree: ResNet-18 4/8/16/32 + heads forward at ${SIZE}px, batch ${BATCH}, ` +
    "CPU plans vs GPU plans",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const outcomes: Outcome[] = [];
    for (const plan of FORCED_PLANS) {
      outcomes.push(await withKernelPlan(gpu, plan, () => forwardUnderPlan(gpu)));
    }
    const [onCpuPlans, onGpuPlans] = outcomes;
    // The plans really differ: no GEMM pipeline (specialised by tile, staging and operand source)
    // of the GPU plans was dispatched under the CPU plans.
    const shared = [...onGpuPlans.gemmKernels].filter((k) => onCpuPlans.gemmKernels.has(k));
    assert.ok(onGpuPlans.gemmKernels.size > 0, "the forward dispatched GEMMs");
    assert.equal(shared.length, 0, `GEMM pipelines shared by both plans: ${shared.length}`);
    assertClose(onGpuPlans.features, onCpuPlans.features, TOL, "backbone features");
    assertClose(onGpuPlans.predictions, onCpuPlans.predictions, TOL, "predictions");
  },
});
