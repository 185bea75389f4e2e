import assert from "node:assert/strict";
import { assertClose, FORCED_PLANS, gpuTest, Rng, testGpu, withKernelPlan } from "./util.ts";
import { matmul, type MatmulOptions } from "../kernels/matmul.ts";
import type { Gpu, Tensor } from "../runtime/gpu.ts";

// Inputs are uniform in [-1, 1]; an f32 dot product of K terms drifts from the float64 reference
// by about sqrt(K) roundings of values of size ~sqrt(K)/3, so the tolerance grows with sqrt(K):
// |got - expected| <= 1e-5 * sqrt(K) + 1e-5 * |expected| (K = 4096: atol 6.4e-4 on values ~20).
// An indexing mistake moves a value by O(1), far outside it.
function tolerance(k: number) {
  return { atol: 1e-5 * Math.sqrt(Math.max(k, 1)), rtol: 1e-5 };
}

type Form = "AB" | "AtB" | "ABt";
const FORMS: Form[] = ["AB", "AtB", "ABt"];

interface Case {
  batch?: number;
  m: number;
  n: number;
  k: number;
  form: Form;
  bias?: boolean;
  accumulate?: boolean;
  /** Rank-2 B shared by a batched A. */
  sharedB?: boolean;
}

/** float64 reference of one case, on the same float32 inputs. */
function reference(
  c: Case,
  a: Float32Array,
  b: Float32Array,
  bias: Float32Array | undefined,
  initial: Float32Array | undefined,
): Float64Array {
  const { m, n, k } = c;
  const batch = c.batch ?? 1;
  const out = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const aOff = z * m * k;
    const bOff = c.sharedB ? 0 : z * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const av = c.form === "AtB" ? a[aOff + p * m + i] : a[aOff + i * k + p];
          const bv = c.form === "ABt" ? b[bOff + j * k + p] : b[bOff + p * n + j];
          s += av * bv;
        }
        const o = z * m * n + i * n + j;
        if (bias) s += bias[j];
        if (initial) s += initial[o];
        out[o] = s;
      }
    }
  }
  return out;
}

function caseName(c: Case): string {
  const parts = [`${c.batch ? `${c.batch}x` : ""}${c.m}x${c.n}x${c.k} ${c.form}`];
  if (c.sharedB) parts.push("shared B");
  if (c.bias) parts.push("bias");
  if (c.accumulate) parts.push("accumulate");
  return parts.join(", ");
}

/** Run one case on the GPU and compare with the reference. */
async function check(gpu: Gpu, c: Case, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const { m, n, k } = c;
  const lead = c.batch === undefined ? [] : [c.batch];
  const batch = c.batch ?? 1;
  const a = rng.array(batch * m * k);
  const b = rng.array((c.sharedB ? 1 : batch) * k * n);
  const bias = c.bias ? rng.array(n) : undefined;
  const initial = c.accumulate ? rng.array(batch * m * n) : undefined;
  const aShape = c.form === "AtB" ? [...lead, k, m] : [...lead, m, k];
  const bLead = c.sharedB ? [] : lead;
  const bShape = c.form === "ABt" ? [...bLead, n, k] : [...bLead, k, n];
  const ta = gpu.upload(a, aShape);
  const tb = gpu.upload(b, bShape);
  const tBias = bias ? gpu.upload(bias, [n]) : undefined;
  const out = initial ? gpu.upload(initial, [...lead, m, n]) : gpu.empty([...lead, m, n]);
  const options: MatmulOptions = {
    transposeA: c.form === "AtB",
    transposeB: c.form === "ABt",
    bias: tBias,
    accumulate: c.accumulate,
  };
  matmul(gpu, ta, tb, out, options);
  const got = await out.read();
  assertClose(got, reference(c, a, b, bias, initial), tolerance(k), caseName(c));
  for (const t of [ta, tb, tBias, out]) t?.release();
}

/**
 * Test the cases under both kernel plans, forced: the CPU plans read operands from textures, the
 * GPU plans from storage buffers (both paths, on any adapter).
 */
