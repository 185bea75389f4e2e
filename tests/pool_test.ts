import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import {
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPoolBackward,
  maxPoolForward,
  maxPoolOutputSize,
  type MaxPoolWindow,
  type PoolShape,
} from "../kernels/pool.ts";

// Max pool copies values and sums at most a few gradients; average pool sums H*W values.
const TOL = { atol: 1e-6, rtol: 1e-5 };

/** Max pool in float64 with PyTorch's first-maximum tie rule; backward scatters dy. */
function referenceMaxPool(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  s: PoolShape,
  window: Required<MaxPoolWindow>,
) {
  const { height: oh, width: ow } = maxPoolOutputSize(s, window);
  const { kernelSize: k, stride, padding } = window;
  const y = new Float64Array(s.batch * oh * ow * s.channels);
  const argmax = new Uint32Array(y.length);
  const dx = new Float64Array(s.batch * s.height * s.width * s.channels);
  for (let n = 0; n < s.batch; n++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        for (let c = 0; c < s.channels; c++) {
          let best = -Infinity;
          let bestIndex = -1;
          for (let a = 0; a < k; a++) {
            for (let b = 0; b < k; b++) {
              const h = i * stride - padding + a;
              const w = j * stride - padding + b;
              if (h < 0 || w < 0 || h >= s.height || w >= s.width) continue;
              const v = x[((n * s.height + h) * s.width + w) * s.channels + c];
              if (bestIndex < 0 || v > best) {
                best = v;
                bestIndex = h * s.width + w;
              }
            }
          }
          const o = ((n * oh + i) * ow + j) * s.channels + c;
          y[o] = best;
          argmax[o] = bestIndex;
          dx[(n * s.height * s.width + bestIndex) * s.channels + c] += dy[o];
        }
      }
    }
  }
  return { y, argmax, dx };
}

interface Case {
  shape: PoolShape;
  window?: MaxPoolWindow;
  /** Draw values from a few integers so that ties are everywhere. */
  ties?: boolean;
}

const cases: Case[] = [
  { shape: { batch: 2, height: 7, width: 7, channels: 3 } },
  { shape: { batch: 1, height: 5, width: 5, channels: 5 } },
  { shape: { batch: 3, height: 1, width: 1, channels: 2 } },
  { shape: { batch: 1, height: 8, width: 6, channels: 67 } },
  { shape: { batch: 2, height: 28, width: 28, channels: 16 } },
  { shape: { batch: 2, height: 7, width: 9, channels: 4 }, ties: true },
  { shape: { batch: 1, height: 6, width: 6, channels: 3 }, window: { kernelSize: 2, padding: 0 } },
  { shape: { batch: 2, height: 9, width: 5, channels: 3 }, window: { stride: 1 }, ties: true },
];

