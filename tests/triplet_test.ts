import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { normalizeRows, similarity, tripletFromSimilarity } from "./ssl_loss_reference.ts";
import { sortRows } from "../kernels/sort.ts";
import { reduceAll } from "../kernels/reduce.ts";
import { tripletBackward, tripletForward, type TripletParams } from "../kernels/triplet.ts";
import type { Gpu } from "../runtime/gpu.ts";

// The loss is a sum of n f32 row terms of size up to ~100 (ulp 7.6e-6); gradients are sums of
// |W| + 1 unit-vector entries scaled by 1/n.
const LOSS_TOL = { atol: 1e-4, rtol: 1e-6 };
const GRAD_TOL = { atol: 1e-6, rtol: 1e-5 };

/** Sort S's rows on the GPU, then run the triplet forward and backward kernels. */
async function runTriplet(
  gpu: Gpu,
  s: ArrayLike<number>,
  zHat: ArrayLike<number>,
  n: number,
  d: number,
  params: TripletParams,
) {
  const ts = gpu.upload(s, [n, n]);
  const tz = gpu.upload(zHat, [n, d]);
  const kept = params.window[1];
  const distances = gpu.empty([n, kept]);
  const index = gpu.empty([n, kept], "u32");
  const rowLoss = gpu.empty([n]);
  const active = gpu.empty([n]);
  const loss = gpu.empty([1]);
  const dpHat = gpu.empty([n, d]);
  sortRows(gpu, ts, distances, index, { keyScale: -2, maskDiagonal: true });
  tripletForward(gpu, ts, distances, rowLoss, active, params);
  reduceAll(gpu, rowLoss, "sum", loss);
  tripletBackward(gpu, tz, index, active, dpHat, params);
  const [l, a, g, idx] = await gpu.read([loss, active, dpHat, index]);
  for (const t of [ts, tz, distances, index, rowLoss, active, loss, dpHat]) t.release();
  return { loss: l[0], active: a, dpHat: g, index: idx as Uint32Array };
}

// The hand-computed case, d = 2. Unit targets z_hat = (1,0), (0,1), (-1,0), (0,-1); unit
// predictions p_hat = (1,0), (0.6,0.8), (0,-1), (-0.8,0.6). S_ij = p_hat_i . z_hat_j:
//   row 0: [ 1,    0,   -1,    0  ]    distances d = -2 S: [-2,   0,    2,    0  ]
//   row 1: [ 0.6,  0.8, -0.6, -0.8]                        [-1.2, -1.6, 1.2,  1.6]
//   row 2: [ 0,   -1,    0,    1  ]                        [ 0,    2,   0,   -2  ]
//   row 3: [-0.8,  0.6,  0.8, -0.6]                        [ 1.6, -1.2, -1.6, 1.2]
// Positives d_ii: -2, -1.6, 0, 1.2. Negatives sorted ascending (ties by column):
//   row 0: 0 (col 1), 0 (col 3), 2 (col 2)   row 1: -1.2 (0), 1.2 (2), 1.6 (3)
//   row 2: -2 (3), 0 (0), 2 (1)              row 3: -1.6 (2), -1.2 (1), 1.6 (0)
// Window [2, 3] (mean of ranks 2..3): deputies 1, 1.4, 1, 0.2; gamma d_ap - d_an with gamma = 2:
//   -4 - 1 = -5, -3.2 - 1.4 = -4.6, 0 - 1 = -1, 2.4 - 0.2 = 2.2.
// M = 3: hinges max(0, . + 3) = 0, 0, 2, 5.2 -> loss = 7.2 / 4 = 1.8 (rows 0 and 1 clipped).
// M = 100: 95, 95.4, 99, 102.2 -> loss = 391.6 / 4 = 97.9 (nothing clipped).
// dL/dp_hat_i = (1/4)(-4 z_hat_i + (2/2) sum of the window's z_hat) where active:
//   row 0: (-4,0) + z3 + z2 = (-5,-1) -> (-1.25,-0.25)  (the tie puts col 3, not col 1, in the window)
//   row 1: (0,-4) + z2 + z3 = (-1,-5) -> (-0.25,-1.25)
//   row 2: (4,0) + z0 + z1 = (5,1) -> (1.25,0.25)
//   row 3: (0,4) + z1 + z0 = (1,5) -> (0.25,1.25)
const HAND_Z = [1, 0, 0, 1, -1, 0, 0, -1];
const HAND_S = [1, 0, -1, 0, 0.6, 0.8, -0.6, -0.8, 0, -1, 0, 1, -0.8, 0.6, 0.8, -0.6];

