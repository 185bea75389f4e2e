import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import {
  add,
  axpby,
  axpy,
  copy,
  fill,
  reluBackward,
  reluForward,
  scale,
} from "../kernels/elementwise.ts";

// Elementwise ops are exact in f32 except rounding of one multiply-add.
const TOL = { atol: 1e-6, rtol: 1e-6 };

for (const n of [1, 7, 1024, 1025, 300_001]) {
  Deno.test({
    name: `elementwise: fill/copy/add/scale/axpy/axpby/relu, n=${n}`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(n);
      const a = rng.array(n);
      const b = rng.array(n);
      const ta = gpu.upload(a, [n]);
      const tb = gpu.upload(b, [n]);
      const outs = Array.from({ length: 8 }, () => gpu.empty([n]));
      fill(gpu, outs[0], 2.5);
      copy(gpu, ta, outs[1]);
      add(gpu, ta, tb, outs[2]);
      scale(gpu, ta, -3, outs[3]);
      copy(gpu, tb, outs[4]);
      axpy(gpu, 0.5, ta, outs[4]);
      axpby(gpu, 0.9, ta, 0.1, tb, outs[5]);
      reluForward(gpu, ta, outs[6]);
      reluBackward(gpu, ta, tb, outs[7]);
      const got = await gpu.read(outs);
      const ref = (f: (i: number) => number) => Float64Array.from({ length: n }, (_, i) => f(i));
      assertClose(got[0], ref(() => 2.5), TOL, "fill");
      assertClose(got[1], ref((i) => a[i]), TOL, "copy");
      assertClose(got[2], ref((i) => a[i] + b[i]), TOL, "add");
      assertClose(got[3], ref((i) => -3 * a[i]), TOL, "scale");
      assertClose(got[4], ref((i) => b[i] + 0.5 * a[i]), TOL, "axpy");
      assertClose(got[5], ref((i) => 0.9 * a[i] + 0.1 * b[i]), TOL, "axpby");
      assertClose(got[6], ref((i) => Math.max(a[i], 0)), TOL, "relu forward");
      assertClose(got[7], ref((i) => a[i] > 0 ? b[i] : 0), TOL, "relu backward");
      for (const t of [ta, tb, ...outs]) t.release();
    },
  });
}
