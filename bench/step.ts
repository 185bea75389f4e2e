/**
 * Benchmark: whole training steps.
 * - The reference step (the project's speed target): ResNet-18 small-image variant (3x3 stride-1
 *   stem, no max pool, widths 32/64/128/256) on 28x28x1 images, batch 64, global average pool ->
 *   Linear(256 -> 128), loss = mean of the squared outputs, SGD momentum 0.9; one step = forward,
 *   backward, update and the loss read back. Ours (models/ layers), the same model and step in
 *   tfjs-backend-webgpu on the same adapter, and PyTorch on the CPU
 *   (`bench/torch_reference_step.py`, when `/usr/bin/python3` imports torch).
 * - The SSL step of the preset the caller passes in its context (`tasks/bench.ts`: the default
 *   preset), and of the same preset at batch 256 with widths 16/32/64/128 (not in --quick):
 *   `SslModel.step` on two views of a batch (random normal tensors of the views' shape;
 *   augmentation is timed by the data part), its dispatch count, and the same step in PyTorch on
 *   the CPU (`bench/torch_ssl_step.py`); skipped when the context has no preset.
 * - Each PyTorch peer runs as a `--serve` subprocess: after both warm up, our steps and its steps
 *   alternate, so on a shared machine both see the same load (notes give the ranges and the
 *   fastest steps).
 * - `--profile`: the per-kernel time breakdown of one reference step and one SSL step of the
 *   preset (runtime/profiler.ts), returned as extra rows carrying the profiles; `tasks/bench.ts`
 *   prints their tables.
 * Standalone: `DENO_WEBGPU_BACKEND=vulkan deno run -A bench/step.ts [--quick] [--no-tfjs]
 * [--profile[=timestamps|sync-replay]]`.
 */
import type { Scalar, Tensor as TfTensor, Tensor1D, Tensor4D, Variable } from "@tensorflow/tfjs";
import { acquireGpu, type Gpu, type Tensor } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { scale } from "../kernels/elementwise.ts";
import { reduceAll } from "../kernels/reduce.ts";
import { sgdStep } from "../kernels/optimizer.ts";
import { Context, Linear, type Parameter, zeroGrads } from "../models/layers.ts";
import { ResNet } from "../models/resnet.ts";
import { SslModel, sslModelConfig } from "../models/ssl.ts";
import { deputyWindow, LOSS_DEFAULTS } from "../models/loss.ts";
import { KernelProfiler, type ProfileMode } from "../runtime/profiler.ts";
import {
  type BenchContext,
  type BenchPreset,
  type BenchRow,
  formatTable,
  withRatio,
} from "./harness.ts";
import { loadTfjs, type Tfjs } from "./tfjs.ts";
import { formatProfile, hasProfile, type ProfiledRow } from "./profile.ts";

/** The reference step's definition (the same numbers as bench/torch_reference_step.py). */
export const REFERENCE = {
  batch: 64,
  imageSize: 28,
  inChannels: 1,
  widths: [32, 64, 128, 256] as [number, number, number, number],
  outFeatures: 128,
  lr: 0.01,
  momentum: 0.9,
} as const;

/** Seconds per step PyTorch 1.13 took on this machine's CPU when the target was set. */
const PYTORCH_BASELINE_SECONDS = 0.5;
/** Our goal for the reference step on the CPU adapter. */
const TARGET_SECONDS = 2.0;
/** How long the PyTorch script may run before it is abandoned. */
const TORCH_TIMEOUT_MS = 180_000;

/** The reference network with its SGD state on our runtime. */
export class ReferenceStep {
  readonly ctx: Context;
  readonly backbone: ResNet;
  readonly head: Linear;
  private parameters: Parameter[];
  private velocity: Tensor[];
  private images: Tensor;
  private sumOfSquares: Tensor;

