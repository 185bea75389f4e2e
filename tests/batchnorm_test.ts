import assert from "node:assert/strict";
import { assertClose, gpuTest, Rng, testGpu } from "./util.ts";
import {
  batchNormBackward,
  batchNormEvalForward,
  batchNormTrainForward,
} from "../kernels/batchnorm.ts";

// Normalised outputs are O(1); f32 rounding in the mean, variance and one fused multiply-add
// stays far below these bounds for the row counts tested here.
const FORWARD_TOL = { atol: 2e-5, rtol: 1e-4 };
// Gradients combine three per-channel sums; dx cancels terms of similar size.
const BACKWARD_TOL = { atol: 5e-5, rtol: 2e-4 };

const EPS = 1e-5;
const MOMENTUM = 0.1;

interface Reference {
  y: Float64Array;
  mean: Float64Array;
  invStd: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
}

/** PyTorch's BatchNorm training forward in float64. */
function referenceTrainForward(
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  runningMean: ArrayLike<number>,
  runningVar: ArrayLike<number>,
  rows: number,
  channels: number,
  relu: boolean,
  eps = EPS,
  momentum = MOMENTUM,
): Reference {
  const mean = new Float64Array(channels);
  const variance = new Float64Array(channels);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++) mean[c] += x[r * channels + c] / rows;
  }
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++) {
      const d = x[r * channels + c] - mean[c];
      variance[c] += d * d / rows;
    }
  }
  const invStd = variance.map((v) => 1 / Math.sqrt(v + eps));
  const y = new Float64Array(rows * channels);
  for (let i = 0; i < rows * channels; i++) {
    const c = i % channels;
    const v = (x[i] - mean[c]) * invStd[c] * gamma[c] + beta[c];
    y[i] = relu ? Math.max(v, 0) : v;
  }
  const newMean = Float64Array.from(
    { length: channels },
    (_, c) => (1 - momentum) * runningMean[c] + momentum * mean[c],
  );
  const newVar = Float64Array.from(
    { length: channels },
    (_, c) => (1 - momentum) * runningVar[c] + momentum * variance[c] * rows / (rows - 1),
  );
  return { y, mean, invStd, runningMean: newMean, runningVar: newVar };
}

/** dx, dgamma, dbeta of the training forward in float64 (dy masked by y > 0 when relu). */
function referenceBackward(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  gamma: ArrayLike<number>,
  forward: Reference,
  rows: number,
  channels: number,
  relu: boolean,
): { dx: Float64Array; dgamma: Float64Array; dbeta: Float64Array } {
  const g = Float64Array.from(dy, (v, i) => (relu && !(forward.y[i] > 0) ? 0 : v));
  const dgamma = new Float64Array(channels);
  const dbeta = new Float64Array(channels);
  const xhat = (i: number) => (x[i] - forward.mean[i % channels]) * forward.invStd[i % channels];
  for (let i = 0; i < rows * channels; i++) {
    dbeta[i % channels] += g[i];
    dgamma[i % channels] += g[i] * xhat(i);
  }
  const dx = new Float64Array(rows * channels);
  for (let i = 0; i < rows * channels; i++) {
    const c = i % channels;
    dx[i] = gamma[c] * forward.invStd[c] * (g[i] - dbeta[c] / rows - xhat(i) * dgamma[c] / rows);
  }
  return { dx, dgamma, dbeta };
}

const trainShapes: [number, number][] = [
  [2, 1],
  [2, 3],
  [5, 7],
  [37, 130], // channels not a multiple of 4 or of the 64-channel tile
  [3001, 5], // tall and skinny: many row blocks, uneven last block
  [64, 300], // short and wide
  [2, 67],
  // C % 4 == 0: the vec4 partial passes (1, 2 and 16 vec4 columns per workgroup).
  [3001, 4],
  [777, 8],
  [50, 64],
  [9, 100],
  // Several elementwise workgroups (4096 floats each), the last one partial: one channel per
  // thread (C / 4 divides 256) and per element (C / 4 = 12 does not).
  [301, 64],
  [130, 48],
];

