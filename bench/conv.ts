/**
 * Benchmark: convolution forward, input gradient (dX) and weight gradient (dW) in GFLOP/s on
 * ResNet-50 layer shapes at batch 2, the default `small` preset's layers (ResNet-18 variant for
 * 28x28x1 input, widths 8/16/32/64, batch 64), the reference step's layers (the same network at
 * widths 32/64/128/256) and tfjs's own conv3x3 benchmark shape, next to
 * tfjs-backend-webgpu on the same adapter (`tf.conv2d`, and the registered `Conv2DBackpropInput` /
 * `Conv2DBackpropFilter` kernels that `tf.grad(tf.conv2d)` runs).
 * Standalone: `DENO_WEBGPU_BACKEND=vulkan deno run -A bench/conv.ts [--quick] [--no-tfjs]
 * [--only=<substring of case names>]`.
 */
import { acquireGpu, type Gpu, type Tensor } from "../runtime/gpu.ts";
import {
  conv2dForward,
  conv2dInputGrad,
  conv2dOutputSize,
  type Conv2dShape,
  conv2dWeightGrad,
} from "../kernels/conv2d.ts";
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

interface Case {
  name: string;
  shape: Conv2dShape;
  /** Part of the quick (smoke) run. */
  quick: boolean;
}

function conv(
  batch: number,
  size: number,
  inChannels: number,
  outChannels: number,
  kernelSize: number,
  stride: number,
): Conv2dShape {
  return {
    batch,
    inHeight: size,
    inWidth: size,
    inChannels,
    outChannels,
    kernelSize,
    stride,
    padding: (kernelSize - 1) >> 1,
  };
}

const CASES: Case[] = [
  { name: "r50 stem 7x7/2 3->64 @224 b2", shape: conv(2, 224, 3, 64, 7, 2), quick: false },
  { name: "r50 stem 7x7/2 3->64 @112 b2", shape: conv(2, 112, 3, 64, 7, 2), quick: true },
  { name: "r50 layer1 3x3 64->64 @56 b2", shape: conv(2, 56, 64, 64, 3, 1), quick: true },
  { name: "r50 layer1 1x1 64->256 @56 b2", shape: conv(2, 56, 64, 256, 1, 1), quick: false },
  { name: "r50 layer1 1x1 256->64 @56 b2", shape: conv(2, 56, 256, 64, 1, 1), quick: false },
  { name: "r50 layer2 3x3/2 128->128 @56 b2", shape: conv(2, 56, 128, 128, 3, 2), quick: false },
  { name: "r50 layer2 1x1/2 256->512 @56 b2", shape: conv(2, 56, 256, 512, 1, 2), quick: false },
  { name: "r50 layer3 3x3 256->256 @14 b2", shape: conv(2, 14, 256, 256, 3, 1), quick: false },
  { name: "r50 layer4 3x3 512->512 @7 b2", shape: conv(2, 7, 512, 512, 3, 1), quick: true },
  // The default `small` preset (widths 8/16/32/64, 28x28x1, batch 64): every distinct layer.
  { name: "preset stem 3x3 1->8 @28 b64", shape: conv(64, 28, 1, 8, 3, 1), quick: false },
  { name: "preset layer1 3x3 8->8 @28 b64", shape: conv(64, 28, 8, 8, 3, 1), quick: true },
  { name: "preset layer2 3x3/2 8->16 @28 b64", shape: conv(64, 28, 8, 16, 3, 2), quick: false },
  { name: "preset layer2 1x1/2 8->16 @28 b64", shape: conv(64, 28, 8, 16, 1, 2), quick: false },
  { name: "preset layer2 3x3 16->16 @14 b64", shape: conv(64, 14, 16, 16, 3, 1), quick: false },
  { name: "preset layer3 3x3/2 16->32 @14 b64", shape: conv(64, 14, 16, 32, 3, 2), quick: false },
  { name: "preset layer3 1x1/2 16->32 @14 b64", shape: conv(64, 14, 16, 32, 1, 2), quick: false },
  { name: "preset layer3 3x3 32->32 @7 b64", shape: conv(64, 7, 32, 32, 3, 1), quick: false },
  { name: "preset layer4 3x3/2 32->64 @7 b64", shape: conv(64, 7, 32, 64, 3, 2), quick: false },
  { name: "preset layer4 1x1/2 32->64 @7 b64", shape: conv(64, 7, 32, 64, 1, 2), quick: false },
  { name: "preset layer4 3x3 64->64 @4 b64", shape: conv(64, 4, 64, 64, 3, 1), quick: false },
  // The reference step's network (bench/step.ts: widths 32/64/128/256, 28x28x1, batch 64).
  { name: "ref stem 3x3 1->32 @28 b64", shape: conv(64, 28, 1, 32, 3, 1), quick: false },
  { name: "ref stage1 3x3 32->32 @28 b64", shape: conv(64, 28, 32, 32, 3, 1), quick: true },
  { name: "ref stage2 3x3/2 32->64 @28 b64", shape: conv(64, 28, 32, 64, 3, 2), quick: false },
  { name: "ref stage2 1x1/2 32->64 @28 b64", shape: conv(64, 28, 32, 64, 1, 2), quick: false },
  { name: "ref stage3 3x3 128->128 @7 b64", shape: conv(64, 7, 128, 128, 3, 1), quick: false },
  { name: "ref stage4 3x3 256->256 @4 b64", shape: conv(64, 4, 256, 256, 3, 1), quick: false },
  { name: "tfjs conv3x3 64->64 @32 b32", shape: conv(32, 32, 64, 64, 3, 1), quick: false },
];