  constructor(readonly gpu: Gpu, seed = 0) {
    const rng = new Rng(seed);
    this.ctx = new Context(gpu);
    this.backbone = new ResNet(this.ctx, {
      arch: "resnet18",
      inChannels: REFERENCE.inChannels,
      smallImage: true,
      widths: REFERENCE.widths,
    }, rng);
    this.head = new Linear(this.ctx, "fc", this.backbone.featureDim, REFERENCE.outFeatures, rng);
    this.parameters = [...this.backbone.parameters(), ...this.head.parameters()];
    this.velocity = this.parameters.map((p) => gpu.zeros(p.value.shape));
    const { batch, imageSize, inChannels } = REFERENCE;
    const imageShape = [batch, imageSize, imageSize, inChannels];
    this.images = gpu.upload(rng.normals(batch * imageSize * imageSize * inChannels), imageShape);
    this.sumOfSquares = gpu.zeros([1]);
  }

  /** Encode one step: forward, loss, backward, SGD (nothing read back). */
  encode(): void {
    const gpu = this.gpu;
    zeroGrads(gpu, this.backbone);
    zeroGrads(gpu, this.head);
    const outputs = this.head.forward(this.backbone.forward(this.images));
    // loss = sum(y²) / (N·D); its gradient 2y / (N·D). The division happens after readback.
    reduceAll(gpu, outputs, "sumsq", this.sumOfSquares);
    const dOutputs = this.ctx.activation(outputs.shape);
    scale(gpu, outputs, 2 / outputs.size, dOutputs);
    this.backbone.backward(this.head.backward(dOutputs)!);
    this.parameters.forEach((p, i) => {
      sgdStep(gpu, p.value, p.grad, this.velocity[i], {
        lr: REFERENCE.lr,
        momentum: REFERENCE.momentum,
        weightDecay: 0,
      });
    });
    this.ctx.releaseActivations();
  }

  /** One step with the loss read back. */
  async step(): Promise<number> {
    this.encode();
    const [sum] = await this.sumOfSquares.read();
    return sum / (REFERENCE.batch * REFERENCE.outFeatures);
  }
}