for (const [rows, channels] of trainShapes) {
  for (const relu of [false, true]) {
    Deno.test({
      name: `batchnorm: train forward + backward vs float64, rows=${rows} C=${channels}` +
        `${relu ? " +relu" : ""} (tol fwd ${FORWARD_TOL.atol}/${FORWARD_TOL.rtol}, ` +
        `bwd ${BACKWARD_TOL.atol}/${BACKWARD_TOL.rtol})`,
      ...gpuTest,
      fn: async () => {
        const gpu = await testGpu();
        const rng = new Rng(rows * 1009 + channels * 7 + (relu ? 1 : 0));
        const x = Float32Array.from(rng.normals(rows * channels), (v, i) => 2 * v + (i % 5) - 1);
        const gamma = rng.array(channels, 0.5, 1.5);
        const beta = rng.array(channels, -0.5, 0.5);
        const runningMean = rng.array(channels, -1, 1);
        const runningVar = rng.array(channels, 0.5, 2);
        const dy = rng.normals(rows * channels);
        const t = {
          x: gpu.upload(x, [rows, channels]),
          gamma: gpu.upload(gamma, [channels]),
          beta: gpu.upload(beta, [channels]),
          runningMean: gpu.upload(runningMean, [channels]),
          runningVar: gpu.upload(runningVar, [channels]),
          dy: gpu.upload(dy, [rows, channels]),
          y: gpu.empty([rows, channels]),
          mean: gpu.empty([channels]),
          invStd: gpu.empty([channels]),
          dx: gpu.empty([rows, channels]),
          dgamma: gpu.empty([channels]),
          dbeta: gpu.empty([channels]),
        };
        const s = { rows, channels };
        batchNormTrainForward(
          gpu,
          t.x,
          t.gamma,
          t.beta,
          t.runningMean,
          t.runningVar,
          t.y,
          t.mean,
          t.invStd,
          s,
          { relu },
        );
        batchNormBackward(
          gpu,
          t.x,
          t.dy,
          t.gamma,
          t.mean,
          t.invStd,
          t.dx,
          t.dgamma,
          t.dbeta,
          s,
          relu ? { reluOutput: t.y } : {},
        );
        const [y, mean, invStd, rMean, rVar, dx, dgamma, dbeta] = await gpu.read([
          t.y,
          t.mean,
          t.invStd,
          t.runningMean,
          t.runningVar,
          t.dx,
          t.dgamma,
          t.dbeta,
        ]);
        const ref = referenceTrainForward(
          x,
          gamma,
          beta,
          runningMean,
          runningVar,
          rows,
          channels,
          relu,
        );
        assertClose(y, ref.y, FORWARD_TOL, "y");
        assertClose(mean, ref.mean, FORWARD_TOL, "saveMean");
        assertClose(invStd, ref.invStd, FORWARD_TOL, "saveInvStd");
        assertClose(rMean, ref.runningMean, FORWARD_TOL, "runningMean");
        assertClose(rVar, ref.runningVar, FORWARD_TOL, "runningVar (unbiased)");
        // The backward is checked against the reference built from the GPU's own forward output,
        // so a ReLU mask decision on a value within rounding of zero cannot differ.
        const refBack = referenceBackward(
          x,
          dy,
          gamma,
          { ...ref, y: Float64Array.from(y) },
          rows,
          channels,
          relu,
        );
        const scale = Math.sqrt(rows); // dgamma and dbeta are sums over rows
        assertClose(dx, refBack.dx, BACKWARD_TOL, "dx");
        assertClose(
          dgamma,
          refBack.dgamma,
          { atol: BACKWARD_TOL.atol * scale, rtol: BACKWARD_TOL.rtol },
          "dgamma",
        );
        assertClose(
          dbeta,
          refBack.dbeta,
          { atol: BACKWARD_TOL.atol * scale, rtol: BACKWARD_TOL.rtol },
          "dbeta",
        );
        for (const v of Object.values(t)) v.release();
      },
    });
  }
}