type Op = "forward" | "dX" | "dW";
const OPS: Op[] = ["forward", "dX", "dW"];

/** tfjs keeps every output of a batch alive until the wait: at most this many bytes of them. */
const MAX_TFJS_BATCH_BYTES = 256 * 2 ** 20;
/** Our calls hold nothing between them; the cap only bounds a batch of very fast calls. */
const MAX_OUR_BATCH_CALLS = 1000;

/** Multiply-adds x 2 of the convolution (the same for all three products). */
function flopsOf(s: Conv2dShape): number {
  const { outHeight, outWidth } = conv2dOutputSize(s);
  return 2 * s.batch * outHeight * outWidth * s.outChannels * s.kernelSize ** 2 * s.inChannels;
}

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

interface Data {
  x: Float32Array;
  w: Float32Array;
  dy: Float32Array;
  xShape: number[];
  wShape: number[];
  yShape: number[];
}

function dataFor(s: Conv2dShape): Data {
  const { outHeight, outWidth } = conv2dOutputSize(s);
  const xShape = [s.batch, s.inHeight, s.inWidth, s.inChannels];
  const wShape = [s.kernelSize, s.kernelSize, s.inChannels, s.outChannels];
  const yShape = [s.batch, outHeight, outWidth, s.outChannels];
  const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  return {
    x: values(size(xShape), 1),
    w: values(size(wShape), 2),
    dy: values(size(yShape), 3),
    xShape,
    wShape,
    yShape,
  };
}

/** Milliseconds per call of each product, ours. */
async function timeOurs(gpu: Gpu, s: Conv2dShape, d: Data): Promise<Record<Op, number>> {
  const t: Record<string, Tensor> = {
    x: gpu.upload(d.x, d.xShape),
    w: gpu.upload(d.w, d.wShape),
    dy: gpu.upload(d.dy, d.yShape),
    y: gpu.empty(d.yShape),
    dx: gpu.empty(d.xShape),
    dw: gpu.empty(d.wShape),
  };
  const encode: Record<Op, () => void> = {
    forward: () => conv2dForward(gpu, t.x, t.w, null, t.y, s),
    dX: () => conv2dInputGrad(gpu, t.dy, t.w, t.dx, s),
    dW: () => conv2dWeightGrad(gpu, t.x, t.dy, t.dw, s),
  };
  const ms = {} as Record<Op, number>;
  for (const op of OPS) {
    encode[op](); // warm-up: compiles the pipelines
    await gpu.sync();
    ms[op] = await perCallMs(
      async (calls) => calls * await timeGpu(gpu, encode[op], { warmup: 0, iterations: calls }),
      MAX_OUR_BATCH_CALLS,
    );
  }
  for (const v of Object.values(t)) v.release();
  return ms;
}

