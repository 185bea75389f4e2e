import assert from "node:assert/strict";
import {
  assertClose,
  FORCED_PLANS,
  gpuTest,
  Rng,
  testGpu,
  type Tolerance,
  withKernelPlan,
} from "./util.ts";
import {
  conv2dBiasGrad,
  conv2dForward,
  conv2dInputGrad,
  conv2dOutputSize,
  type Conv2dShape,
  conv2dWeightGrad,
} from "../kernels/conv2d.ts";
import type { OperandSource, TileStaging } from "../runtime/gpu.ts";

// f32 GPU sums of up to ~1000 products of values in [-1, 1] against float64 references: rounding
// grows like sqrt(K) * 6e-8 * |partial sums|, far below this; a wrong tap or index is O(0.1).
const TOL: Tolerance = { atol: 2e-4, rtol: 2e-4 };
// Finite differences of the float64 forward (central, eps 1e-3) are exact to ~1e-9 for this
// bilinear loss; the tolerance covers the f32 GPU gradient.
const FD_TOL: Tolerance = { atol: 1e-4, rtol: 1e-4 };

// ---- float64 CPU references ----

function forwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | null,
  s: Conv2dShape,
): Float64Array {
  const { outHeight: oh, outWidth: ow } = conv2dOutputSize(s);
  const { batch, inHeight: h, inWidth: wd, inChannels: ci, outChannels: co, kernelSize: k } = s;
  const y = new Float64Array(batch * oh * ow * co);
  for (let n = 0; n < batch; n++) {
    for (let py = 0; py < oh; py++) {
      for (let px = 0; px < ow; px++) {
        const yBase = ((n * oh + py) * ow + px) * co;
        for (let o = 0; o < co; o++) y[yBase + o] = b ? b[o] : 0;
        for (let kh = 0; kh < k; kh++) {
          const iy = py * s.stride + kh - s.padding;
          if (iy < 0 || iy >= h) continue;
          for (let kw = 0; kw < k; kw++) {
            const ix = px * s.stride + kw - s.padding;
            if (ix < 0 || ix >= wd) continue;
            for (let c = 0; c < ci; c++) {
              const xv = x[((n * h + iy) * wd + ix) * ci + c];
              const wBase = ((kh * k + kw) * ci + c) * co;
              for (let o = 0; o < co; o++) y[yBase + o] += xv * w[wBase + o];
            }
          }
        }
      }
    }
  }
  return y;
}

/** dx and dw of loss = sum(y * dy), by scattering every multiply of the forward. */
function backwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  s: Conv2dShape,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const { outHeight: oh, outWidth: ow } = conv2dOutputSize(s);
  const { batch, inHeight: h, inWidth: wd, inChannels: ci, outChannels: co, kernelSize: k } = s;
  const dx = new Float64Array(batch * h * wd * ci);
  const dw = new Float64Array(k * k * ci * co);
  const db = new Float64Array(co);
  for (let n = 0; n < batch; n++) {
    for (let py = 0; py < oh; py++) {
      for (let px = 0; px < ow; px++) {
        const yBase = ((n * oh + py) * ow + px) * co;
        for (let o = 0; o < co; o++) db[o] += dy[yBase + o];
        for (let kh = 0; kh < k; kh++) {
          const iy = py * s.stride + kh - s.padding;
          if (iy < 0 || iy >= h) continue;
          for (let kw = 0; kw < k; kw++) {
            const ix = px * s.stride + kw - s.padding;
            if (ix < 0 || ix >= wd) continue;
            for (let c = 0; c < ci; c++) {
              const xi = ((n * h + iy) * wd + ix) * ci + c;
              const wBase = ((kh * k + kw) * ci + c) * co;
              for (let o = 0; o < co; o++) {
                dx[xi] += dy[yBase + o] * w[wBase + o];
                dw[wBase + o] += dy[yBase + o] * x[xi];
              }
            }
          }
        }
      }
    }
  }
  return { dx, dw, db };
}