Deno.test({
  name:
    "triplet: hand-computed n=4, d=2, window [2,3]: loss 1.8 (M=3, two rows clipped), 97.9 (M=100)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const clipped = await runTriplet(gpu, HAND_S, HAND_Z, 4, 2, {
      window: [2, 3],
      gamma: 2,
      margin: 3,
    });
    assertClose([clipped.loss], [1.8], { atol: 1e-6, rtol: 1e-6 }, "loss, M = 3");
    assert.deepEqual([...clipped.active], [0, 0, 1, 1]);
    assertClose(clipped.dpHat, [0, 0, 0, 0, 1.25, 0.25, 0.25, 1.25], GRAD_TOL, "dp_hat, M = 3");
    const open = await runTriplet(gpu, HAND_S, HAND_Z, 4, 2, {
      window: [2, 3],
      gamma: 2,
      margin: 100,
    });
    assertClose([open.loss], [97.9], { atol: 1e-5, rtol: 1e-6 }, "loss, M = 100");
    assertClose(
      open.dpHat,
      [-1.25, -0.25, -0.25, -1.25, 1.25, 0.25, 0.25, 1.25],
      GRAD_TOL,
      "dp_hat, M = 100",
    );
    // Sorted columns per row (ranks 1..3): the masked diagonal never appears.
    assert.deepEqual([...open.index], [1, 3, 2, 0, 2, 3, 3, 0, 1, 2, 1, 0]);
  },
});

/** Unit rows; with `repeats`, some z rows are exact copies (tied distances in every row). */
function randomCase(n: number, d: number, seed: number, repeats: boolean) {
  const rng = new Rng(seed);
  const p = normalizeRows(rng.normals(n * d), n, d).y;
  const z = normalizeRows(rng.normals(n * d), n, d).y;
  if (repeats) {
    for (let j = 1; j < n; j += 3) z.copyWithin(j * d, (j - 1) * d, j * d);
  }
  const pF = Float32Array.from(p);
  const zF = Float32Array.from(z);
  // The reference ranks the same f32 cosines the GPU sorts.
  const s = Float32Array.from(similarity(Float64Array.from(pF), Float64Array.from(zF), n, n, d));
  return { s, z: zF };
}

const cases: { n: number; d: number; params: TripletParams; repeats?: boolean; note: string }[] = [
  { n: 2, d: 3, params: { window: [1, 1], gamma: 2, margin: 100 }, note: "n = 2, one negative" },
  { n: 5, d: 7, params: { window: [2, 3], gamma: 2, margin: 100 }, note: "n not a power of two" },
  { n: 37, d: 16, params: { window: [2, 10], gamma: 2, margin: 100 }, note: "default window" },
  {
    n: 37,
    d: 16,
    params: { window: [2, 10], gamma: 2, margin: 0.5 },
    note: "small margin: some hinges clipped",
  },
  {
    n: 64,
    d: 8,
    params: { window: [2, 10], gamma: 2, margin: 100 },
    repeats: true,
    note: "repeated z rows (tied distances)",
  },
  { n: 300, d: 32, params: { window: [150, 150], gamma: 2, margin: 100 }, note: "median rank" },
];

for (const { n, d, params, repeats = false, note } of cases) {
  Deno.test({
    name:
      `triplet: kernels vs float64, n=${n}, d=${d}, window [${params.window}], M=${params.margin}: ${note}`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const { s, z } = randomCase(n, d, n * 13 + d, repeats);
      const got = await runTriplet(gpu, s, z, n, d, params);
      const ref = tripletFromSimilarity(s, z, n, d, params);
      assertClose([got.loss], [ref.loss], LOSS_TOL, "loss");
      assert.deepEqual([...got.active], ref.active.map(Number), "hinge mask");
      const [first, last] = params.window;
      for (let i = 0; i < n; i++) {
        const gotWindow = [...got.index.subarray(i * last + first - 1, (i + 1) * last)];
        assert.deepEqual(gotWindow, ref.windows[i], `row ${i}: window columns`);
      }
      assertClose(got.dpHat, ref.dpHat, GRAD_TOL, "dp_hat");
      if (params.margin < 1) {
        const clipped = ref.active.filter((a) => !a).length;
        assert.ok(clipped > 0 && clipped < n, `some but not all rows clipped (${clipped}/${n})`);
      }
    },
  });
}

Deno.test({
  name: "triplet: a window that does not fit the n - 1 negatives is a clear error",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const s = gpu.zeros([10, 10]);
    const sorted = gpu.zeros([10, 9]);
    const rowLoss = gpu.zeros([10]);
    const active = gpu.zeros([10]);
    const params = { window: [2, 10] as [number, number], gamma: 2, margin: 100 };
    assert.throws(
      () => tripletForward(gpu, s, sorted, rowLoss, active, params),
      /needs 10 negatives, but a batch of 10 has only 9 per row/,
    );
    assert.throws(
      () => tripletForward(gpu, s, sorted, rowLoss, active, { ...params, window: [3, 2] }),
      /1 <= first <= last/,
    );
    for (const t of [s, sorted, rowLoss, active]) t.release();
  },
});
