import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import { LarsSegments, larsStep, larsStepFlat, sgdStep } from "../kernels/optimizer.ts";

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

Deno.test({
  name: "optimizer: flat LARS updates every tensor of a flat buffer in one dispatch " +
    "(sizes 1, 3, 1000, 70001, excluded and not; gaps untouched)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(11);
    const tensors = [
      { size: 1000, excluded: false },
      { size: 1, excluded: true },
      { size: 3, excluded: false },
      { size: 70_001, excluded: false },
      { size: 3, excluded: true },
      { size: 1, excluded: false },
      { size: 1000, excluded: true },
    ];
    // Offsets with gaps of odd sizes (the kernel needs no alignment); gaps hold a sentinel.
    const segments = [];
    let length = 5;
    for (const t of tensors) {
      segments.push({ offset: length, size: t.size, excluded: t.excluded });
      length += t.size + 7;
    }
    const SENTINEL = 12345;
    const w = new Float32Array(length).fill(SENTINEL);
    const g = new Float32Array(length).fill(SENTINEL);
    const v = new Float32Array(length).fill(SENTINEL);
    for (const { offset, size } of segments) {
      w.set(rng.array(size), offset);
      g.set(rng.array(size, -0.01, 0.01), offset);
      v.set(rng.array(size, -0.001, 0.001), offset);
    }
    const hyper = { lr: 0.3, momentum: 0.9, weightDecay: 1e-6, eta: 0.001 };
    const tw = gpu.upload(w, [length]);
    const tg = gpu.upload(g, [length]);
    const tv = gpu.upload(v, [length]);
    const norms = gpu.zeros([2 * segments.length]);
    const table = new LarsSegments(gpu, segments, length);
    const before = gpu.dispatchCount;
    larsStepFlat(gpu, tw, tg, tv, norms, table, hyper);
    assert.equal(gpu.dispatchCount - before, 1, "one dispatch");
    const [gw, gv, gn] = (await gpu.read([tw, tv, norms])) as Float32Array[];
    let previousEnd = 0;
    segments.forEach(({ offset, size, excluded }, i) => {
      const slice = (a: Float32Array) => a.subarray(offset, offset + size);
      const ref = larsReference(slice(w), slice(g), slice(v), { ...hyper, excluded });
      assertClose(slice(gv), ref.v, { atol: 1e-9, rtol: 1e-4 }, `velocity of tensor ${i}`);
      assertClose(slice(gw), ref.w, TOL, `weight of tensor ${i}`);
      // Norms come from per-thread sums and a tree over 256 partials: float32 rounding only.
      assertClose(
        [gn[2 * i], gn[2 * i + 1]],
        [norm(slice(w)), norm(slice(g))],
        { atol: 0, rtol: 1e-5 },
        `norms of tensor ${i}`,
      );
      for (let j = previousEnd; j < offset; j++) {
        assert.equal(gw[j], SENTINEL, `gap element ${j} of the weights`);
        assert.equal(gv[j], SENTINEL, `gap element ${j} of the velocity`);
      }
      previousEnd = offset + size;
    });
    for (const t of [tw, tg, tv, norms, table.table]) t.release();
  },
});

Deno.test({
  name: "optimizer: flat LARS is deterministic and matches the per-tensor kernel within float32",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(12);
    const sizes = [70_001, 9, 4096];
    const length = sizes.reduce((a, b) => a + b, 0);
    const w = rng.array(length);
    const g = rng.array(length, -0.01, 0.01);
    const segments = sizes.map((size, i) => ({
      offset: sizes.slice(0, i).reduce((a, b) => a + b, 0),
      size,
      excluded: i === 1,
    }));
    const table = new LarsSegments(gpu, segments, length);
    const hyper = { lr: 0.3, momentum: 0.9, weightDecay: 1e-6, eta: 0.001 };
    const runFlat = async () => {
      const [tw, tg, tv, norms] = [
        gpu.upload(w, [length]),
        gpu.upload(g, [length]),
        gpu.zeros([length]),
        gpu.zeros([6]),
      ];
      larsStepFlat(gpu, tw, tg, tv, norms, table, hyper);
      larsStepFlat(gpu, tw, tg, tv, norms, table, hyper);
      const [out] = await gpu.read([tw]);
      for (const t of [tw, tg, tv, norms]) t.release();
      return out;
    };
    const first = await runFlat();
    const second = await runFlat();
    assert.deepEqual(Array.from(second), Array.from(first), "same inputs, same bits");
    const perTensor = await Promise.all(segments.map(async ({ offset, size, excluded }) => {
      const [tw, tg, tv, norms] = [
        gpu.upload(w.subarray(offset, offset + size), [size]),
        gpu.upload(g.subarray(offset, offset + size), [size]),
        gpu.zeros([size]),
        gpu.zeros([2]),
      ];
      larsStep(gpu, tw, tg, tv, norms, 0, { ...hyper, excluded });
      larsStep(gpu, tw, tg, tv, norms, 0, { ...hyper, excluded });
      const [out] = await gpu.read([tw]);
      for (const t of [tw, tg, tv, norms]) t.release();
      return out;
    }));
    segments.forEach(({ offset, size }, i) => {
      assertClose(first.subarray(offset, offset + size), perTensor[i], TOL, `tensor ${i}`);
    });
    table.table.release();
  },
});