function runCases(title: string, cases: Case[]): void {
  for (const plan of FORCED_PLANS) {
    const operands = plan === "cpu" ? "texture" : "buffer";
    Deno.test({
      name: `matmul (${plan} plans, ${operands} operands): ${title}: ${
        cases.map(caseName).join("; ")
      }`,
      ...gpuTest,
      fn: async () => {
        const gpu = await testGpu();
        await withKernelPlan(gpu, plan, async () => {
          for (const [i, c] of cases.entries()) await check(gpu, c, 1000 + i);
        });
      },
    });
  }
}

// Shapes: a single element; odd sizes (every operand read element by element, k tail);
// sizes that are multiples of 4 (vec4 reads) but not of the 16 x 128 workgroup block;
// long K with tiny M and N; M = 1 and N = 1 (vector cases).
const shapes: [number, number, number][] = [
  [1, 1, 1],
  [7, 5, 3],
  [37, 29, 19],
  [20, 132, 36],
  [3, 5, 4096],
  [1, 64, 33],
  [65, 1, 16],
  // Operands over one texture row (4096 vec4): whole rows plus a partial one.
  [130, 20, 260],
];
for (const form of FORMS) {
  runCases(`${form} shapes`, shapes.map(([m, n, k]) => ({ m, n, k, form })));
}

runCases("bias and accumulate", [
  { m: 20, n: 132, k: 36, form: "ABt", bias: true },
  { m: 7, n: 5, k: 3, form: "ABt", bias: true },
  { m: 20, n: 132, k: 36, form: "AtB", accumulate: true },
  { m: 37, n: 29, k: 19, form: "AtB", accumulate: true },
  { m: 7, n: 5, k: 3, form: "AB", bias: true, accumulate: true },
  { m: 20, n: 132, k: 36, form: "AB", bias: true, accumulate: true },
]);

runCases("batched", [
  { batch: 3, m: 20, n: 132, k: 36, form: "AB" },
  { batch: 3, m: 7, n: 5, k: 3, form: "ABt", bias: true },
  { batch: 2, m: 37, n: 29, k: 19, form: "AtB", accumulate: true },
  { batch: 3, m: 20, n: 132, k: 36, form: "ABt", sharedB: true },
  { batch: 4, m: 7, n: 5, k: 3, form: "AB", sharedB: true },
]);

Deno.test({
  name: "matmul: 64x256x128 A·Bᵀ is bit-for-bit deterministic",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const rng = new Rng(7);
    const a = gpu.upload(rng.array(64 * 128), [64, 128]);
    const b = gpu.upload(rng.array(256 * 128), [256, 128]);
    const outs = [gpu.empty([64, 256]), gpu.empty([64, 256])];
    for (const out of outs) matmul(gpu, a, b, out, { transposeB: true });
    const [first, second] = await gpu.read(outs);
    assert.deepEqual(first, second);
    for (const t of [a, b, ...outs]) t.release();
  },
});

Deno.test({
  name: "matmul: shape mismatches throw errors that name the problem",
  ...gpuTest,
  fn: async () => {
    const gpu = await testGpu();
    const t = (shape: number[]): Tensor => gpu.empty(shape);
    const a = t([4, 3]);
    const b = t([3, 5]);
    const out = t([4, 5]);
    assert.throws(() => matmul(gpu, a, t([4, 5]), out), /inner dimensions differ/);
    assert.throws(() => matmul(gpu, a, b, t([5, 4])), /out \[5, 4\] should be 4x5/);
    assert.throws(() => matmul(gpu, a, b, out, { transposeA: true }), /inner dimensions differ/);
    assert.throws(() => matmul(gpu, a, b, out, { bias: t([4]) }), /bias \[4\] must hold N = 5/);
    assert.throws(() => matmul(gpu, t([12]), b, out), /A must be a matrix/);
    assert.throws(() => matmul(gpu, a, t([2, 3, 5]), out), /B \[2, 3, 5\] is batched but A/);
    assert.throws(() => matmul(gpu, t([2, 4, 3]), b, out), /must have the rank of A/);
    assert.throws(
      () => matmul(gpu, t([2, 4, 3]), t([3, 3, 5]), t([2, 4, 5])),
      /batch of B \[3, 3, 5\] differs/,
    );
    assert.throws(() => matmul(gpu, a, b, a.reshape([4, 3])), /should be 4x5/);
    const square = t([4, 4]);
    assert.throws(() => matmul(gpu, square, square, square), /must not share its buffer with A/);
    for (const x of [a, b, out, square]) x.release();
  },
});