// ---- helpers ----

function describe(s: Conv2dShape): string {
  return `N${s.batch} ${s.inHeight}x${s.inWidth}x${s.inChannels} -> ${s.outChannels}, ` +
    `k${s.kernelSize} s${s.stride} p${s.padding}`;
}

function shapeOf(s: Conv2dShape): { x: number[]; w: number[]; y: number[] } {
  const { outHeight, outWidth } = conv2dOutputSize(s);
  return {
    x: [s.batch, s.inHeight, s.inWidth, s.inChannels],
    w: [s.kernelSize, s.kernelSize, s.inChannels, s.outChannels],
    y: [s.batch, outHeight, outWidth, s.outChannels],
  };
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Forward, dx, dw and db on the GPU against the float64 references. dx always starts as garbage
 * (it must be overwritten); dw and db start as garbage, or with `accumulate` as known values the
 * gradient must be added to.
 */
async function checkAll(
  s: Conv2dShape,
  withBias: boolean,
  accumulate: boolean,
  seed: number,
): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(seed);
  const shapes = shapeOf(s);
  const x = rng.array(size(shapes.x));
  const w = rng.array(size(shapes.w));
  const b = withBias ? rng.array(s.outChannels) : null;
  const dy = rng.array(size(shapes.y));
  const tx = gpu.upload(x, shapes.x);
  const tw = gpu.upload(w, shapes.w);
  const tb = b ? gpu.upload(b, [s.outChannels]) : null;
  const tdy = gpu.upload(dy, shapes.y);
  const ty = gpu.empty(shapes.y);
  const tdx = gpu.upload(rng.array(size(shapes.x)), shapes.x); // garbage: must be overwritten
  const dw0 = rng.array(size(shapes.w));
  const db0 = rng.array(s.outChannels);
  const tdw = gpu.upload(dw0, shapes.w);
  const tdb = gpu.upload(db0, [s.outChannels]);
  conv2dForward(gpu, tx, tw, tb, ty, s);
  conv2dInputGrad(gpu, tdy, tw, tdx, s);
  conv2dWeightGrad(gpu, tx, tdy, tdw, s, { accumulate });
  conv2dBiasGrad(gpu, tdy, tdb, s, { accumulate });
  const [y, dx, dw, db] = await gpu.read([ty, tdx, tdw, tdb]);
  const ref = backwardRef(x, w, dy, s);
  if (accumulate) {
    ref.dw.forEach((v, i) => ref.dw[i] = v + dw0[i]);
    ref.db.forEach((v, i) => ref.db[i] = v + db0[i]);
  }
  const label = `${describe(s)}${accumulate ? ", accumulate" : ""}`;
  assertClose(y, forwardRef(x, w, b, s), TOL, `forward ${label}`);
  assertClose(dx, ref.dx, TOL, `input grad ${label}`);
  assertClose(dw, ref.dw, TOL, `weight grad ${label}`);
  assertClose(db, ref.db, TOL, `bias grad ${label}`);
  for (const t of [tx, tw, tb, tdy, ty, tdx, tdw, tdb]) t?.release();
}

