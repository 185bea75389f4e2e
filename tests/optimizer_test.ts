import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { larsStep, sgdStep } from "../kernels/optimizer.ts";

// One update is a handful of f32 multiply-adds; norms are tree sums.
const TOL = { atol: 1e-6, rtol: 1e-5 };

function norm(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/** METHOD.md's LARS in float64. */
function larsReference(
  w: Float32Array,
  g: Float32Array,
  v: Float32Array,
  o: { lr: number; momentum: number; weightDecay: number; eta: number; excluded: boolean },
): { w: Float64Array; v: Float64Array } {
  const wd = o.excluded ? 0 : o.weightDecay;
  const wn = norm(w);
  const gn = norm(g);
  const trust = o.excluded || wn === 0 || gn === 0 ? 1 : o.eta * wn / (gn + wd * wn);
  const newV = new Float64Array(w.length);
  const newW = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) {
    newV[i] = o.momentum * v[i] + o.lr * trust * (g[i] + wd * w[i]);
    newW[i] = w[i] - newV[i];
  }
  return { w: newW, v: newV };
}

for (const [n, excluded] of [[1, false], [1000, false], [9000, true], [70_001, false]] as const) {
  Deno.test({
    name: `optimizer: LARS step matches METHOD.md, n=${n}, excluded=${excluded}`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(n + (excluded ? 1 : 0));
      const w = rng.array(n);
      const g = rng.array(n, -0.01, 0.01);
      const v = rng.array(n, -0.001, 0.001);
      const options = { lr: 0.3, momentum: 0.9, weightDecay: 1e-6, eta: 0.001, excluded };
      const tw = gpu.upload(w, [n]);
      const tg = gpu.upload(g, [n]);
      const tv = gpu.upload(v, [n]);
      const norms = gpu.zeros([6]);
      // Offset 4 checks that a shared norm buffer is addressed correctly.
      larsStep(gpu, tw, tg, tv, norms, 4, options);
      const [gw, gv] = await gpu.read([tw, tv]);
      const ref = larsReference(w, g, v, options);
      assertClose(gv, ref.v, { atol: 1e-9, rtol: 1e-4 }, "velocity");
      assertClose(gw, ref.w, TOL, "weight");
      for (const t of [tw, tg, tv, norms]) t.release();
    },
  });
}

Deno.test({
  name: "optimizer: LARS trust ratio is 1 when the gradient is zero",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const w = new Float32Array([1, 2, 3]);
    const tw = gpu.upload(w, [3]);
    const tg = gpu.zeros([3]);
    const tv = gpu.zeros([3]);
    const norms = gpu.zeros([2]);
    const options = { lr: 0.5, momentum: 0.9, weightDecay: 0.1, eta: 0.001, excluded: false };
    larsStep(gpu, tw, tg, tv, norms, 0, options);
    const [gw] = await gpu.read([tw]);
    // v = lr * 1 * (0 + wd * w) = 0.05 w; w' = 0.95 w
    assertClose(gw, [0.95, 1.9, 2.85], TOL, "weight");
    for (const t of [tw, tg, tv, norms]) t.release();
  },
});

Deno.test({
  name: "optimizer: SGD with momentum matches PyTorch's update, two steps",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(3);
    const n = 2049;
    const w = rng.array(n);
    const g = rng.array(n);
    const tw = gpu.upload(w, [n]);
    const tg = gpu.upload(g, [n]);
    const tv = gpu.zeros([n]);
    const o = { lr: 0.1, momentum: 0.9, weightDecay: 1e-4 };
    sgdStep(gpu, tw, tg, tv, o);
    sgdStep(gpu, tw, tg, tv, o);
    const [gw] = await gpu.read([tw]);
    const ref = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let wi = w[i];
      let vi = 0;
      for (let step = 0; step < 2; step++) {
        vi = o.momentum * vi + g[i] + o.weightDecay * wi;
        wi = wi - o.lr * vi;
      }
      ref[i] = wi;
    }
    assertClose(gw, ref, TOL, "weight");
    for (const t of [tw, tg, tv]) t.release();
  },
});