/** Milliseconds per call of each product in tfjs, timed like ours. */
async function timeTfjs(tf: Tfjs, s: Conv2dShape, d: Data): Promise<Record<Op, number>> {
  const x = tf.tensor4d(d.x, d.xShape as [number, number, number, number]);
  const w = tf.tensor4d(d.w, d.wShape as [number, number, number, number]);
  const dy = tf.tensor4d(d.dy, d.yShape as [number, number, number, number]);
  const pad = s.padding;
  const explicitPad: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [pad, pad],
    [pad, pad],
    [0, 0],
  ];
  const strides: [number, number] = [s.stride, s.stride];
  const run: Record<Op, () => unknown> = {
    forward: () => tf.conv2d(x, w, s.stride, explicitPad, "NHWC"),
    // The kernels tf.grad(tf.conv2d) dispatches for dx and dfilter.
    dX: () =>
      tf.engine().runKernel("Conv2DBackpropInput", { dy, filter: w }, {
        inputShape: d.xShape,
        strides,
        pad,
        dataFormat: "NHWC",
      }),
    dW: () =>
      tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, {
        filterShape: d.wShape,
        strides,
        pad,
        dataFormat: "NHWC",
      }),
  };
  const ms = {} as Record<Op, number>;
  for (const op of OPS) {
    const timeBatch = (calls: number) =>
      timeAsync(async () => {
        const results = Array.from({ length: calls }, () => run[op]() as { dispose(): void });
        await syncTfjs(tf);
        for (const result of results) result.dispose();
      }, { warmup: 0, iterations: 1 });
    await timeBatch(1); // warm-up: compiles the pipeline
    const outputBytes = 4 * (op === "forward" ? d.dy : op === "dX" ? d.x : d.w).length;
    ms[op] = await perCallMs(timeBatch, Math.floor(MAX_TFJS_BATCH_BYTES / outputBytes));
  }
  tf.dispose([x, w, dy]);
  return ms;
}

/** Forward, dX and dW GFLOP/s for each case, ours next to tfjs. */
export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const tf = ctx.withTfjs ? await loadTfjs() : undefined;
  const only = typeof ctx.flags.only === "string" ? ctx.flags.only : undefined;
  const cases = CASES.filter((c) => (!ctx.quick || c.quick) && (!only || c.name.includes(only)));
  for (const c of cases) {
    const data = dataFor(c.shape);
    const flops = flopsOf(c.shape);
    const ours = await timeOurs(ctx.gpu, c.shape, data);
    const peer = tf ? await timeTfjs(tf, c.shape, data) : undefined;
    for (const op of OPS) {
      rows.push(withRatio({
        part: "conv",
        case: `${op} ${c.name}`,
        ours: measure(ours[op], flops),
        tfjs: peer ? measure(peer[op], flops) : undefined,
      }));
    }
  }
  return rows;
}

if (import.meta.main) {
  const flags: Record<string, string | boolean> = {};
  for (const arg of Deno.args) {
    const [key, value] = arg.replace(/^--/, "").split("=");
    flags[key] = value ?? true;
  }
  const gpu = await acquireGpu({ log: true });
  const rows = await run({ gpu, quick: !!flags.quick, withTfjs: !flags["no-tfjs"], flags });
  console.log(formatTable(rows));
}