const cases: { name: string; shape: Conv2dShape; bias: boolean; accumulate: boolean }[] = [
  {
    name: "batch 1, 3x3 stride 1 pad 1, accumulate (one K slice)",
    shape: {
      batch: 1,
      inHeight: 9,
      inWidth: 9,
      inChannels: 8,
      outChannels: 16,
      kernelSize: 3,
      stride: 1,
      padding: 1,
    },
    bias: false,
    accumulate: true,
  },
  {
    name: "3x3 stride 1 pad 1, several tiles, bias, accumulate over split-K slices",
    shape: {
      batch: 4,
      inHeight: 16,
      inWidth: 16,
      inChannels: 32,
      outChannels: 64,
      kernelSize: 3,
      stride: 1,
      padding: 1,
    },
    bias: true,
    accumulate: true,
  },
  {
    name: "3x3 stride 2 pad 1, odd input, sizes not multiples of the tile",
    shape: {
      batch: 3,
      inHeight: 11,
      inWidth: 13,
      inChannels: 12,
      outChannels: 20,
      kernelSize: 3,
      stride: 2,
      padding: 1,
    },
    bias: false,
    accumulate: false,
  },
  {
    name: "1x1 stride 2 downsample (phases without taps give zero dx)",
    shape: {
      batch: 2,
      inHeight: 9,
      inWidth: 9,
      inChannels: 16,
      outChannels: 36,
      kernelSize: 1,
      stride: 2,
      padding: 0,
    },
    bias: false,
    accumulate: false,
  },
  {
    name: "1x1 stride 1 pointwise (bottleneck expansion), rows not a multiple of the tile",
    shape: {
      batch: 3,
      inHeight: 7,
      inWidth: 5,
      inChannels: 12,
      outChannels: 40,
      kernelSize: 1,
      stride: 1,
      padding: 0,
    },
    bias: true,
    accumulate: true,
  },
  {
    name: "1x1 stride 2 with Cin = 6 (pointwise shape on the scalar path), even input",
    shape: {
      batch: 2,
      inHeight: 8,
      inWidth: 6,
      inChannels: 6,
      outChannels: 8,
      kernelSize: 1,
      stride: 2,
      padding: 0,
    },
    bias: false,
    accumulate: false,
  },
  {
    name: "1x1 stride 1, 132 -> 140 channels (16 invocations across N; N, M off the tile)",
    shape: {
      batch: 1,
      inHeight: 5,
      inWidth: 3,
      inChannels: 132,
      outChannels: 140,
      kernelSize: 1,
      stride: 1,
      padding: 0,
    },
    bias: true,
    accumulate: false,
  },
  {
    name: "7x7 stride 2 pad 3 stem, Cin = 3, bias",
    shape: {
      batch: 2,
      inHeight: 23,
      inWidth: 20,
      inChannels: 3,
      outChannels: 16,
      kernelSize: 7,
      stride: 2,
      padding: 3,
    },
    bias: true,
    accumulate: false,
  },
  {
    name: "7x7 stride 2 pad 3 stem, Cin = 1, bias",
    shape: {
      batch: 2,
      inHeight: 28,
      inWidth: 28,
      inChannels: 1,
      outChannels: 8,
      kernelSize: 7,
      stride: 2,
      padding: 3,
    },
    bias: true,
    accumulate: false,
  },
  {
    name: "3x3 small-image stem, Cin = 1 (weight gradient: M = 9, a K slice per invocation row)",
    shape: {
      batch: 4,
      inHeight: 28,
      inWidth: 28,
      inChannels: 1,
      outChannels: 8,
      kernelSize: 3,
      stride: 1,
      padding: 1,
    },
    bias: false,
    accumulate: true,
  },
  {
    name: "1x1 stride 2, Cin = 4 -> 24 (weight gradient: M = 4, slices per row of 2 invocations)",
    shape: {
      batch: 12,
      inHeight: 19,
      inWidth: 20,
      inChannels: 4,
      outChannels: 24,
      kernelSize: 1,
      stride: 2,
      padding: 0,
    },
    bias: false,
    accumulate: false,
  },
  {
    name: "3x3 12 -> 12 (weight gradient on CPU plans: M = 108 in 7 row blocks of lane slices)",
    shape: {
      batch: 12,
      inHeight: 14,
      inWidth: 14,
      inChannels: 12,
      outChannels: 12,
      kernelSize: 3,
      stride: 1,
      padding: 1,
    },
    bias: false,
    accumulate: true,
  },
  {
    name: "channel counts not multiples of 4 everywhere (scalar paths), no padding",
    shape: {
      batch: 2,
      inHeight: 8,
      inWidth: 7,
      inChannels: 5,
      outChannels: 6,
      kernelSize: 3,
      stride: 1,
      padding: 0,
    },
    bias: true,
    accumulate: false,
  },
];

