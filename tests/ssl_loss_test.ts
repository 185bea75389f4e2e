import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import {
  byolReference,
  finiteDifferences,
  infoNceReference,
  tripletReference,
} from "./ssl_loss_reference.ts";
import { deputyWindow, type LossConfig, SslLoss } from "../models/loss.ts";
import type { Gpu } from "../runtime/gpu.ts";

// GPU (f32) against float64 references: losses are sums of n row terms (up to ~100 each);
// gradients are O(1/n) and pass through one normalisation.
const LOSS_TOL = { atol: 1e-4, rtol: 1e-6 };
const GRAD_TOL = { atol: 2e-6, rtol: 1e-4 };
// Float64 finite differences (h = 1e-6) against the float64 analytic gradient.
const FD_TOL = { atol: 1e-7, rtol: 1e-6 };

async function runDirection(
  gpu: Gpu,
  config: LossConfig,
  p: Float32Array,
  z: Float32Array,
  n: number,
  d: number,
) {
  const loss = new SslLoss(gpu, config, n, d);
  const tp = gpu.upload(p, [n, d]);
  const tz = gpu.upload(z, [n, d]);
  const dp = gpu.empty([n, d]);
  const lossOut = gpu.zeros([3]);
  loss.direction(tp, tz, dp, lossOut, 1);
  const [l, g] = await gpu.read([lossOut, dp]);
  for (const t of [tp, tz, dp, lossOut]) t.release();
  loss.release();
  return { lossOut: l, dp: g };
}

// The hand-computed case of tests/triplet_test.ts, from raw vectors: z = (3,0), (0,2), (-1,0),
// (0,-5) normalise to the axes; p = (4,0), (3,4), (0,-2), (-8,6) to (1,0), (0.6,0.8), (0,-1),
// (-0.8,0.6), norms 4, 5, 2, 10. Window [2,3]: loss 1.8 at M = 3, 97.9 at M = 100, and
// dL/dp_hat as derived there. Through the normalisation, dp_i = (g_i - p_hat_i (p_hat_i . g_i)) / |p_i|:
//   row 0 (M = 100): g = (-1.25,-0.25), p_hat.g = -1.25 -> (0,-0.25) / 4 = (0, -0.0625)
//   row 1 (M = 100): g = (-0.25,-1.25), p_hat.g = -1.15 -> (0.44,-0.33) / 5 = (0.088, -0.066)
//   row 2: g = (1.25,0.25), p_hat.g = -0.25 -> (1.25,0) / 2 = (0.625, 0)
//   row 3: g = (0.25,1.25), p_hat.g = 0.55 -> (0.69,0.92) / 10 = (0.069, 0.092)
const HAND_P = new Float32Array([4, 0, 3, 4, 0, -2, -8, 6]);
const HAND_Z = new Float32Array([3, 0, 0, 2, -1, 0, 0, -5]);

Deno.test({
  name:
    "ssl loss: hand-computed triplet n=4, d=2 from raw vectors (loss 1.8 at M=3, 97.9 at M=100)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const clipped = await runDirection(
      gpu,
      { kind: "triplet", window: [2, 3], margin: 3 },
      HAND_P,
      HAND_Z,
      4,
      2,
    );
    assertClose(clipped.lossOut, [0, 1.8, 0], { atol: 1e-6, rtol: 1e-6 }, "lossOut, M = 3");
    assertClose(clipped.dp, [0, 0, 0, 0, 0.625, 0, 0.069, 0.092], GRAD_TOL, "dp, M = 3");
    const open = await runDirection(gpu, { kind: "triplet", window: [2, 3] }, HAND_P, HAND_Z, 4, 2);
    assertClose(open.lossOut, [0, 97.9, 0], { atol: 1e-5, rtol: 1e-6 }, "lossOut, M = 100");
    assertClose(
      open.dp,
      [0, -0.0625, 0.088, -0.066, 0.625, 0, 0.069, 0.092],
      GRAD_TOL,
      "dp, M = 100",
    );
  },
});

function randomPair(n: number, d: number, seed: number) {
  const rng = new Rng(seed);
  // Raw vectors of varied length, so the normalisation's 1/|p| matters.
  const p = Float32Array.from(rng.normals(n * d), (v, i) => v * (0.5 + (i % d === 0 ? 2 : 1)));
  const z = rng.normals(n * d, 3);
  return { p, z };
}

const directional: { config: LossConfig; n: number; d: number }[] = [
  { config: { kind: "triplet" }, n: 12, d: 5 },
  { config: { kind: "triplet", margin: 0.5 }, n: 12, d: 5 },
  { config: { kind: "rank-k", k: 3 }, n: 12, d: 5 },
  { config: { kind: "median" }, n: 12, d: 5 },
  { config: { kind: "median" }, n: 13, d: 5 },
  { config: { kind: "hardest" }, n: 12, d: 5 },
  { config: { kind: "rank-k", k: 1 }, n: 2, d: 3 },
  { config: { kind: "byol" }, n: 12, d: 5 },
  { config: { kind: "byol" }, n: 2, d: 3 },
];

