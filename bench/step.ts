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
 * - `--profile`: the per-kernel time breakdown of one reference step (runtime/profiler.ts),
 *   returned as an extra row carrying the profile; `tasks/bench.ts` prints its table.
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
  | { seconds: number; threads: number; version: string }
  | { notMeasured: string };

/**
 * Run one of our PyTorch peer scripts (`bench/<script>`) with the system Python, on as many
 * threads as this machine has cores (optional: CI has no torch; exit status 3 says so).
 */
async function runTorchScript(script: string, args: string[]): Promise<TorchOutcome> {
  const path = new URL(`./${script}`, import.meta.url).pathname;
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("/usr/bin/python3", {
      args: [path, ...args, "--threads", String(navigator.hardwareConcurrency)],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(TORCH_TIMEOUT_MS),
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { notMeasured: "python3 missing" };
    return { notMeasured: `PyTorch script did not finish: ${(e as Error).message}` };
  }
  const decoder = new TextDecoder();
  const lines = decoder.decode(output.stdout).trim().split("\n");
  if (output.code === 3) return { notMeasured: "python3-torch missing" };
  if (output.signal) {
    return {
      notMeasured: `PyTorch script stopped by ${output.signal} (time limit ${
        TORCH_TIMEOUT_MS / 1000
      } s)`,
    };
  }
  if (!output.success) {
    const why = decoder.decode(output.stderr).trim().split("\n").at(-1) ?? "";
    return { notMeasured: `PyTorch script failed (exit ${output.code}): ${why}` };
  }
  try {
    const result = JSON.parse(lines.at(-1) ?? "") as {
      pytorchSecondsPerStep: number;
      threads: number;
      torch: string;
    };
    const seconds = result.pytorchSecondsPerStep;
    if (typeof seconds !== "number" || !(seconds > 0)) throw new Error("no time in the output");
    return { seconds, threads: result.threads, version: result.torch };
  } catch (e) {
    return { notMeasured: `PyTorch script printed no result: ${(e as Error).message}` };
  }
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
  timedSteps: number,
): BenchRow {
  const row: BenchRow = { part: "step", case: `${label} vs PyTorch CPU`, ours };
  if ("seconds" in torch) {
    row.pytorch = perStep(torch.seconds * 1000, images);
    row.ratio = (torch.seconds * 1000) / ours.ms;
    row.note = `peer is PyTorch ${torch.version} CPU, ${torch.threads} threads: ` +
      `${(torch.seconds * 1000).toFixed(0)} ms per step (${
        (images / torch.seconds).toFixed(1)
      }/s, ` +
      `median of ${timedSteps}); ratio = PyTorch time / ours`;
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
): Promise<BenchRow[]> {
  const ssl = sslPresetStep(gpu, preset);
  const sslMs = median(await stepTimes("SSL step", ssl.step, timedSteps));
  const dispatches = await dispatchesPerStep(gpu, ssl.step);
  const ours = perStep(sslMs, ssl.images);
  const oursRow: BenchRow = {
    part: "step",
    case: ssl.label,
    ours,
    dispatches,
    note: `median of ${timedSteps} steps; ${dispatches} dispatches per step; images/s counts the ` +
      `${ssl.images} images (two views each) of one optimizer step; views are random tensors ` +
      "(augmentation is in the data part)",
  };
  const args = torchSslArgs(preset);
  const torch = Array.isArray(args)
    ? await runTorchScript("torch_ssl_step.py", [...args, "--steps", String(timedSteps)])
    : args;
  return [oursRow, torchRow(`SSL step, ${preset.preset}`, ours, ssl.images, torch, timedSteps)];
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
export async function profileReferenceStep(
  reference: ReferenceStep,
  mode: ProfileMode | "auto" = "auto",
): Promise<ProfiledRow> {
  const gpu = reference.gpu;
  await gpu.sync();
  const profiler = new KernelProfiler(mode);
  const start = performance.now();
  profiler.start(gpu);
  await reference.step();
  const wallMs = performance.now() - start;
  const profile = await profiler.stop();
  const top = profile.rows.slice(0, 3)
    .map((r) => `${r.caller} (${r.kernel}) ${(100 * r.share).toFixed(0)}%`).join(", ");
  const dispatches = profile.rows.reduce((n, r) => n + r.calls, 0);
  return {
    part: "step",
    case: `reference step under the kernel profiler (${profile.mode})`,
    ours: { ms: wallMs, perSecond: REFERENCE.batch / (wallMs / 1000) },
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
  const oursMs = median(await stepTimes("reference step", () => reference.step(), timedSteps));
  const ours = perStep(oursMs, batch);
  const referenceCase = `reference: resnet18 small ${widths.join("/")} ${imageSize}x${imageSize}x` +
    `${inChannels}, batch ${batch}, fwd+bwd+SGD+loss readback`;
  const oursNote = `ours: median of ${timedSteps} steps; target <= ${TARGET_SECONDS} s ` +
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

  const torchSteps = ctx.quick ? 2 : 5;
  const torch = await runTorchScript("torch_reference_step.py", ["--steps", String(torchSteps)]);
  rows.push(torchRow("reference step", ours, batch, torch, torchSteps));

  if (ctx.preset) {
    rows.push(...await sslRows(gpu, ctx.preset, timedSteps));
    if (!ctx.quick) rows.push(...await sslRows(gpu, widerPreset(ctx.preset), timedSteps));
  }

  if (ctx.flags.profile) {
    const mode = ctx.flags.profile === "sync-replay" || ctx.flags.profile === "timestamps"
      ? ctx.flags.profile
      : "auto";
    rows.push(await profileReferenceStep(reference, mode));
  }
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
    if (hasProfile(row)) console.log(`\n${formatProfile(row.profile, "reference step")}`);
  }
}