for (const { shape, window = {}, ties = false } of cases) {
  const w = {
    kernelSize: window.kernelSize ?? 3,
    stride: window.stride ?? 2,
    padding: window.padding ?? 1,
  };
  const out = maxPoolOutputSize(shape, w);
  Deno.test({
    name: `pool: max ${w.kernelSize}x${w.kernelSize} s${w.stride} p${w.padding} forward/backward` +
      ` N=${shape.batch} ${shape.height}x${shape.width}x${shape.channels} -> ` +
      `${out.height}x${out.width}${ties ? " (many ties)" : ""} (tol ${TOL.atol}/${TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(shape.batch * 1000 + shape.height * 100 + shape.width + shape.channels);
      const inSize = shape.batch * shape.height * shape.width * shape.channels;
      const outSize = shape.batch * out.height * out.width * shape.channels;
      // All-negative values check that padding never counts as a zero.
      const x = ties
        ? Float32Array.from({ length: inSize }, () => -1 - Math.floor(rng.next() * 3))
        : rng.normals(inSize);
      const dy = rng.normals(outSize);
      const tx = gpu.upload(x, [shape.batch, shape.height, shape.width, shape.channels]);
      const tdy = gpu.upload(dy, [shape.batch, out.height, out.width, shape.channels]);
      const ty = gpu.empty(tdy.shape);
      const targ = gpu.empty(tdy.shape, "u32");
      const tdx = gpu.empty(tx.shape);
      maxPoolForward(gpu, tx, ty, targ, shape, window);
      maxPoolBackward(gpu, tdy, targ, tdx, shape, window);
      const [y, argmax, dx] = await gpu.read([ty, targ, tdx]);
      const ref = referenceMaxPool(x, dy, shape, w);
      assertClose(y, ref.y, TOL, "max pool y");
      assert.deepEqual(argmax, ref.argmax, "argmax (first index wins ties)");
      assertClose(dx, ref.dx, TOL, "max pool dx");
      for (const t of [tx, tdy, ty, targ, tdx]) t.release();
    },
  });
}

Deno.test({
  name: "pool: max pool ties go to the first index in (kh, kw) order, a constant 3x3 input",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const shape = { batch: 1, height: 3, width: 3, channels: 1 };
    const x = gpu.upload(new Float32Array(9).fill(2), [1, 3, 3, 1]);
    const y = gpu.empty([1, 2, 2, 1]);
    const argmax = gpu.empty([1, 2, 2, 1], "u32");
    const dy = gpu.upload([1, 10, 100, 1000], [1, 2, 2, 1]);
    const dx = gpu.empty([1, 3, 3, 1]);
    maxPoolForward(gpu, x, y, argmax, shape);
    maxPoolBackward(gpu, dy, argmax, dx, shape);
    const [gy, garg, gdx] = await gpu.read([y, argmax, dx]);
    assert.deepEqual([...gy], [2, 2, 2, 2]);
    // Windows start at (-1,-1), (-1,1), (1,-1), (1,1): first in-bounds pixels 0, 1, 3, 4.
    assert.deepEqual([...garg], [0, 1, 3, 4]);
    assert.deepEqual([...gdx], [1, 10, 0, 100, 1000, 0, 0, 0, 0]);
    for (const t of [x, y, argmax, dy, dx]) t.release();
  },
});

for (
  const shape of [
    { batch: 2, height: 7, width: 7, channels: 3 },
    { batch: 1, height: 1, width: 1, channels: 5 },
    { batch: 3, height: 5, width: 4, channels: 130 },
  ]
) {
  Deno.test({
    name: `pool: global average forward/backward N=${shape.batch} ` +
      `${shape.height}x${shape.width}x${shape.channels} (tol ${TOL.atol}/${TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(shape.channels * 13 + shape.height);
      const pixels = shape.height * shape.width;
      const x = rng.normals(shape.batch * pixels * shape.channels);
      const dy = rng.normals(shape.batch * shape.channels);
      const tx = gpu.upload(x, [shape.batch, shape.height, shape.width, shape.channels]);
      const tdy = gpu.upload(dy, [shape.batch, shape.channels]);
      const ty = gpu.empty([shape.batch, shape.channels]);
      const tdx = gpu.empty(tx.shape);
      globalAvgPoolForward(gpu, tx, ty, shape);
      globalAvgPoolBackward(gpu, tdy, tdx, shape);
      const [y, dx] = await gpu.read([ty, tdx]);
      const refY = new Float64Array(shape.batch * shape.channels);
      for (let i = 0; i < x.length; i++) {
        const c = i % shape.channels;
        const n = Math.floor(i / (pixels * shape.channels));
        refY[n * shape.channels + c] += x[i] / pixels;
      }
      const refDx = Float64Array.from(x, (_, i) => {
        const n = Math.floor(i / (pixels * shape.channels));
        return dy[n * shape.channels + (i % shape.channels)] / pixels;
      });
      assertClose(y, refY, TOL, "average pool y");
      assertClose(dx, refDx, TOL, "average pool dx");
      for (const t of [tx, tdy, ty, tdx]) t.release();
    },
  });
}

Deno.test({
  name: "pool: wrong sizes, dtypes and windows throw clear errors",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const shape = { batch: 1, height: 5, width: 5, channels: 2 };
    const x = gpu.zeros([1, 5, 5, 2]);
    const y = gpu.zeros([1, 3, 3, 2]);
    const argF32 = gpu.zeros([1, 3, 3, 2]);
    const arg = gpu.zeros([1, 3, 3, 2], "u32");
    assert.throws(() => maxPoolForward(gpu, x, y, argF32, shape), /argmax must be u32/);
    assert.throws(() => maxPoolForward(gpu, x, x, arg, shape), /y has shape \[1,5,5,2\]/);
    assert.throws(
      () => maxPoolForward(gpu, x, y, arg, shape, { kernelSize: 3, padding: 2 }),
      /padding/,
    );
    assert.throws(() => globalAvgPoolForward(gpu, x, y, shape), /y has shape/);
    for (const t of [x, y, argF32, arg]) t.release();
  },
});