/** The case whose name starts with `start`. */
function caseNamed(start: string): (typeof cases)[number] {
  const found = cases.find((c) => c.name.startsWith(start));
  if (!found) throw new Error(`no conv2d test case named "${start}..."`);
  return found;
}
const SPLIT_K = caseNamed("3x3 stride 1 pad 1, several tiles");
const STRIDE2_ODD = caseNamed("3x3 stride 2 pad 1, odd input");
const POINTWISE = caseNamed("1x1 stride 1 pointwise");
const STEM_RGB = caseNamed("7x7 stride 2 pad 3 stem, Cin = 3");
const SCALAR = caseNamed("channel counts not multiples of 4");

/**
 * Run `body` with the kernels feeding their tiles the given way and reading their operands from
 * the given source, then restore the defaults.
 */
async function withStaging(
  mode: TileStaging,
  operands: OperandSource,
  body: () => Promise<void>,
): Promise<void> {
  const gpu = await testGpu();
  const saved = gpu.settings;
  gpu.settings = { ...saved, conv2dStaging: mode, conv2dOperands: operands };
  try {
    await body();
  } finally {
    gpu.settings = saved;
  }
}

// Every case under both kernel plans, forced (on any adapter): the CPU plans (direct loads from
// textures, tiles for a few CPU threads) and the GPU plans (tiles staged in workgroup memory from
// buffers, tiles and K slices for 128 parallel workgroups).
for (const c of cases) {
  for (const plan of FORCED_PLANS) {
    const seed = c.shape.inHeight * (plan === "cpu" ? 31 : 17) + c.shape.outChannels;
    Deno.test({
      name: `conv2d (${plan} plans): ${c.name} (${describe(c.shape)})`,
      ...gpuTest,
      fn: async () =>
        await withKernelPlan(
          await testGpu(),
          plan,
          () => checkAll(c.shape, c.bias, c.accumulate, seed),
        ),
    });
  }
}

// Direct loads from buffers (CPU plans whose operands are too big for a texture) get the cases
// that exercise their edges: stride phases with odd sizes, the pointwise (1x1) loader, scalar
// channel paths.
for (const c of [STRIDE2_ODD, POINTWISE, SCALAR]) {
  Deno.test({
    name: `conv2d: direct loads, buffer operands: ${c.name} (${describe(c.shape)})`,
    ...gpuTest,
    fn: () =>
      withStaging(
        "direct",
        "buffer",
        () => checkAll(c.shape, c.bias, c.accumulate, c.shape.inHeight * 17 + c.shape.outChannels),
      ),
  });
}

for (const plan of FORCED_PLANS) {
  Deno.test({
    name: `conv2d (${plan} plans): weight gradient is bitwise deterministic`,
    ...gpuTest,
    fn: async () =>
      await withKernelPlan(await testGpu(), plan, async () => {
        const gpu = await testGpu();
        // The split-K shape of the second case (its pipelines are compiled already).
        const s = SPLIT_K.shape;
        const rng = new Rng(7);
        const shapes = shapeOf(s);
        const tx = gpu.upload(rng.array(size(shapes.x)), shapes.x);
        const tdy = gpu.upload(rng.array(size(shapes.y)), shapes.y);
        const first = gpu.zeros(shapes.w);
        const second = gpu.zeros(shapes.w);
        conv2dWeightGrad(gpu, tx, tdy, first, s, { accumulate: true });
        conv2dWeightGrad(gpu, tx, tdy, second, s, { accumulate: true });
        const [a, b] = await gpu.read([first, second]);
        assert.deepEqual(
          new Uint32Array(a.buffer, a.byteOffset, a.length),
          new Uint32Array(b.buffer, b.byteOffset, b.length),
        );
        for (const t of [tx, tdy, first, second]) t.release();
      }),
  });
}

