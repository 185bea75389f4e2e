/**
 * Benchmark: BatchNorm training forward + backward (batch statistics, normalise, and the dx /
 * dgamma / dbeta backward) on the small preset's shapes and ResNet-50-like shapes, next to tfjs
 * (`tf.moments` + `tf.batchNorm`, differentiated with `tf.grads`).
 * Standalone: `DENO_WEBGPU_BACKEND=vulkan deno run -A bench/batchnorm.ts [--quick] [--no-tfjs]`.
 */
import { acquireGpu, type Gpu, type Tensor } from "../runtime/gpu.ts";
import { batchNormBackward, batchNormTrainForward } from "../kernels/batchnorm.ts";
import {
  type BenchContext,
  type BenchRow,
  formatTable,
  measure,
  timeAsync,
  timeGpu,
  withRatio,
} from "./harness.ts";
import { loadTfjs, syncTfjs, type Tfjs } from "./tfjs.ts";

interface Case {
  name: string;
  rows: number;
  channels: number;
  /** Part of the quick (smoke) run. */
  quick: boolean;
}

const CASES: Case[] = [
  { name: "small preset 64x28x28, C=32", rows: 64 * 28 * 28, channels: 32, quick: true },
  { name: "small preset 64x28x28, C=64", rows: 64 * 28 * 28, channels: 64, quick: false },
  { name: "small preset 64x14x14, C=128", rows: 64 * 14 * 14, channels: 128, quick: false },
  { name: "small preset 64x28x28, C=256", rows: 64 * 28 * 28, channels: 256, quick: false },
  { name: "resnet50 stage1 8x56x56, C=256", rows: 8 * 56 * 56, channels: 256, quick: false },
  { name: "resnet50 stage4 8x7x7, C=2048", rows: 8 * 7 * 7, channels: 2048, quick: true },
  { name: "projector BN1d N=64, C=4096", rows: 64, channels: 4096, quick: true },
];

/** Deterministic pseudo-random values (the numbers do not matter, only their spread). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let state = seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state / 2 ** 31 - 1;
  }
  return out;
}

async function timeOurs(gpu: Gpu, c: Case, x: Float32Array, dy: Float32Array): Promise<number> {
  const { rows, channels } = c;
  const s = { rows, channels };
  const t: Record<string, Tensor> = {
    x: gpu.upload(x, [rows, channels]),
    dy: gpu.upload(dy, [rows, channels]),
    gamma: gpu.upload(new Float32Array(channels).fill(1), [channels]),
    beta: gpu.zeros([channels]),
    runningMean: gpu.zeros([channels]),
    runningVar: gpu.zeros([channels]),
    y: gpu.empty([rows, channels]),
    mean: gpu.empty([channels]),
    invStd: gpu.empty([channels]),
    dx: gpu.empty([rows, channels]),
    dgamma: gpu.empty([channels]),
    dbeta: gpu.empty([channels]),
  };
  const ms = await timeGpu(gpu, () => {
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
      { relu: true },
    );
    batchNormBackward(gpu, t.x, t.dy, t.gamma, t.mean, t.invStd, t.dx, t.dgamma, t.dbeta, s, {
      reluOutput: t.y,
    });
  });
  for (const v of Object.values(t)) v.release();
  return ms;
}

async function timeTfjs(tf: Tfjs, c: Case, x: Float32Array, dy: Float32Array): Promise<number> {
  const tx = tf.tensor2d(x, [c.rows, c.channels]);
  const tdy = tf.tensor2d(dy, [c.rows, c.channels]);
  const gamma = tf.ones([c.channels]);
  const beta = tf.zeros([c.channels]);
  // The same work as ours: batch moments, normalise, ReLU, and gradients for x, gamma and beta.
  const gradients = tf.grads((input, g, b) => {
    const { mean, variance } = tf.moments(input, [0]);
    return tf.relu(tf.batchNorm(input, mean, variance, b, g, 1e-5));
  });
  const ms = await timeAsync(async () => {
    tf.tidy(() => {
      gradients([tx, gamma, beta], tdy);
    });
    await syncTfjs(tf);
  });
  tf.dispose([tx, tdy, gamma, beta]);
  return ms;
}

/** BatchNorm train forward + backward (ReLU fused) for each case, ours next to tfjs. */
export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const tf = ctx.withTfjs ? await loadTfjs() : undefined;
  for (const c of CASES.filter((c) => !ctx.quick || c.quick)) {
    const n = c.rows * c.channels;
    const x = values(n, 1);
    const dy = values(n, 2);
    const ours = await timeOurs(ctx.gpu, c, x, dy);
    const row: BenchRow = {
      part: "batchnorm",
      case: `${c.name} (rows ${c.rows}), fwd+bwd +relu`,
      ours: measure(ours),
      // Bytes a perfect implementation must move: read x, dy; write y, dx (f32).
      note: `${(4 * n * 4 / (ours * 1e6)).toFixed(1)} GB/s effective`,
    };
    if (tf) row.tfjs = measure(await timeTfjs(tf, c, x, dy));
    rows.push(withRatio(row));
  }
  return rows;
}

if (import.meta.main) {
  const gpu = await acquireGpu({ log: true });
  const quick = Deno.args.includes("--quick");
  const withTfjs = !Deno.args.includes("--no-tfjs");
  const result = await run({ gpu, quick, withTfjs, flags: {} });
  console.log(formatTable(result));
}