for (const { config, n, d } of directional) {
  Deno.test({
    name: `ssl loss: ${
      JSON.stringify(config)
    } n=${n}, d=${d}: GPU vs float64, gradient vs finite differences`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const { p, z } = randomPair(n, d, n * 101 + d);
      const reference = (pAt: ArrayLike<number>) => {
        if (config.kind === "byol") return byolReference(pAt, z, n, d);
        const window = deputyWindow(config, n);
        return tripletReference(pAt, z, n, d, { window, gamma: 2, margin: config.margin ?? 100 });
      };
      const ref = reference(p);
      const numeric = finiteDifferences((x) => reference(x).loss, p);
      assertClose(ref.dp, numeric, FD_TOL, "float64 gradient vs finite differences");
      const got = await runDirection(gpu, config, p, z, n, d);
      assertClose(got.lossOut, [0, ref.loss, 0], LOSS_TOL, "loss");
      assertClose(got.dp, ref.dp, GRAD_TOL, "dp");
    },
  });
}

Deno.test({
  name: "ssl loss: median window is the middle rank (odd count) or the two middle ranks (even)",
  fn: () => {
    assert.deepEqual(deputyWindow({ kind: "median" }, 12), [6, 6]); // 11 negatives
    assert.deepEqual(deputyWindow({ kind: "median" }, 13), [6, 7]); // 12 negatives
    assert.deepEqual(deputyWindow({ kind: "median" }, 2), [1, 1]);
    assert.deepEqual(deputyWindow({ kind: "triplet" }, 256), [2, 10]);
    assert.deepEqual(deputyWindow({ kind: "hardest" }, 256), [1, 1]);
    assert.deepEqual(deputyWindow({ kind: "rank-k", k: 4 }, 256), [4, 4]);
  },
});

Deno.test({
  name: "ssl loss: default triplet at n=256, d=256 matches float64 and is bit-reproducible",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const [n, d] = [256, 256];
    const { p, z } = randomPair(n, d, 5);
    const first = await runDirection(gpu, { kind: "triplet" }, p, z, n, d);
    const second = await runDirection(gpu, { kind: "triplet" }, p, z, n, d);
    const ref = tripletReference(p, z, n, d, { window: [2, 10], gamma: 2, margin: 100 });
    assertClose(first.lossOut, [0, ref.loss, 0], LOSS_TOL, "loss");
    assertClose(first.dp, ref.dp, { atol: 1e-7, rtol: 1e-4 }, "dp");
    assert.deepEqual(second.lossOut, first.lossOut, "same loss bits");
    assert.deepEqual(second.dp, first.dp, "same gradient bits");
  },
});

// Shapes share GEMM specialisations (each costs seconds to compile on a CPU adapter): d = 5 and
// odd 2n use the scalar paths, n = 32, d = 256 the vec4 ones.
for (const [n, d, temperature] of [[7, 5, 0.5], [7, 5, 0.1], [1, 5, 0.2], [32, 256, 0.1]]) {
  Deno.test({
    name:
      `ssl loss: InfoNCE n=${n}, d=${d}, tau=${temperature}: GPU vs float64, both views' gradients vs finite differences`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const { p: a, z: b } = randomPair(n, d, n * 7 + d);
      const ref = infoNceReference(a, b, n, d, temperature);
      if (n * d <= 64) {
        const both = new Float64Array([...a, ...b]);
        const numeric = finiteDifferences(
          (x) => infoNceReference(x.subarray(0, n * d), x.subarray(n * d), n, d, temperature).loss,
          both,
        );
        assertClose(
          [...ref.da, ...ref.db],
          numeric,
          FD_TOL,
          "float64 gradient vs finite differences",
        );
      }
      const loss = new SslLoss(gpu, { kind: "infonce", temperature }, n, d);
      const ta = gpu.upload(a, [n, d]);
      const tb = gpu.upload(b, [n, d]);
      const da = gpu.empty([n, d]);
      const db = gpu.empty([n, d]);
      const lossOut = gpu.zeros([2]);
      loss.infoNce(ta, tb, da, db, lossOut, 0);
      const [l, ga, gb] = await gpu.read([lossOut, da, db]);
      // Logits are cosines / tau: f32 cosine errors grow by 1/tau.
      const tol = { atol: 1e-5, rtol: 1e-5 };
      assertClose(l, [ref.loss, 0], tol, "loss");
      assertClose(ga, ref.da, tol, "da");
      assertClose(gb, ref.db, tol, "db");
      for (const t of [ta, tb, da, db, lossOut]) t.release();
      loss.release();
    },
  });
}

Deno.test({
  name: "ssl loss: configurations that cannot work fail clearly",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(
      () => new SslLoss(gpu, { kind: "triplet" }, 10, 8),
      /needs 10 negatives, but a batch of 10 has only 9/,
    );
    assert.throws(() => new SslLoss(gpu, { kind: "rank-k" }, 10, 8), /needs k/);
    assert.throws(() => new SslLoss(gpu, { kind: "hardest" }, 1, 8), /at least 2/);
    assert.throws(
      () => new SslLoss(gpu, { kind: "infonce", temperature: 0 }, 4, 8),
      /temperature must be > 0/,
    );
    const triplet = new SslLoss(gpu, { kind: "triplet" }, 11, 4);
    const x = gpu.zeros([11, 4]);
    const lossOut = gpu.zeros([1]);
    assert.throws(() => triplet.infoNce(x, x, x, x, lossOut, 0), /call direction/);
    assert.throws(() => triplet.direction(x, x, x, lossOut, 1), /lossIndex 1 outside/);
    const wrong = gpu.zeros([11, 5]);
    assert.throws(
      () => triplet.direction(x, wrong, x, lossOut, 0),
      /z must be \[11, 4\], got \[11,5\]/,
    );
    const infonce = new SslLoss(gpu, { kind: "infonce" }, 11, 4);
    assert.throws(() => infonce.direction(x, x, x, lossOut, 0), /call infoNce/);
    for (const t of [x, lossOut, wrong]) t.release();
  },
});