/** Central finite differences (eps 1e-3) of loss(v) with respect to v[i], for each i given. */
function finiteDifferences(
  values: Float32Array,
  loss: (v: Float64Array) => number,
  indices: number[],
): Map<number, number> {
  const eps = 1e-3;
  const v = Float64Array.from(values);
  const grad = new Map<number, number>();
  for (const i of indices) {
    const keep = v[i];
    v[i] = keep + eps;
    const up = loss(v);
    v[i] = keep - eps;
    const down = loss(v);
    v[i] = keep;
    grad.set(i, (up - down) / (2 * eps));
  }
  return grad;
}

/** `count` distinct indices below n (all of them when n <= count). */
function sampleIndices(n: number, count: number, rng: Rng): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(rng.next() * n));
  return [...picked];
}

// Shapes of the cases above (their pipelines are compiled already): stride 2 with an odd input,
// the 7x7 stem and the pointwise loaders.
for (const c of [STRIDE2_ODD, STEM_RGB, POINTWISE]) {
  const s = c.shape;
  Deno.test({
    name: `conv2d: finite-difference check of dx and dw, loss = sum(y * r) (${describe(s)})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(s.kernelSize * 100 + s.inChannels);
      const shapes = shapeOf(s);
      const x = rng.array(size(shapes.x));
      const w = rng.array(size(shapes.w));
      const r = rng.array(size(shapes.y));
      const loss = (xv: ArrayLike<number>, wv: ArrayLike<number>) =>
        forwardRef(xv, wv, null, s).reduce((acc, v, i) => acc + v * r[i], 0);
      const tx = gpu.upload(x, shapes.x);
      const tw = gpu.upload(w, shapes.w);
      const tr = gpu.upload(r, shapes.y);
      const tdx = gpu.empty(shapes.x);
      const tdw = gpu.empty(shapes.w);
      // dL/dy = r, so the gradients are the backward kernels applied to r.
      conv2dInputGrad(gpu, tr, tw, tdx, s);
      conv2dWeightGrad(gpu, tx, tr, tdw, s);
      const [dx, dw] = await gpu.read([tdx, tdw]);
      const fdX = finiteDifferences(x, (v) => loss(v, w), sampleIndices(x.length, 120, rng));
      const fdW = finiteDifferences(w, (v) => loss(x, v), sampleIndices(w.length, 120, rng));
      const pick = (got: ArrayLike<number>, fd: Map<number, number>) =>
        [...fd.keys()].map((i) => got[i]);
      assertClose(
        pick(dx, fdX),
        [...fdX.values()],
        FD_TOL,
        `dx vs finite differences ${describe(s)}`,
      );
      assertClose(
        pick(dw, fdW),
        [...fdW.values()],
        FD_TOL,
        `dw vs finite differences ${describe(s)}`,
      );
      for (const t of [tx, tw, tr, tdx, tdw]) t.release();
    },
  });
}

Deno.test({
  name: "conv2d: shape mismatches throw naming the tensor",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const s: Conv2dShape = {
      batch: 1,
      inHeight: 4,
      inWidth: 4,
      inChannels: 2,
      outChannels: 3,
      kernelSize: 3,
      stride: 1,
      padding: 1,
    };
    const x = gpu.zeros([1, 4, 4, 2]);
    const w = gpu.zeros([3, 3, 2, 4]);
    const y = gpu.zeros([1, 4, 4, 3]);
    assert.throws(() => conv2dForward(gpu, x, w, null, y, s), /weight has shape \[3,3,2,4\]/);
    assert.throws(
      () => conv2dForward(gpu, x, w, null, y, { ...s, padding: 0, kernelSize: 5 }),
      /does not fit/,
    );
    for (const t of [x, w, y]) t.release();
  },
});
