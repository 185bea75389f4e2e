import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { l2normBackward, l2normForward } from "../kernels/l2norm.ts";

// One tree-ordered f32 sum of squares per row, a sqrt and a divide: a few ulps relative.
const TOL = { atol: 1e-6, rtol: 1e-5 };
const EPS = 1e-12;

/** Float64 reference: y, norms and the backward dx for rows of x and upstream dy. */
function reference(x: Float32Array, dy: Float32Array, rows: number, cols: number) {
  const y = new Float64Array(rows * cols);
  const norms = new Float64Array(rows);
  const dx = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let sumsq = 0;
    for (let c = 0; c < cols; c++) sumsq += x[r * cols + c] ** 2;
    const norm = Math.sqrt(sumsq);
    norms[r] = norm;
    const scale = Math.max(norm, EPS);
    let dot = 0;
    for (let c = 0; c < cols; c++) {
      y[r * cols + c] = x[r * cols + c] / scale;
      dot += y[r * cols + c] * dy[r * cols + c];
    }
    for (let c = 0; c < cols; c++) {
      dx[r * cols + c] = (dy[r * cols + c] - y[r * cols + c] * dot) / scale;
    }
  }
  return { y, norms, dx };
}

for (const [rows, cols] of [[1, 1], [3, 5], [7, 300], [5, 4096], [2, 4099]]) {
  Deno.test({
    name: `l2norm: forward and backward against float64, ${rows}x${cols}`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows * 31 + cols);
      const x = rng.normals(rows * cols);
      const dy = rng.normals(rows * cols);
      const tx = gpu.upload(x, [rows, cols]);
      const tdy = gpu.upload(dy, [rows, cols]);
      const ty = gpu.empty([rows, cols]);
      const tn = gpu.empty([rows]);
      const tdx = gpu.empty([rows, cols]);
      l2normForward(gpu, tx, ty, tn);
      l2normBackward(gpu, ty, tn, tdy, tdx);
      const [y, norms, dx] = await gpu.read([ty, tn, tdx]);
      const ref = reference(x, dy, rows, cols);
      assertClose(y, ref.y, TOL, "y");
      assertClose(norms, ref.norms, TOL, "norms");
      // dx scales with 1/|x|, which is ~1/sqrt(cols) here.
      assertClose(dx, ref.dx, TOL, "dx");
      for (const t of [tx, tdy, ty, tn, tdx]) t.release();
    },
  });
}

Deno.test({
  name: "l2norm: the backward is the finite-difference gradient of sum(w * x/|x|), 4x6, float64",
  fn: () => {
    // Checks the formula itself (the GPU is checked against the same reference above).
    const rows = 4;
    const cols = 6;
    const rng = new Rng(9);
    const x = rng.normals(rows * cols);
    const w = rng.normals(rows * cols);
    const objective = (values: Float64Array) => {
      let total = 0;
      for (let r = 0; r < rows; r++) {
        let sumsq = 0;
        for (let c = 0; c < cols; c++) sumsq += values[r * cols + c] ** 2;
        const norm = Math.sqrt(sumsq);
        for (let c = 0; c < cols; c++) total += w[r * cols + c] * values[r * cols + c] / norm;
      }
      return total;
    };
    const { dx } = reference(x, w, rows, cols);
    const numeric = new Float64Array(rows * cols);
    const h = 1e-6;
    for (let i = 0; i < rows * cols; i++) {
      const plus = Float64Array.from(x);
      const minus = Float64Array.from(x);
      plus[i] += h;
      minus[i] -= h;
      numeric[i] = (objective(plus) - objective(minus)) / (2 * h);
    }
    assertClose(dx, numeric, { atol: 1e-7, rtol: 1e-6 }, "dx vs finite differences");
  },
});

Deno.test({
  name: "l2norm: a stacked [2n, d] buffer via rowOffset, and a zero row stays finite (3x8)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 3;
    const cols = 8;
    const rng = new Rng(4);
    const a = rng.normals(rows * cols);
    const b = rng.normals(rows * cols);
    b.fill(0, cols, 2 * cols); // row 1 of b is all zeros
    const dy = rng.normals(2 * rows * cols);
    const ta = gpu.upload(a, [rows, cols]);
    const tb = gpu.upload(b, [rows, cols]);
    const stacked = gpu.empty([2 * rows, cols]);
    const norms = gpu.empty([2 * rows]);
    const tdy = gpu.upload(dy, [2 * rows, cols]);
    const da = gpu.empty([rows, cols]);
    const db = gpu.empty([rows, cols]);
    l2normForward(gpu, ta, stacked, norms);
    l2normForward(gpu, tb, stacked, norms, { rowOffset: rows });
    l2normBackward(gpu, stacked, norms, tdy, da);
    l2normBackward(gpu, stacked, norms, tdy, db, { rowOffset: rows });
    const [y, n, ga, gb] = await gpu.read([stacked, norms, da, db]);
    const both = new Float32Array([...a, ...b]);
    const ref = reference(both, dy, 2 * rows, cols);
    assertClose(y, ref.y, TOL, "stacked y");
    assertClose(n, ref.norms, TOL, "stacked norms");
    assertClose(ga, ref.dx.subarray(0, rows * cols), TOL, "da");
    // The zero row's gradient is dy / 1e-12: large but finite, as the eps clamp intends.
    assertClose(gb, ref.dx.subarray(rows * cols), { atol: 1e-6, rtol: 1e-5 }, "db");
    assert.ok(gb.every(Number.isFinite), "db finite");
    assert.throws(
      () => l2normForward(gpu, ta, stacked, norms, { rowOffset: rows + 1 }),
      /cannot hold 3 rows of 8 starting at row 4/,
    );
    for (const t of [ta, tb, stacked, norms, tdy, da, db]) t.release();
  },
});