// Two stacked views: each normalised with its own statistics (saveMean / saveInvStd hold one row
// per view), the running statistics updated with view 1's batch, then view 2's; the backward of
// both views in one call (groups: 2, what the layer runs) reads each view's row of statistics and
// must give bitwise what one call per view (statOffset) gives, against float64 per view too.
// Scalar (C = 6: one dispatch per view) and vec4 (C = 64: every view in one dispatch) kernels.
for (const [rows, channels] of [[40, 6], [301, 64]]) {
  Deno.test({
    name: `batchnorm: 2 stacked views of ${rows}x${channels}, forward + backward vs float64 ` +
      `per view (tol fwd ${FORWARD_TOL.atol}/${FORWARD_TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows + channels);
      const n = rows * channels;
      const x = Float32Array.from(
        rng.normals(2 * n),
        (v, i) => v * (i < n ? 1 : 3) + (i < n ? 0 : 2),
      );
      const gamma = rng.array(channels, 0.5, 1.5);
      const beta = rng.array(channels, -0.5, 0.5);
      const runningMean = rng.array(channels, -1, 1);
      const runningVar = rng.array(channels, 0.5, 2);
      const dy = rng.normals(2 * n);
      const t = {
        x: gpu.upload(x, [2 * rows, channels]),
        gamma: gpu.upload(gamma, [channels]),
        beta: gpu.upload(beta, [channels]),
        runningMean: gpu.upload(runningMean, [channels]),
        runningVar: gpu.upload(runningVar, [channels]),
        dy: gpu.upload(dy, [2 * rows, channels]),
        y: gpu.empty([2 * rows, channels]),
        mean: gpu.empty([2, channels]),
        invStd: gpu.empty([2, channels]),
        dx: gpu.empty([2 * rows, channels]),
        // Not accumulated into: the grouped call overwrites with view 1, then adds view 2.
        dgamma: gpu.upload(new Float32Array(channels).fill(7), [channels]),
        dbeta: gpu.upload(new Float32Array(channels).fill(-7), [channels]),
        perViewDx: gpu.empty([2 * rows, channels]),
        perViewDgamma: gpu.zeros([channels]),
        perViewDbeta: gpu.zeros([channels]),
      };
      const s = { rows: 2 * rows, channels };
      batchNormTrainForward(
        gpu,
        t.x,
        t.gamma,
        t.beta,
        t.runningMean,
        t.runningVar,
        t.y,
        t.mean,
        t.invStd,
        s,
        { relu: true, groups: 2 },
      );
      batchNormBackward(
        gpu,
        t.x,
        t.dy,
        t.gamma,
        t.mean,
        t.invStd,
        t.dx,
        t.dgamma,
        t.dbeta,
        s,
        { reluOutput: t.y, groups: 2 },
      );
      for (let g = 0; g < 2; g++) {
        const part = (v: typeof t.x) => v.rowBlock(g * rows, rows);
        batchNormBackward(
          gpu,
          part(t.x),
          part(t.dy),
          t.gamma,
          t.mean,
          t.invStd,
          part(t.perViewDx),
          t.perViewDgamma,
          t.perViewDbeta,
          { rows, channels },
          { reluOutput: part(t.y), accumulate: true, statOffset: g * channels },
        );
      }
      const [
        y,
        mean,
        invStd,
        rMean,
        rVar,
        dx,
        dgamma,
        dbeta,
        perViewDx,
        perViewDgamma,
        perViewDbeta,
      ] = await gpu.read([
        t.y,
        t.mean,
        t.invStd,
        t.runningMean,
        t.runningVar,
        t.dx,
        t.dgamma,
        t.dbeta,
        t.perViewDx,
        t.perViewDgamma,
        t.perViewDbeta,
      ]);
      assert.deepEqual(dx, perViewDx, "dx: both views in one call vs one call per view");
      assert.deepEqual(dgamma, perViewDgamma, "dgamma: both views in one call vs one per view");
      assert.deepEqual(dbeta, perViewDbeta, "dbeta: both views in one call vs one per view");
      let [rm, rv]: ArrayLike<number>[] = [runningMean, runningVar];
      const dgammaRef = new Float64Array(channels);
      const dbetaRef = new Float64Array(channels);
      for (let g = 0; g < 2; g++) {
        const view = (a: ArrayLike<number>) => Array.from(a).slice(g * n, (g + 1) * n);
        const stats = (a: ArrayLike<number>) =>
          Array.from(a).slice(g * channels, (g + 1) * channels);
        const ref = referenceTrainForward(view(x), gamma, beta, rm, rv, rows, channels, true);
        assertClose(view(y), ref.y, FORWARD_TOL, `y, view ${g + 1}`);
        assertClose(stats(mean), ref.mean, FORWARD_TOL, `saveMean, view ${g + 1}`);
        assertClose(stats(invStd), ref.invStd, FORWARD_TOL, `saveInvStd, view ${g + 1}`);
        [rm, rv] = [ref.runningMean, ref.runningVar];
        const back = referenceBackward(
          view(x),
          view(dy),
          gamma,
          { ...ref, y: Float64Array.from(view(y)) },
          rows,
          channels,
          true,
        );
        assertClose(view(dx), back.dx, BACKWARD_TOL, `dx, view ${g + 1}`);
        back.dgamma.forEach((v, c) => dgammaRef[c] += v);
        back.dbeta.forEach((v, c) => dbetaRef[c] += v);
      }
      assertClose(rMean, rm, FORWARD_TOL, "runningMean after both views");
      assertClose(rVar, rv, FORWARD_TOL, "runningVar after both views");
      const sumTol = { atol: BACKWARD_TOL.atol * Math.sqrt(2 * rows), rtol: BACKWARD_TOL.rtol };
      assertClose(dgamma, dgammaRef, sumTol, "dgamma over both views");
      assertClose(dbeta, dbetaRef, sumTol, "dbeta over both views");
      for (const v of Object.values(t)) v.release();
    },
  });
}

for (const channels of [3, 8]) {
  Deno.test({
    name: "batchnorm: variance stays accurate for a large mean (1000 + N(0, 0.01^2)), " +
      `4096x${channels}`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rows = 4096;
      const rng = new Rng(5);
      const x = Float32Array.from(rng.normals(rows * channels), (v) => 1000 + 0.01 * v);
      const ones = new Float32Array(channels).fill(1);
      const zeros = new Float32Array(channels);
      const tx = gpu.upload(x, [rows, channels]);
      const tGamma = gpu.upload(ones, [channels]);
      const tBeta = gpu.upload(zeros, [channels]);
      const rm = gpu.upload(zeros, [channels]);
      const rv = gpu.upload(ones, [channels]);
      const y = gpu.empty([rows, channels]);
      const mean = gpu.empty([channels]);
      const invStd = gpu.empty([channels]);
      // eps 0 so saveInvStd is exactly 1/std and its relative error is the variance's.
      const s = { rows, channels, eps: 0 };
      batchNormTrainForward(gpu, tx, tGamma, tBeta, rm, rv, y, mean, invStd, s);
      const [gotInvStd] = await gpu.read([invStd]);
      const ref = referenceTrainForward(x, ones, zeros, zeros, ones, rows, channels, false, 0);
      // A naive E[x^2] - E[x]^2 in f32 would lose every digit here (1e6 vs 1e-4).
      assertClose(gotInvStd, ref.invStd, { atol: 0, rtol: 1e-3 }, "1/std with a large mean");
      for (const t of [tx, tGamma, tBeta, rm, rv, y, mean, invStd]) t.release();
    },
  });
}

Deno.test({
  name: "batchnorm: train forward + backward are bit-identical across runs (no atomics)",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 2000;
    const channels = 20;
    const rng = new Rng(77);
    const x = gpu.upload(rng.normals(rows * channels), [rows, channels]);
    const dy = gpu.upload(rng.normals(rows * channels), [rows, channels]);
    const gamma = gpu.upload(rng.array(channels, 0.5, 1.5), [channels]);
    const beta = gpu.upload(rng.array(channels), [channels]);
    const results: Float32Array[][] = [];
    for (let run = 0; run < 2; run++) {
      const rm = gpu.zeros([channels]);
      const rv = gpu.zeros([channels]);
      const y = gpu.empty([rows, channels]);
      const mean = gpu.empty([channels]);
      const invStd = gpu.empty([channels]);
      const dx = gpu.empty([rows, channels]);
      const dgamma = gpu.empty([channels]);
      const dbeta = gpu.empty([channels]);
      const s = { rows, channels };
      batchNormTrainForward(gpu, x, gamma, beta, rm, rv, y, mean, invStd, s);
      batchNormBackward(gpu, x, dy, gamma, mean, invStd, dx, dgamma, dbeta, s);
      const outs = [y, mean, invStd, rm, rv, dx, dgamma, dbeta];
      results.push((await gpu.read(outs)) as Float32Array[]);
      for (const t of outs) t.release();
    }
    results[0].forEach((a, i) => assert.deepEqual(a, results[1][i], `output ${i} differs`));
    for (const t of [x, dy, gamma, beta]) t.release();
  },
});

// [1, 8] and [33, 36]: channel counts divisible by 4 take the vec4 pass (batchnorm_vec4.wgsl).
for (const [rows, channels] of [[1, 5], [2, 3], [33, 70], [1, 8], [33, 36]] as [number, number][]) {
  for (const relu of [false, true]) {
    Deno.test({
      name: `batchnorm: eval forward with running stats, rows=${rows} C=${channels}` +
        `${relu ? " +relu" : ""} (tol ${FORWARD_TOL.atol}/${FORWARD_TOL.rtol})`,
      ...gpuTest,
      fn: async () => {
        const gpu = await testGpu();
        const rng = new Rng(rows * 31 + channels);
        const x = rng.normals(rows * channels, 2);
        const gamma = rng.array(channels, 0.5, 1.5);
        const beta = rng.array(channels, -0.5, 0.5);
        const rMean = rng.array(channels, -1, 1);
        const rVar = rng.array(channels, 0.1, 3);
        const tensors = [
          gpu.upload(x, [rows, channels]),
          gpu.upload(gamma, [channels]),
          gpu.upload(beta, [channels]),
          gpu.upload(rMean, [channels]),
          gpu.upload(rVar, [channels]),
          gpu.empty([rows, channels]),
        ];
        const [tx, tg, tb, tm, tv, ty] = tensors;
        batchNormEvalForward(gpu, tx, tg, tb, tm, tv, ty, { rows, channels }, { relu });
        const [y, m, v] = await gpu.read([ty, tm, tv]);
        const expected = Float64Array.from(x, (xv, i) => {
          const c = i % channels;
          const out = (xv - rMean[c]) / Math.sqrt(rVar[c] + EPS) * gamma[c] + beta[c];
          return relu ? Math.max(out, 0) : out;
        });
        assertClose(y, expected, FORWARD_TOL, "eval y");
        assert.deepEqual(m, rMean, "eval leaves the running mean alone");
        assert.deepEqual(v, rVar, "eval leaves the running variance alone");
        for (const t of tensors) t.release();
      },
    });
  }
}

Deno.test({
  name: "batchnorm: backward accumulate adds to dgamma/dbeta and still overwrites dx",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 50;
    const channels = 9;
    const rng = new Rng(3);
    const x = gpu.upload(rng.normals(rows * channels), [rows, channels]);
    const dy = gpu.upload(rng.normals(rows * channels), [rows, channels]);
    const gamma = gpu.upload(rng.array(channels, 0.5, 1.5), [channels]);
    const beta = gpu.upload(rng.array(channels), [channels]);
    const rm = gpu.zeros([channels]);
    const rv = gpu.zeros([channels]);
    const y = gpu.empty([rows, channels]);
    const mean = gpu.empty([channels]);
    const invStd = gpu.empty([channels]);
    const s = { rows, channels };
    batchNormTrainForward(gpu, x, gamma, beta, rm, rv, y, mean, invStd, s);
    const dx1 = gpu.empty([rows, channels]);
    const dgamma1 = gpu.empty([channels]);
    const dbeta1 = gpu.empty([channels]);
    batchNormBackward(gpu, x, dy, gamma, mean, invStd, dx1, dgamma1, dbeta1, s);
    const startGamma = rng.array(channels);
    const startBeta = rng.array(channels);
    const dx2 = gpu.upload(rng.array(rows * channels), [rows, channels]);
    const dgamma2 = gpu.upload(startGamma, [channels]);
    const dbeta2 = gpu.upload(startBeta, [channels]);
    batchNormBackward(gpu, x, dy, gamma, mean, invStd, dx2, dgamma2, dbeta2, s, {
      accumulate: true,
    });
    const [a, b, c, d, e, f] = await gpu.read([dx1, dgamma1, dbeta1, dx2, dgamma2, dbeta2]);
    assert.deepEqual(d, a, "dx is overwritten under accumulate");
    const tol = { atol: 1e-6, rtol: 1e-6 };
    assertClose(e, Float64Array.from(b, (v, i) => v + startGamma[i]), tol, "dgamma +=");
    assertClose(f, Float64Array.from(c, (v, i) => v + startBeta[i]), tol, "dbeta +=");
    for (const t of [x, dy, gamma, beta, rm, rv, y, mean, invStd, dx1, dgamma1, dbeta1]) {
      t.release();
    }
    for (const t of [dx2, dgamma2, dbeta2]) t.release();
  },
});

Deno.test({
  name: "batchnorm: backward matches central finite differences of a float64 forward, 6x3",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 6;
    const channels = 3;
    const rng = new Rng(11);
    const x = rng.normals(rows * channels);
    const gamma = rng.array(channels, 0.5, 1.5);
    const beta = rng.array(channels);
    const weights = rng.normals(rows * channels); // loss = sum(w * y): dy = w
    const zeros = new Float64Array(channels);
    const loss = (xs: ArrayLike<number>, gs: ArrayLike<number>, bs: ArrayLike<number>) => {
      const f = referenceTrainForward(xs, gs, bs, zeros, zeros, rows, channels, false);
      return f.y.reduce((acc, v, i) => acc + v * weights[i], 0);
    };
    const h = 1e-6;
    const numeric = (values: ArrayLike<number>, which: 0 | 1 | 2) =>
      Float64Array.from({ length: values.length }, (_, i) => {
        const plus = Float64Array.from(values);
        const minus = Float64Array.from(values);
        plus[i] += h;
        minus[i] -= h;
        const args = (v: Float64Array) =>
          [which === 0 ? v : x, which === 1 ? v : gamma, which === 2 ? v : beta] as const;
        return (loss(...args(plus)) - loss(...args(minus))) / (2 * h);
      });
    const tensors = {
      x: gpu.upload(x, [rows, channels]),
      dy: gpu.upload(weights, [rows, channels]),
      gamma: gpu.upload(gamma, [channels]),
      beta: gpu.upload(beta, [channels]),
      rm: gpu.zeros([channels]),
      rv: gpu.zeros([channels]),
      y: gpu.empty([rows, channels]),
      mean: gpu.empty([channels]),
      invStd: gpu.empty([channels]),
      dx: gpu.empty([rows, channels]),
      dgamma: gpu.empty([channels]),
      dbeta: gpu.empty([channels]),
    };
    const t = tensors;
    const s = { rows, channels };
    batchNormTrainForward(gpu, t.x, t.gamma, t.beta, t.rm, t.rv, t.y, t.mean, t.invStd, s);
    batchNormBackward(gpu, t.x, t.dy, t.gamma, t.mean, t.invStd, t.dx, t.dgamma, t.dbeta, s);
    const [dx, dgamma, dbeta] = await gpu.read([t.dx, t.dgamma, t.dbeta]);
    // Central differences in float64 are accurate to ~1e-9; the GPU side is f32.
    const tol = { atol: 1e-4, rtol: 1e-4 };
    assertClose(dx, numeric(x, 0), tol, "dx vs finite differences");
    assertClose(dgamma, numeric(gamma, 1), tol, "dgamma vs finite differences");
    assertClose(dbeta, numeric(beta, 2), tol, "dbeta vs finite differences");
    for (const v of Object.values(tensors)) v.release();
  },
});

Deno.test({
  name: "batchnorm: mismatched shapes, in-place use and a 1-row training batch throw clear errors",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.zeros([4, 3]);
    const c3 = gpu.zeros([3]);
    const c4 = gpu.zeros([4]);
    const y = gpu.zeros([4, 3]);
    assert.throws(
      () => batchNormTrainForward(gpu, x, c4, c3, c3, c3, y, c3, c3, { rows: 4, channels: 3 }),
      /gamma has shape \[4\]/,
    );
    assert.throws(
      () => batchNormTrainForward(gpu, x, c3, c3, c3, c3, y, c3, c3, { rows: 3, channels: 3 }),
      /x has shape/,
    );
    const one = gpu.zeros([1, 3]);
    assert.throws(
      () => batchNormTrainForward(gpu, one, c3, c3, c3, c3, one, c3, c3, { rows: 1, channels: 3 }),
      /more than one value per channel/,
    );
    assert.throws(
      () => batchNormBackward(gpu, x, y, c3, c3, c3, x, c3, c4, { rows: 4, channels: 3 }),
      /dbeta has shape \[4\]/,
    );
    assert.throws(
      () => batchNormBackward(gpu, x, y, c3, c3, c3, y, c3, c3, { rows: 4, channels: 3 }),
      /dx shares a buffer with dy/,
    );
    for (const t of [x, c3, c4, y, one]) t.release();
  },
});

// The fused block end: y = relu(bn(x) + residual), and its backward masked by that y. [37, 130]
// takes the scalar pass, [64, 32] and [1, 8] (eval) the vec4 one.
for (const [rows, channels] of [[37, 130], [64, 32]] as [number, number][]) {
  Deno.test({
    name: `batchnorm: train forward with a fused residual add + relu, and its backward, ` +
      `rows=${rows} C=${channels} (tol ${FORWARD_TOL.atol}/${FORWARD_TOL.rtol}, ` +
      `${BACKWARD_TOL.atol}/${BACKWARD_TOL.rtol})`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows * 7 + channels);
      const n = rows * channels;
      const x = rng.normals(n, 2);
      const residual = rng.normals(n);
      const dy = rng.normals(n);
      const gamma = rng.array(channels, 0.5, 1.5);
      const beta = rng.array(channels, -0.5, 0.5);
      const [tx, tr, tdy, tg, tb] = [
        gpu.upload(x, [rows, channels]),
        gpu.upload(residual, [rows, channels]),
        gpu.upload(dy, [rows, channels]),
        gpu.upload(gamma, [channels]),
        gpu.upload(beta, [channels]),
      ];
      const [rm, rv, ty, tm, ts, tdx, tdg, tdb] = [
        gpu.zeros([channels]),
        gpu.upload(new Float32Array(channels).fill(1), [channels]),
        gpu.empty([rows, channels]),
        gpu.empty([channels]),
        gpu.empty([channels]),
        gpu.empty([rows, channels]),
        gpu.empty([channels]),
        gpu.empty([channels]),
      ];
      const shape = { rows, channels };
      batchNormTrainForward(gpu, tx, tg, tb, rm, rv, ty, tm, ts, shape, {
        relu: true,
        residual: tr,
      });
      batchNormBackward(gpu, tx, tdy, tg, tm, ts, tdx, tdg, tdb, shape, { reluOutput: ty });
      const [y, dx, dgamma, dbeta] = await gpu.read([ty, tdx, tdg, tdb]);
      const plain = referenceTrainForward(
        x,
        gamma,
        beta,
        new Float64Array(channels),
        new Float64Array(channels).fill(1),
        rows,
        channels,
        false,
      );
      const expectedY = plain.y.map((v, i) => Math.max(v + residual[i], 0));
      assertClose(y, expectedY, FORWARD_TOL, "relu(bn(x) + residual)");
      // The gradient reaches bn(x) where the block's output was positive; the mask comes from the
      // GPU's own output so a sum rounding to zero cannot disagree.
      const ref = referenceBackward(
        x,
        dy,
        gamma,
        { ...plain, y: Float64Array.from(y) },
        rows,
        channels,
        true,
      );
      assertClose(dx, ref.dx, BACKWARD_TOL, "dx");
      assertClose(dgamma, ref.dgamma, BACKWARD_TOL, "dgamma");
      assertClose(dbeta, ref.dbeta, BACKWARD_TOL, "dbeta");
      assert.ok(y.some((v) => v === 0) && y.some((v) => v > 0), "the ReLU clips some outputs");
      for (const t of [tx, tr, tdy, tg, tb, rm, rv, ty, tm, ts, tdx, tdg, tdb]) t.release();
    },
  });
}

for (const [rows, channels] of [[1, 8], [33, 70]] as [number, number][]) {
  Deno.test({
    name: `batchnorm: eval forward with a fused residual add + relu, rows=${rows} C=${channels}` +
      ` (tol ${FORWARD_TOL.atol}/${FORWARD_TOL.rtol}); residual checks`,
    ...gpuTest,
    fn: async () => {
      const gpu = await testGpu();
      const rng = new Rng(rows + channels);
      const n = rows * channels;
      const x = rng.normals(n, 2);
      const residual = rng.normals(n);
      const gamma = rng.array(channels, 0.5, 1.5);
      const beta = rng.array(channels, -0.5, 0.5);
      const rMean = rng.array(channels, -1, 1);
      const rVar = rng.array(channels, 0.1, 3);
      const tensors = [
        gpu.upload(x, [rows, channels]),
        gpu.upload(gamma, [channels]),
        gpu.upload(beta, [channels]),
        gpu.upload(rMean, [channels]),
        gpu.upload(rVar, [channels]),
        gpu.empty([rows, channels]),
        gpu.upload(residual, [rows, channels]),
      ];
      const [tx, tg, tb, tm, tv, ty, tr] = tensors;
      const shape = { rows, channels };
      batchNormEvalForward(gpu, tx, tg, tb, tm, tv, ty, shape, { relu: true, residual: tr });
      const [y] = await gpu.read([ty]);
      const expected = Float64Array.from(x, (xv, i) => {
        const c = i % channels;
        const v = (xv - rMean[c]) / Math.sqrt(rVar[c] + EPS) * gamma[c] + beta[c];
        return Math.max(v + residual[i], 0);
      });
      assertClose(y, expected, FORWARD_TOL, "eval relu(bn(x) + residual)");
      const short = gpu.zeros([n + 1]);
      assert.throws(
        () => batchNormEvalForward(gpu, tx, tg, tb, tm, tv, ty, shape, { residual: short }),
        /residual has shape/,
      );
      assert.throws(
        () => batchNormEvalForward(gpu, tx, tg, tb, tm, tv, ty, shape, { residual: ty }),
        /y shares a buffer with residual/,
      );
      for (const t of [...tensors, short]) t.release();
    },
  });
}
