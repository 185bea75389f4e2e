/**
 * Benchmark: one direction of the truncated triplet loss, the whole step (normalise, S = P Z^T,
 * sort each row's negatives, hinge on the mean of ranks 2..10, gradient, back through the
 * normalisation) at d = 256 for n = 256 and n = 4096, next to the same computation in tfjs
 * (`tf.matMul` + `tf.topk`, differentiated with `tf.valueAndGrad`). The note gives the time our
 * sort alone takes and both losses (they must agree).
 * Standalone: `DENO_WEBGPU_BACKEND=vulkan deno run -A bench/loss.ts [--quick] [--no-tfjs]`.
 */
import { acquireGpu, type Gpu } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { cosineSimilarity } from "../kernels/matmul.ts";
import { SslLoss } from "../models/loss.ts";
import { l2normForward } from "../kernels/l2norm.ts";
import { sortRows } from "../kernels/sort.ts";
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
import type { Scalar, Tensor, Tensor2D } from "@tensorflow/tfjs";

const DIM = 256;
const WINDOW: [number, number] = [2, 10];
const GAMMA = 2;
const MARGIN = 100;

interface Case {
  n: number;
  /** Part of the quick (smoke) run. */
  quick: boolean;
}

const CASES: Case[] = [{ n: 256, quick: true }, { n: 4096, quick: false }];

async function timeOurs(gpu: Gpu, n: number, p: Float32Array, z: Float32Array) {
  const loss = new SslLoss(
    gpu,
    { kind: "triplet", window: WINDOW, gamma: GAMMA, margin: MARGIN },
    n,
    DIM,
  );
  const tp = gpu.upload(p, [n, DIM]);
  const tz = gpu.upload(z, [n, DIM]);
  const dp = gpu.empty([n, DIM]);
  const lossOut = gpu.empty([1]);
  // Big cases take seconds per step on a CPU adapter: fewer repetitions.
  const reps = n >= 4096 ? { warmup: 1, iterations: 1 } : { warmup: 1, iterations: 5 };
  const stepMs = await timeGpu(gpu, () => loss.direction(tp, tz, dp, lossOut, 0), reps);
  const [value] = await lossOut.read();
  // The sort alone, on the step's own similarity matrix, keeping the window's ranks as the loss does.
  const pHat = gpu.empty([n, DIM]);
  const zHat = gpu.empty([n, DIM]);
  const norms = gpu.empty([n]);
  const s = gpu.empty([n, n]);
  l2normForward(gpu, tp, pHat, norms);
  l2normForward(gpu, tz, zHat, norms);
  cosineSimilarity(gpu, pHat, zHat, s);
  const keys = gpu.empty([n, WINDOW[1]]);
  const index = gpu.empty([n, WINDOW[1]], "u32");
  const sortMs = await timeGpu(
    gpu,
    () => sortRows(gpu, s, keys, index, { keyScale: -2, maskDiagonal: true }),
    reps,
  );
  for (const t of [tp, tz, dp, lossOut, pHat, zHat, norms, s, keys, index]) t.release();
  loss.release();
  return { stepMs, sortMs, value };
}

async function timeTfjs(tf: Tfjs, n: number, p: Float32Array, z: Float32Array) {
  const [first, last] = WINDOW;
  const tp = tf.tensor2d(p, [n, DIM]);
  const tz = tf.tensor2d(z, [n, DIM]);
  const normalise = (x: Tensor2D) =>
    tf.div(x, tf.maximum(tf.norm(x, "euclidean", 1, true), 1e-12)) as typeof x;
  const zHat = normalise(tz);
  // Pushes each row's positive below every negative before the top-k.
  const diagonalPenalty = tf.mul(tf.eye(n), 1e4);
  const rowStart = tf.mul(tf.range(0, n, 1, "int32").reshape([n, 1]), tf.scalar(n, "int32"));
  const windowSize = last - first + 1;
  // The deputy's distances: tf.topk has no gradient (and the ranking passes none, as in METHOD.md),
  // so the selection is a custom op whose gradient scatters dy back to the selected entries.
  const windowDistances = tf.customGrad((...inputs) => {
    const [distance, scores] = inputs as Tensor[];
    const save = inputs[2] as unknown as (tensors: Tensor[]) => void;
    const order = tf.topk(scores, last).indices;
    const window = tf.slice(order, [0, first - 1], [n, windowSize]);
    const flat = tf.add(window, rowStart).reshape([-1, 1]);
    save([flat]);
    return {
      value: tf.gatherND(distance.reshape([-1]), flat).reshape([n, windowSize]),
      gradFunc: (dy: Tensor, saved: Tensor[]) => [
        tf.scatterND(saved[0], dy.reshape([-1]), [n * n]).reshape([n, n]),
        tf.zerosLike(scores),
      ],
    };
  });
  const lossOf = (pRaw: Tensor) => {
    const pHat = normalise(pRaw as Tensor2D);
    const s = tf.matMul(pHat, zHat, false, true);
    const distance = tf.mul(s, -2);
    const positive = tf.mul(tf.sum(tf.mul(pHat, zHat), 1), -2);
    // Largest similarity = smallest distance.
    const deputy = tf.mean(windowDistances(distance, tf.sub(s, diagonalPenalty)), 1);
    const hinge = tf.relu(tf.add(tf.sub(tf.mul(positive, GAMMA), deputy), MARGIN));
    return tf.mean(hinge) as Scalar;
  };
  const valueAndGrad = tf.valueAndGrad(lossOf);
  const reps = n >= 4096 ? { warmup: 1, iterations: 1 } : { warmup: 1, iterations: 5 };
  const ms = await timeAsync(async () => {
    const { value: v, grad } = valueAndGrad(tp);
    await syncTfjs(tf);
    v.dispose();
    grad.dispose();
  }, reps);
  const check = valueAndGrad(tp);
  const value = (await check.value.data())[0];
  tf.dispose([check.value, check.grad]);
  tf.dispose([tp, tz, zHat, diagonalPenalty, rowStart]);
  return { ms, value };
}

/** The triplet loss step (one direction) for each case, ours next to tfjs. */
export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const tf = ctx.withTfjs ? await loadTfjs() : undefined;
  for (const c of CASES.filter((c) => !ctx.quick || c.quick)) {
    const rng = new Rng(c.n);
    const p = rng.normals(c.n * DIM);
    const z = rng.normals(c.n * DIM);
    const ours = await timeOurs(ctx.gpu, c.n, p, z);
    const row: BenchRow = {
      part: "loss",
      case: `triplet direction n=${c.n}, d=${DIM}, window [${WINDOW}], fwd+bwd`,
      ours: measure(ours.stepMs),
      note: `sort ${ours.sortMs.toFixed(1)} ms of it; loss ${ours.value.toFixed(4)}`,
    };
    if (tf) {
      const peer = await timeTfjs(tf, c.n, p, z);
      row.tfjs = measure(peer.ms);
      row.note += ` (tfjs ${peer.value.toFixed(4)})`;
    }
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