Deno.test({
  name:
    "optimizer: flat LARS groups sharing one norms tensor (firstNorm): the same update as one " +
    "table, norms at each group's offset",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(13);
    const sizes = [300, 7, 1000];
    const w = sizes.map((n) => rng.array(n));
    const g = sizes.map((n) => rng.array(n, -0.01, 0.01));
    const hyper = { lr: 0.3, momentum: 0.9, weightDecay: 1e-6, eta: 0.001 };
    const upload = (a: Float32Array[]) => {
      const flat = new Float32Array(a.reduce((n, x) => n + x.length, 0));
      let o = 0;
      for (const x of a) (flat.set(x, o), o += x.length);
      return gpu.upload(flat, [flat.length]);
    };
    const segmentsOf = (group: number[], excludedFrom: number) =>
      group.map((i, k) => ({
        offset: group.slice(0, k).reduce((n, j) => n + sizes[j], 0),
        size: sizes[i],
        excluded: i === excludedFrom,
      }));
    // One table over the three tensors.
    const whole = new LarsSegments(gpu, segmentsOf([0, 1, 2], 1), 1307);
    const [ow, og, ov, on] = [upload(w), upload(g), gpu.zeros([1307]), gpu.zeros([6])];
    larsStepFlat(gpu, ow, og, ov, on, whole, hyper);
    // Two groups: tensor 0, then tensors 1 and 2 (norms from pair 1 on).
    const first = new LarsSegments(gpu, segmentsOf([0], 1), 300, 0);
    const second = new LarsSegments(gpu, segmentsOf([1, 2], 1), 1007, 1);
    const norms = gpu.upload([9, 9, 9, 9, 9, 9, 9, 9], [8]);
    const groups = [[0], [1, 2]].map((ids, k) => ({
      w: upload(ids.map((i) => w[i])),
      g: upload(ids.map((i) => g[i])),
      v: gpu.zeros([k === 0 ? 300 : 1007]),
      table: k === 0 ? first : second,
    }));
    for (const { w, g, v, table } of groups) larsStepFlat(gpu, w, g, v, norms, table, hyper);
    const [wholeW, wholeNorms, gw0, gw1, gotNorms] = (await gpu.read([
      ow,
      on,
      groups[0].w,
      groups[1].w,
      norms,
    ])) as Float32Array[];
    assert.deepEqual(Array.from(gw0), Array.from(wholeW.subarray(0, 300)), "group 0 weights");
    assert.deepEqual(Array.from(gw1), Array.from(wholeW.subarray(300)), "group 1 weights");
    assert.deepEqual(Array.from(gotNorms.subarray(0, 6)), Array.from(wholeNorms), "norms");
    assert.deepEqual(Array.from(gotNorms.subarray(6)), [9, 9], "norms past the last group");
    assert.throws(
      () => larsStepFlat(gpu, groups[1].w, groups[1].g, groups[1].v, gpu.zeros([4]), second, hyper),
      /needs 2 per tensor \(6\)/,
    );
    assert.throws(() => new LarsSegments(gpu, segmentsOf([0], 1), 300, -1), /firstNorm -1/);
  },
});

Deno.test({
  name: "optimizer: flat LARS rejects tables that do not fit the buffers",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    assert.throws(
      () => new LarsSegments(gpu, [{ offset: 0, size: 10, excluded: false }], 8),
      /ends past the flat buffers' 8 elements/,
    );
    assert.throws(
      () =>
        new LarsSegments(gpu, [
          { offset: 0, size: 10, excluded: false },
          { offset: 9, size: 2, excluded: true },
        ], 20),
      /tensor 1 overlaps tensor 0/,
    );
    assert.throws(() => new LarsSegments(gpu, [], 8), /no tensors/);
    const table = new LarsSegments(gpu, [{ offset: 0, size: 4, excluded: false }], 8);
    const [w, g, v, norms] = [gpu.zeros([6]), gpu.zeros([6]), gpu.zeros([6]), gpu.zeros([2])];
    const hyper = { lr: 0.1, momentum: 0.9, weightDecay: 0, eta: 0.001 };
    assert.throws(
      () => larsStepFlat(gpu, w, g, v, norms, table, hyper),
      /hold 6 elements but the segment table was made for 8/,
    );
    for (const t of [w, g, v, norms, table.table]) t.release();
  },
});
