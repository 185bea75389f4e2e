/**
 * Benchmark: matrix multiply in GFLOP/s on square sizes, the GEMMs of ResNet-50 convolutions at
 * batch 4 (as im2col GEMMs: M = batch*Ho*Wo, N = Cout, K = Cin*kh*kw) and the projector's Linear
 * layers at batch 256 (forward x·Wᵀ, input gradient dy·W, weight gradient dyᵀ·x), next to
 * tfjs-backend-webgpu's `tf.matMul` on the same adapter.
 * Each side is timed like the conv bench (`perCallMs`): batches of calls queued behind one wait
 * for the GPU (ours: `gpu.sync()`; tfjs: submit its queue and `onSubmittedWorkDone()`, its
 * outputs kept alive until then), no readback, sized to ~500 ms so the ~11 ms wait of the CPU
 * adapter is ~2% of a figure, best of 3. (Until 12-03 a round held ~0.4 GFLOP, ~8 ms of our work
 * at 50 GFLOP/s: the wait was more than half of the figure.)
 * Standalone: `DENO_WEBGPU_BACKEND=vulkan deno run -A bench/matmul.ts [--quick] [--no-tfjs]
 * [--only=<substring of case names>]`.
 */
import { acquireGpu, type Gpu } from "../runtime/gpu.ts";
import { matmul } from "../kernels/matmul.ts";
import {
  type BenchContext,
  type BenchRow,
  formatTable,
  measure,
  perCallMs,
  timeAsync,
  timeGpu,
  withRatio,
} from "./harness.ts";
import { loadTfjs, syncTfjs, type Tfjs } from "./tfjs.ts";

/** Which operand is used transposed, as in a Linear layer's three products. */
type Form = "A·B" | "A·Bᵀ" | "Aᵀ·B";

interface Case {
  name: string;
  m: number;
  n: number;
  k: number;
  form: Form;
  /** Part of the quick (smoke) run. */
  quick: boolean;
}

/** A ResNet-50 convolution at batch 4 as the GEMM of its im2col form. */
function conv(
  name: string,
  outSize: number,
  inChannels: number,
  outChannels: number,
  kernel: number,
  quick = false,
): Case {
  return {
    name:
      `resnet50 ${name} ${kernel}x${kernel} ${inChannels}->${outChannels} @${outSize}px, batch 4`,
    m: 4 * outSize * outSize,
    n: outChannels,
    k: inChannels * kernel * kernel,
    form: "A·B",
    quick,
  };
}

const CASES: Case[] = [
  { name: "square 256", m: 256, n: 256, k: 256, form: "A·B", quick: true },
  { name: "square 512", m: 512, n: 512, k: 512, form: "A·B", quick: true },
  { name: "square 1024", m: 1024, n: 1024, k: 1024, form: "A·B", quick: false },
  conv("conv1", 112, 3, 64, 7),
  conv("layer1", 56, 64, 64, 3),
  conv("layer1 expand", 56, 64, 256, 1),
  conv("layer2", 28, 128, 128, 3),
  conv("layer3", 14, 256, 256, 3, true),
  conv("layer4", 7, 512, 512, 3),
  conv("layer4 reduce", 7, 2048, 512, 1),
  {
    name: "projector 2048->4096 forward x·Wᵀ",
    m: 256,
    n: 4096,
    k: 2048,
    form: "A·Bᵀ",
    quick: false,
  },
  {
    name: "projector 2048->4096 input grad dy·W",
    m: 256,
    n: 2048,
    k: 4096,
    form: "A·B",
    quick: false,
  },
  {
    name: "projector 2048->4096 weight grad dyᵀ·x",
    m: 4096,
    n: 2048,
    k: 256,
    form: "Aᵀ·B",
    quick: false,
  },
  { name: "projector 4096->256 forward x·Wᵀ", m: 256, n: 256, k: 4096, form: "A·Bᵀ", quick: true },
];

/** Deterministic pseudo-random values in [-1, 1) (the numbers do not matter, only their spread). */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let state = seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state / 2 ** 31 - 1;
  }
  return out;
}