/** The same model and step in tfjs: tf ops, `tf.train.momentum`, loss read back with `data()`. */
export function tfjsReferenceStep(
  tf: Tfjs,
  batch: number = REFERENCE.batch,
): { step: () => Promise<number>; dispose: () => void } {
  const variables: Variable[] = [];
  let seed = 1;
  // Every trainable tensor becomes a tf.Variable, typed as the tensor it was made from.
  const variable = <T extends TfTensor>(initial: T): T => {
    const v = tf.variable(initial);
    initial.dispose(); // the variable holds its own reference to the data
    variables.push(v);
    return v as TfTensor as T;
  };
  const convWeight = (k: number, cin: number, cout: number) =>
    variable(
      tf.randomNormal([k, k, cin, cout], 0, Math.sqrt(2 / (k * k * cin)), "float32", seed++),
    ) as Tensor4D;
  const batchNorm = (channels: number) => ({
    gamma: variable(tf.ones([channels]) as Tensor1D),
    beta: variable(tf.zeros([channels]) as Tensor1D),
  });
  type Bn = ReturnType<typeof batchNorm>;
  // Training-mode BatchNorm over N, H, W (biased batch variance, as PyTorch normalises). Running
  // statistics are not kept: a few [C]-sized ops per layer, nothing next to the convolutions.
  const applyBn = (x: Tensor4D, bn: Bn): Tensor4D => {
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    return tf.batchNorm4d(x, mean as Tensor1D, variance as Tensor1D, bn.beta, bn.gamma, 1e-5);
  };
  interface Block {
    stride: 1 | 2;
    conv1: Tensor4D;
    bn1: Bn;
    conv2: Tensor4D;
    bn2: Bn;
    downsample?: { conv: Tensor4D; bn: Bn };
  }
  const [stemWidth] = REFERENCE.widths;
  const stem = { conv: convWeight(3, REFERENCE.inChannels, stemWidth), bn: batchNorm(stemWidth) };
  const blocks: Block[] = [];
  let inC: number = stemWidth;
  REFERENCE.widths.forEach((planes, stage) => {
    for (let i = 0; i < 2; i++) {
      const stride = i === 0 && stage > 0 ? 2 : 1;
      blocks.push({
        stride,
        conv1: convWeight(3, inC, planes),
        bn1: batchNorm(planes),
        conv2: convWeight(3, planes, planes),
        bn2: batchNorm(planes),
        downsample: stride !== 1 || inC !== planes
          ? { conv: convWeight(1, inC, planes), bn: batchNorm(planes) }
          : undefined,
      });
      inC = planes;
    }
  });
  const bound = 1 / Math.sqrt(inC);
  const fcWeight = variable(tf.randomUniform([inC, REFERENCE.outFeatures], -bound, bound));
  const fcBias = variable(tf.randomUniform([REFERENCE.outFeatures], -bound, bound));

  const forward = (images: Tensor4D): TfTensor => {
    let h = tf.relu(applyBn(tf.conv2d(images, stem.conv, 1, 1), stem.bn));
    for (const b of blocks) {
      const c1 = tf.conv2d(h, b.conv1, b.stride, 1);
      const h1 = tf.relu(applyBn(c1, b.bn1));
      const branch = applyBn(tf.conv2d(h1, b.conv2, 1, 1), b.bn2);
      const shortcut = b.downsample
        ? applyBn(
          tf.conv2d(h, b.downsample.conv, b.stride, 0),
          b.downsample.bn,
        )
        : h;
      h = tf.relu(tf.add(branch, shortcut));
    }
    const pooled = tf.mean(h, [1, 2]);
    return tf.add(tf.matMul(pooled, fcWeight), fcBias);
  };

  const { imageSize, inChannels } = REFERENCE;
  const images = tf.randomNormal([batch, imageSize, imageSize, inChannels], 0, 1, "float32", 0);
  const optimizer = tf.train.momentum(REFERENCE.lr, REFERENCE.momentum);
  return {
    step: async () => {
      const loss = optimizer.minimize(
        () => tf.mean(tf.square(forward(images as Tensor4D))) as Scalar,
        true,
        variables,
      )!;
      const [value] = await loss.data();
      loss.dispose();
      return value;
    },
    dispose: () => {
      optimizer.dispose();
      tf.dispose([images, ...variables]);
    },
  };
}

/**
 * Wall milliseconds of each call of `step` after one untimed warm-up call; every loss it returns
 * must be finite (a diverged step would time something else).
 */
async function stepTimes(
  what: string,
  step: () => Promise<number>,
  timed: number,
): Promise<number[]> {
  const check = (loss: number) => {
    if (!Number.isFinite(loss)) throw new Error(`${what}: the loss is ${loss}`);
  };
  check(await step()); // compiles pipelines, fills the buffer pool
  const ms: number[] = [];
  for (let i = 0; i < timed; i++) {
    const start = performance.now();
    const loss = await step();
    ms.push(performance.now() - start);
    check(loss);
  }
  return ms;
}

/** "min-max ms" of step times (a wide range says the shared machine was busy). */
function msRange(ms: number[]): string {
  return `${Math.min(...ms).toFixed(0)}-${Math.max(...ms).toFixed(0)} ms`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function perStep(ms: number, images: number) {
  return { ms, perSecond: images / (ms / 1000) };
}

/** What a PyTorch peer script reported, or why it did not run. */
type TorchOutcome =
  | { seconds: number; stepSeconds: number[]; threads: number; version: string }
  | { notMeasured: string };

/** Lines of a byte stream (the PyTorch peer's stdout). */
async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
    }
  }
  if (buffer) yield buffer;
}

/** Resolve `promise`, or reject after `ms` naming `what`. */
function timeLimit<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/**
 * A PyTorch peer script run with `--serve`: warmed up, it times one step per request, so its
 * steps interleave with ours and both see the same load on a shared machine.
 */
