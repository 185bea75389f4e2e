import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { knnScores } from "../kernels/knn.ts";

/** float64 reference: stable sort by similarity descending, ties by bank index. */
function knnReference(
  sim: Float32Array,
  labels: Uint32Array,
  queries: number,
  bank: number,
  k: number,
  classes: number,
  temperature: number,
): Float64Array {
  const out = new Float64Array(queries * classes);
  for (let q = 0; q < queries; q++) {
    const order = Array.from({ length: bank }, (_, j) => j);
    order.sort((a, b) => sim[q * bank + b] - sim[q * bank + a] || a - b);
    for (const j of order.slice(0, Math.min(k, bank))) {
      out[q * classes + labels[j]] += Math.exp(sim[q * bank + j] / temperature);
    }
  }
  return out;
}

// exp(s / 0.1) of f32 similarities: relative error a few ulps times the vote count.
const TOL = { atol: 1e-5, rtol: 1e-5 };

const CASES: [number, number, number, number][] = [
  // queries, bank, k, classes
  [1, 1, 1, 2],
  [3, 7, 200, 3], // k larger than the bank: every entry votes
  [5, 300, 20, 10],
  [17, 1000, 200, 10],
  [2, 5000, 200, 100],
];

for (const [queries, bank, k, classes] of CASES) {
  Deno.test({
    name: `knn: weighted top-${k} vote, ${queries} queries x ${bank} bank, ${classes} classes`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(queries * 31 + bank);
      const sim = rng.array(queries * bank);
      const labels = Uint32Array.from({ length: bank }, () => Math.floor(rng.next() * classes));
      const tSim = gpu.upload(sim, [queries, bank]);
      const tLabels = gpu.upload(labels, [bank], "u32");
      const scores = gpu.empty([queries, classes]);
      knnScores(gpu, tSim, tLabels, scores, { k, classes, temperature: 0.1 });
      const [got] = await gpu.read([scores]);
      assertClose(got, knnReference(sim, labels, queries, bank, k, classes, 0.1), TOL, "scores");
      for (const t of [tSim, tLabels, scores]) t.release();
    },
  });
}

Deno.test({
  name: "knn: ties at the k-th similarity are taken in bank order",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    // One query; similarities 0.9, then five entries tied at 0.5 with labels 0,1,2,3,4.
    const sim = new Float32Array([0.5, 0.9, 0.5, 0.5, 0.5, 0.5, -0.2]);
    const labels = new Uint32Array([0, 5, 1, 2, 3, 4, 5]);
    const tSim = gpu.upload(sim, [1, 7]);
    const tLabels = gpu.upload(labels, [7], "u32");
    const scores = gpu.empty([1, 6]);
    knnScores(gpu, tSim, tLabels, scores, { k: 3, classes: 6, temperature: 1 });
    const [got] = await gpu.read([scores]);
    // k = 3: 0.9 (label 5), then the first two tied entries in bank order: labels 0 and 1.
    const e5 = Math.exp(0.9);
    const e05 = Math.exp(0.5);
    assertClose(got, [e05, e05, 0, 0, 0, e5], TOL, "scores");
    assert.equal(got[2], 0);
    for (const t of [tSim, tLabels, scores]) t.release();
  },
});