/** Stored shapes of A and B for a case (A is [K, M] for Aᵀ·B, B is [N, K] for A·Bᵀ). */
function storedShapes(c: Case): { a: number[]; b: number[] } {
  return {
    a: c.form === "Aᵀ·B" ? [c.k, c.m] : [c.m, c.k],
    b: c.form === "A·Bᵀ" ? [c.n, c.k] : [c.k, c.n],
  };
}

/** Our calls hold nothing between them; the cap only bounds a batch of very fast calls. */
const MAX_OUR_BATCH_CALLS = 1000;
/** tfjs keeps every output of a batch alive until the wait: at most this many bytes of them. */
const MAX_TFJS_BATCH_BYTES = 256 * 2 ** 20;

async function timeOurs(gpu: Gpu, c: Case, a: Float32Array, b: Float32Array): Promise<number> {
  const shapes = storedShapes(c);
  const ta = gpu.upload(a, shapes.a);
  const tb = gpu.upload(b, shapes.b);
  const out = gpu.empty([c.m, c.n]);
  const options = { transposeA: c.form === "Aᵀ·B", transposeB: c.form === "A·Bᵀ" };
  const encode = () => matmul(gpu, ta, tb, out, options);
  encode(); // warm-up: compiles the pipeline
  await gpu.sync();
  const ms = await perCallMs(
    async (calls) => calls * await timeGpu(gpu, encode, { warmup: 0, iterations: calls }),
    MAX_OUR_BATCH_CALLS,
  );
  for (const t of [ta, tb, out]) t.release();
  return ms;
}

async function timeTfjs(tf: Tfjs, c: Case, a: Float32Array, b: Float32Array): Promise<number> {
  const shapes = storedShapes(c);
  const ta = tf.tensor2d(a, shapes.a as [number, number]);
  const tb = tf.tensor2d(b, shapes.b as [number, number]);
  const timeBatch = (calls: number) =>
    timeAsync(async () => {
      const outs = Array.from(
        { length: calls },
        () => tf.matMul(ta, tb, c.form === "Aᵀ·B", c.form === "A·Bᵀ"),
      );
      await syncTfjs(tf);
      tf.dispose(outs);
    }, { warmup: 0, iterations: 1 });
  await timeBatch(1); // warm-up: compiles the pipeline
  const ms = await perCallMs(timeBatch, Math.floor(MAX_TFJS_BATCH_BYTES / (4 * c.m * c.n)));
  tf.dispose([ta, tb]);
  return ms;
}

/** GFLOP/s of each case, ours next to tfjs. */
export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const tf = ctx.withTfjs ? await loadTfjs() : undefined;
  const only = typeof ctx.flags.only === "string" ? ctx.flags.only : undefined;
  const cases = CASES.filter((c) => (!ctx.quick || c.quick) && (!only || c.name.includes(only)));
  for (const c of cases) {
    const shapes = storedShapes(c);
    const a = values(shapes.a[0] * shapes.a[1], 1);
    const b = values(shapes.b[0] * shapes.b[1], 2);
    const flops = 2 * c.m * c.n * c.k;
    const row: BenchRow = {
      part: "matmul",
      case: `${c.name}: ${c.form} M=${c.m} N=${c.n} K=${c.k}`,
      ours: measure(await timeOurs(ctx.gpu, c, a, b), flops),
    };
    if (tf) row.tfjs = measure(await timeTfjs(tf, c, a, b), flops);
    rows.push(withRatio(row));
  }
  return rows;
}

if (import.meta.main) {
  const gpu = await acquireGpu({ log: true });
  const quick = Deno.args.includes("--quick");
  const withTfjs = !Deno.args.includes("--no-tfjs");
  const only = Deno.args.find((arg) => arg.startsWith("--only="))?.slice("--only=".length);
  const result = await run({ gpu, quick, withTfjs, flags: only ? { only } : {} });
  console.log(formatTable(result));
}
