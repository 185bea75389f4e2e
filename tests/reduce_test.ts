import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { reduceAll, reduceRows } from "../kernels/reduce.ts";

// Sums of up to 10^6 f32 values in tree order: relative error ~ log2(n) * 2^-24 per level.
const TOL = { atol: 1e-4, rtol: 1e-5 };

for (const [rows, cols] of [[1, 1], [3, 5], [7, 4096], [5, 4097], [2, 1_000_003], [300, 33]]) {
  Deno.test({
    name: `reduce: per-row sum, sum of squares, norm; ${rows}x${cols}`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows * 7919 + cols);
      const x = rng.array(rows * cols);
      const tx = gpu.upload(x, [rows, cols]);
      const outs = [gpu.empty([rows]), gpu.empty([rows]), gpu.empty([rows])];
      reduceRows(gpu, tx, rows, cols, "sum", outs[0]);
      reduceRows(gpu, tx, rows, cols, "sumsq", outs[1]);
      reduceRows(gpu, tx, rows, cols, "norm", outs[2]);
      const got = await gpu.read(outs);
      const sum = new Float64Array(rows);
      const sumsq = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const v = x[r * cols + c];
          sum[r] += v;
          sumsq[r] += v * v;
        }
      }
      assertClose(got[0], sum, TOL, "sum");
      assertClose(got[1], sumsq, TOL, "sum of squares");
      assertClose(got[2], sumsq.map(Math.sqrt), TOL, "norm");
      for (const t of [tx, ...outs]) t.release();
    },
  });
}

Deno.test({
  name: "reduce: whole-tensor sum is bit-identical across runs (no atomics)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const x = new Rng(5).array(250_000);
    const tx = gpu.upload(x, [x.length]);
    const a = gpu.empty([1]);
    const b = gpu.empty([1]);
    reduceAll(gpu, tx, "sum", a);
    reduceAll(gpu, tx, "sum", b);
    const [ga, gb] = await gpu.read([a, b]);
    if (ga[0] !== gb[0]) throw new Error(`two runs differ: ${ga[0]} vs ${gb[0]}`);
    for (const t of [tx, a, b]) t.release();
  },
});