class TorchPeer {
  private constructor(
    private child: Deno.ChildProcess,
    private lines: AsyncGenerator<string>,
    private input: WritableStreamDefaultWriter<Uint8Array>,
    readonly threads: number,
    readonly version: string,
  ) {}

  /** Start `bench/<script>` and wait for its warm-up; or say why it cannot run. */
  static async start(script: string, args: string[]): Promise<TorchPeer | { notMeasured: string }> {
    const path = new URL(`./${script}`, import.meta.url).pathname;
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command("/usr/bin/python3", {
        args: [path, ...args, "--threads", String(navigator.hardwareConcurrency), "--serve"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { notMeasured: "python3 missing" };
      return { notMeasured: `PyTorch script did not start: ${(e as Error).message}` };
    }
    const lines = readLines(child.stdout);
    const input = child.stdin.getWriter();
    let first: IteratorResult<string>;
    try {
      first = await timeLimit(lines.next(), TORCH_TIMEOUT_MS, "the PyTorch warm-up");
    } catch (e) {
      child.kill();
      await child.status;
      return { notMeasured: (e as Error).message };
    }
    const ready = first.done ? undefined : parseJson(first.value);
    if (!ready || ready.ready !== true) {
      await input.close().catch(() => {});
      const status = await child.status;
      if (status.code === 3) return { notMeasured: "python3-torch missing" };
      const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
      const why = stderr.trim().split("\n").at(-1) ?? "";
      return { notMeasured: `PyTorch script failed (exit ${status.code}): ${why}` };
    }
    return new TorchPeer(child, lines, input, Number(ready.threads), String(ready.torch));
  }

  /** Seconds of one PyTorch step. */
  async step(): Promise<number> {
    await this.input.write(new TextEncoder().encode("step\n"));
    const line = await timeLimit(this.lines.next(), TORCH_TIMEOUT_MS, "a PyTorch step");
    const reply = line.done ? undefined : parseJson(line.value);
    if (typeof reply?.seconds !== "number") {
      throw new Error(`the PyTorch peer answered ${line.done ? "nothing" : line.value}`);
    }
    return reply.seconds;
  }

  async close(): Promise<void> {
    await this.input.close().catch(() => {});
    await this.child.stderr.cancel().catch(() => {});
    await this.child.status;
  }
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Our step and the PyTorch peer's, one step each in turn after a warm-up of each, `timed` times:
 * our step times (ms) and PyTorch's outcome. Without the peer, just our steps.
 */
async function interleavedWithTorch(
  what: string,
  step: () => Promise<number>,
  script: string,
  args: string[] | { notMeasured: string },
  timed: number,
): Promise<{ ours: number[]; torch: TorchOutcome }> {
  const peer = Array.isArray(args) ? await TorchPeer.start(script, args) : args;
  if (!(peer instanceof TorchPeer)) {
    return { ours: await stepTimes(what, step, timed), torch: peer };
  }
  const check = (loss: number) => {
    if (!Number.isFinite(loss)) throw new Error(`${what}: the loss is ${loss}`);
  };
  const ours: number[] = [];
  const torchSeconds: number[] = [];
  try {
    check(await step()); // compiles pipelines, fills the buffer pool (PyTorch warmed up already)
    for (let i = 0; i < timed; i++) {
      const start = performance.now();
      const loss = await step();
      ours.push(performance.now() - start);
      check(loss);
      torchSeconds.push(await peer.step());
    }
  } catch (e) {
    await peer.close();
    if (ours.length === timed) {
      return { ours, torch: { notMeasured: `PyTorch step failed: ${(e as Error).message}` } };
    }
    throw e;
  }
  await peer.close();
  return {
    ours,
    torch: {
      seconds: median(torchSeconds),
      stepSeconds: torchSeconds,
      threads: peer.threads,
      version: peer.version,
    },
  };
}

/**
 * The row comparing our step (`oursMs`) with a PyTorch outcome: ratio = PyTorch time / ours,
 * or "not measured" with the reason.
 */
function torchRow(
  label: string,
  ours: { ms: number; perSecond?: number },
  images: number,
  torch: TorchOutcome,
  oursTimes: number[],
): BenchRow {
  const timedSteps = oursTimes.length;
  const row: BenchRow = { part: "step", case: `${label} vs PyTorch CPU`, ours };
  if ("seconds" in torch) {
    row.pytorch = perStep(torch.seconds * 1000, images);
    row.ratio = (torch.seconds * 1000) / ours.ms;
    const perSecond = (images / torch.seconds).toFixed(1);
    const range = msRange(torch.stepSeconds.map((t) => t * 1000));
    // Load from other processes only adds time: the fastest steps bound what each can do.
    const fastestTorch = Math.min(...torch.stepSeconds) * 1000;
    const fastestOurs = Math.min(...oursTimes);
    row.note =
      `peer is PyTorch ${torch.version} CPU, ${torch.threads} threads, steps interleaved ` +
      `with ours: ${(torch.seconds * 1000).toFixed(0)} ms per step (${perSecond}/s, median of ` +
      `${timedSteps}, range ${range}); ratio = PyTorch time / ours; fastest steps ` +
      `${fastestTorch.toFixed(0)} vs ${fastestOurs.toFixed(0)} ms (${
        (fastestTorch / fastestOurs).toFixed(2)
      }x)`;
  } else {
    row.note = `PyTorch CPU not measured (${torch.notMeasured})`;
  }
  return row;
}

/** A preset's model, its SSL step over random views, and the images per step. */
function sslPresetStep(
  gpu: Gpu,
  preset: BenchPreset,
): { step: () => Promise<number>; images: number; label: string } {
  const config = sslModelConfig(preset, 1);
  const { momentum, weightDecay, eta } = preset;
  const model = new SslModel(gpu, config, preset.batch, preset.seed, {
    momentum,
    weightDecay,
    eta,
  });
  const rng = new Rng(1);
  const viewShape = [preset.batch, preset.imageSize, preset.imageSize, 1];
  const viewSize = viewShape.reduce((a, b) => a * b, 1);
  const microBatches = Array.from({ length: preset.accum }, () => ({
    view1: gpu.upload(rng.normals(viewSize), viewShape),
    view2: gpu.upload(rng.normals(viewSize), viewShape),
  }));
  const lossOut = gpu.zeros([model.lossSlots(preset.accum)]);
  const label = `SSL step, ${preset.preset}: ${preset.arch} ` +
    `${preset.widths.join("/")} ${preset.imageSize}x${preset.imageSize}x1, heads ` +
    `${preset.projectorHidden}/${preset.projectorOut}, batch ${preset.batch}x${preset.accum}, ` +
    `${preset.loss.kind} loss, LARS + EMA, loss read back`;
  return {
    step: async () => {
      model.step(microBatches, preset.lr, preset.emaBase, lossOut);
      const losses = await lossOut.read();
      return losses[0];
    },
    images: preset.batch * preset.accum,
    label,
  };
}

/**
 * Arguments of bench/torch_ssl_step.py for a preset, or why PyTorch cannot run the same step
 * (the script implements the resnet18 small-image triplet step without accumulation).
 */
function torchSslArgs(preset: BenchPreset): string[] | { notMeasured: string } {
  if (preset.arch !== "resnet18" || !preset.smallImage || preset.accum !== 1) {
    return {
      notMeasured: "the PyTorch peer covers resnet18 small-image steps without accumulation",
    };
  }
  if (preset.loss.kind !== "triplet") {
    return { notMeasured: `the PyTorch peer has the triplet loss, not ${preset.loss.kind}` };
  }
  const window = deputyWindow(preset.loss, preset.batch);
  return [
    ["--batch", preset.batch],
    ["--widths", preset.widths.join(",")],
    ["--image-size", preset.imageSize],
    ["--projector-hidden", preset.projectorHidden],
    ["--projector-out", preset.projectorOut],
    ["--predictor-hidden", preset.predictorHidden],
    ["--window", window.join(",")],
    ["--gamma", preset.loss.gamma ?? LOSS_DEFAULTS.gamma],
    ["--margin", preset.loss.margin ?? LOSS_DEFAULTS.margin],
    ["--lr", preset.lr],
    ["--momentum", preset.momentum],
    ["--weight-decay", preset.weightDecay],
    ["--eta", preset.eta],
    ["--ema", preset.emaBase],
  ].flatMap(([flag, value]) => [String(flag), String(value)]);
}

/** Kernel dispatches one call of `step` encodes (counted by a dispatch observer). */
async function dispatchesPerStep(gpu: Gpu, step: () => Promise<number>): Promise<number> {
  let count = 0;
  const stop = gpu.observeDispatches(() => count++);
  try {
    await step();
  } finally {
    stop();
  }
  return count;
}

/**
 * The SSL step of a preset: ours (median of `timedSteps` after a warm-up, and its dispatch
 * count), then PyTorch's on the same CPU in the same run.
 */
export async function sslRows(
  gpu: Gpu,
  preset: BenchPreset,
  timedSteps: number,
  profile?: ProfileMode | "auto",
): Promise<BenchRow[]> {
  const ssl = sslPresetStep(gpu, preset);
  const args = torchSslArgs(preset);
  const measured = await interleavedWithTorch(
    "SSL step",
    ssl.step,
    "torch_ssl_step.py",
    args,
    timedSteps,
  );
  const sslTimes = measured.ours;
  const sslMs = median(sslTimes);
  const dispatches = await dispatchesPerStep(gpu, ssl.step);
  const ours = perStep(sslMs, ssl.images);
  const oursRow: BenchRow = {
    part: "step",
    case: ssl.label,
    ours,
    dispatches,
    note: `median of ${timedSteps} steps (range ${msRange(sslTimes)}); ${dispatches} dispatches ` +
      "per step; images/s counts the " +
      `${ssl.images} images (two views each) of one optimizer step; views are random tensors ` +
      "(augmentation is in the data part)",
  };
  const rows = [
    oursRow,
    torchRow(`SSL step, ${preset.preset}`, ours, ssl.images, measured.torch, sslTimes),
  ];
  if (profile) {
    rows.push(await profileStep(gpu, `SSL step, ${preset.preset}`, ssl.step, ssl.images, profile));
  }
  return rows;
}

/** The preset a user with more time would pick: batch 256, widths doubled (16/32/64/128). */
export function widerPreset(preset: BenchPreset): BenchPreset {
  return {
    ...preset,
    preset: `${preset.preset} at batch 256, widths 16/32/64/128`,
    batch: 256,
    widths: [16, 32, 64, 128],
  };
}

/** Profile one (already warmed-up) reference step kernel by kernel. */
export function profileReferenceStep(
  reference: ReferenceStep,
  mode: ProfileMode | "auto" = "auto",
): Promise<ProfiledRow> {
  return profileStep(
    reference.gpu,
    "reference step",
    () => reference.step(),
    REFERENCE.batch,
    mode,
  );
}

/** Profile one (already warmed-up) call of a step kernel by kernel. */
async function profileStep(
  gpu: Gpu,
  what: string,
  step: () => Promise<number>,
  images: number,
  mode: ProfileMode | "auto",
): Promise<ProfiledRow> {
  await gpu.sync();
  const profiler = new KernelProfiler(mode);
  const start = performance.now();
  profiler.start(gpu);
  await step();
  const wallMs = performance.now() - start;
  const profile = await profiler.stop();
  const top = profile.rows.slice(0, 3)
    .map((r) => `${r.caller} (${r.kernel}) ${(100 * r.share).toFixed(0)}%`).join(", ");
  const dispatches = profile.rows.reduce((n, r) => n + r.calls, 0);
  return {
    part: "step",
    case: `${what} under the kernel profiler (${profile.mode})`,
    ours: { ms: wallMs, perSecond: images / (wallMs / 1000) },
    note: `${dispatches} dispatches, ${profile.kernelMs.toFixed(0)} ms in kernels; top: ${top}`,
    profile,
  };
}

/** The reference step (ours, tfjs, PyTorch), the SSL preset step, and the optional profile. */
export async function run(ctx: BenchContext): Promise<BenchRow[]> {
  const gpu = ctx.gpu;
  const rows: BenchRow[] = [];
  const timedSteps = ctx.quick ? 2 : 5;
  const { batch, widths, imageSize, inChannels } = REFERENCE;

  const reference = new ReferenceStep(gpu);
  const referenceRun = await interleavedWithTorch(
    "reference step",
    () => reference.step(),
    "torch_reference_step.py",
    [],
    timedSteps,
  );
  const referenceTimes = referenceRun.ours;
  const oursMs = median(referenceTimes);
  const ours = perStep(oursMs, batch);
  const referenceCase = `reference: resnet18 small ${widths.join("/")} ${imageSize}x${imageSize}x` +
    `${inChannels}, batch ${batch}, fwd+bwd+SGD+loss readback`;
  const oursNote = `ours: median of ${timedSteps} steps (range ${msRange(referenceTimes)}); ` +
    `target <= ${TARGET_SECONDS} s ` +
    `(PyTorch CPU measured ${PYTORCH_BASELINE_SECONDS} s here)`;
  const tfjsRow: BenchRow = { part: "step", case: referenceCase, ours };
  if (!ctx.withTfjs) {
    tfjsRow.note = `${oursNote}; tfjs not run (--no-tfjs)`;
  } else if (ctx.quick) {
    tfjsRow.note = `${oursNote}; tfjs skipped in --quick (about 45 s per step)`;
  } else {
    const tf = await loadTfjs();
    const peer = tfjsReferenceStep(tf);
    // One step after one warm-up: tfjs takes tens of seconds per step on the CPU adapter.
    const [tfjsMs] = await stepTimes("tfjs reference step", peer.step, 1);
    peer.dispose();
    tfjsRow.tfjs = perStep(tfjsMs, batch);
    tfjsRow.note = `${oursNote}; tfjs: one step after one warm-up`;
  }
  rows.push(withRatio(tfjsRow));

  rows.push(torchRow("reference step", ours, batch, referenceRun.torch, referenceTimes));

  const profile = !ctx.flags.profile
    ? undefined
    : ctx.flags.profile === "sync-replay" || ctx.flags.profile === "timestamps"
    ? ctx.flags.profile
    : "auto";
  if (ctx.preset) {
    rows.push(...await sslRows(gpu, ctx.preset, timedSteps, profile));
    if (!ctx.quick) rows.push(...await sslRows(gpu, widerPreset(ctx.preset), timedSteps));
  }

  if (profile) rows.push(await profileReferenceStep(reference, profile));
  return rows;
}

if (import.meta.main) {
  const gpu = await acquireGpu({ log: true });
  const quick = Deno.args.includes("--quick");
  const withTfjs = !Deno.args.includes("--no-tfjs");
  const profileArg = Deno.args.find((a) => a === "--profile" || a.startsWith("--profile="));
  const profile = profileArg === undefined
    ? false
    : profileArg.includes("=")
    ? profileArg.slice("--profile=".length)
    : true;
  const result = await run({ gpu, quick, withTfjs, flags: { profile } });
  console.log(formatTable(result));
  for (const row of result) {
    if (hasProfile(row)) console.log(`\n${formatProfile(row.profile, row.case)}`);
  }
}
