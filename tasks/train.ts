/**
 * `deno task train [flags]`: self-supervised pretraining with the truncated triplet loss
 * (or a baseline), writing a run directory: config.json, metrics.jsonl, checkpoint.safetensors,
 * summary.json and curves.svg. `--help` lists the flags.
 */
import { parseArgs } from "node:util";
import { acquireGpu, type Gpu, type Tensor } from "../runtime/gpu.ts";
import { type Dataset, DatasetError, loadDataset } from "../data/dataset.ts";
import { Augmenter } from "../data/augment.ts";
import { type Batch, BatchLoader } from "../data/loader.ts";
import { type AugmentConfig, imagenetViews, smallDataViews } from "../data/augment_config.ts";
import { type MicroBatch, SslModel, type SslModelConfig } from "../models/ssl.ts";
import { momentumAt } from "../kernels/ema.ts";
import { learningRateAt } from "../models/schedule.ts";
import { parameterCount } from "../models/resnet.ts";
import { checkBatchFits } from "../models/memory.ts";
import { loadCheckpoint, NonFiniteError, saveCheckpoint } from "../models/checkpoint.ts";
import {
  evaluateBackbone,
  type EvaluationOptions,
  type EvaluationResult,
} from "../models/evaluate.ts";
import { bernoulliK } from "../models/bernoulli.ts";
import {
  finiteNumber,
  formatDuration,
  nonNegativeInt,
  oneOf,
  positiveInt,
  Progress,
  runMain,
  UserError,
} from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";
import { renderCurves } from "./plot.ts";

const LOSSES = ["triplet", "rank-k", "median", "hardest", "byol", "infonce"] as const;
const DATASETS = ["fashion-mnist", "mnist", "cifar10", "cifar100", "folder"] as const;
const ARCHS = ["resnet18", "resnet34", "resnet50"] as const;

const HELP = `usage: deno task train [flags]

Self-supervised pretraining with the truncated triplet loss (Wang et al., ICCV 2021).

  --preset NAME        ${Object.keys(PRESETS).join(" | ")} (default small)
  --arch NAME          ${ARCHS.join(" | ")}
  --dataset NAME       ${DATASETS.join(" | ")}
  --data DIR           dataset directory (folder: one sub-folder per class)
  --image-size N       training resolution
  --epochs N           epochs over the training split
  --steps N            stop after N optimizer steps (overrides --epochs; 0 evaluates the
                       untrained network: the random-init baseline)
  --batch N            images per micro-batch (negatives come from one micro-batch)
  --accum N            micro-batches per optimizer step (gradient accumulation)
  --lr X               base learning rate
  --warmup-epochs X    linear learning-rate warm-up length, in epochs
  --ema-base X         target EMA momentum at step 0 (rises to 1 on a cosine; in [0, 1))
  --crop-scale X       smallest area fraction of the random resized crop (0 < X <= 1)
  --loss NAME          ${LOSSES.join(" | ")}
  --window A,B         smoothed rank-k window of negatives (triplet; default 2,10)
  --k N                rank of the negative deputy (rank-k)
  --margin X           triplet margin M (default 100)
  --gamma X            weight of the positive distance (default 2)
  --temperature X      InfoNCE temperature (default 0.1)
  --seed N             seed for initialisation, data order and augmentation
  --out DIR            run directory (default runs/<preset>-<loss>-<seed>)
  --resume DIR         continue the run in DIR from its checkpoint
  --widths A,B,C,D     stage widths (torchvision: 64,128,256,512)
  --log-every N        optimizer steps between loss readbacks / log lines
  --eval-every N       kNN evaluation every N steps (0: only at the end)
  --eval-bank N        training images in the kNN bank and probe set (0: all)
  --eval-test N        test images evaluated (0: all)
  --probe-epochs N     linear probe epochs at the end
  --no-probe           skip the final linear probe
  --checkpoint-every N also checkpoint every N steps (default: every epoch and at the end)
  --stop-after N       act as if interrupted after step N (checkpoint, exit 130)
  --debug-nan-at N     (testing) poison a weight with NaN before step N to exercise the NaN stop
  --profile            print a per-kernel time breakdown of one step, then train
  --help               this text`;

interface Flags {
  [key: string]: string | boolean | undefined;
}

function parseFlags(args: string[]): Flags {
  try {
    return parseArgs({
      args,
      options: {
        preset: { type: "string" },
        arch: { type: "string" },
        dataset: { type: "string" },
        data: { type: "string" },
        "image-size": { type: "string" },
        epochs: { type: "string" },
        steps: { type: "string" },
        batch: { type: "string" },
        accum: { type: "string" },
        lr: { type: "string" },
        "warmup-epochs": { type: "string" },
        "ema-base": { type: "string" },
        "crop-scale": { type: "string" },
        loss: { type: "string" },
        window: { type: "string" },
        k: { type: "string" },
        margin: { type: "string" },
        gamma: { type: "string" },
        temperature: { type: "string" },
        seed: { type: "string" },
        out: { type: "string" },
        resume: { type: "string" },
        "eval-every": { type: "string" },
        widths: { type: "string" },
        "log-every": { type: "string" },
        "eval-bank": { type: "string" },
        "eval-test": { type: "string" },
        "probe-epochs": { type: "string" },
        "stop-after": { type: "string" },
        "checkpoint-every": { type: "string" },
        "debug-nan-at": { type: "string" },
        "no-probe": { type: "boolean" },
        profile: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UserError(`${(e as Error).message} (see --help)`);
  }
}

/** The preset with every flag applied; validated. */
export function resolveConfig(flags: Flags): TrainConfig {
  const presetName = (flags.preset as string | undefined) ?? "small";
  const preset = PRESETS[presetName];
  if (!preset) {
    throw new UserError(
      `unknown preset ${JSON.stringify(presetName)}: choose ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  const config: TrainConfig = structuredClone(preset);
  config.overrides = Object.fromEntries(
    Object.entries(flags).filter(([name, value]) =>
      value !== undefined && !["preset", "out", "help", "profile"].includes(name)
    ),
  ) as Record<string, string | boolean>;
  const str = (name: string) => flags[name] as string | undefined;
  config.arch = oneOf("arch", str("arch"), ARCHS) ?? config.arch;
  config.dataset = oneOf("dataset", str("dataset"), DATASETS) ?? config.dataset;
  config.data = str("data") ?? config.data;
  config.imageSize = positiveInt("image-size", str("image-size")) ?? config.imageSize;
  config.epochs = positiveInt("epochs", str("epochs")) ?? config.epochs;
  if (str("epochs") !== undefined) config.steps = undefined;
  config.steps = nonNegativeInt("steps", str("steps")) ?? config.steps;
  const batch = positiveInt("batch", str("batch"));
  if (batch !== undefined && batch !== config.batch && str("lr") === undefined) {
    config.lr = config.lr * batch / config.batch; // METHOD.md's linear scaling
  }
  config.batch = batch ?? config.batch;
  config.accum = positiveInt("accum", str("accum")) ?? config.accum;
  config.lr = finiteNumber("lr", str("lr")) ?? config.lr;
  config.warmupEpochs = finiteNumber("warmup-epochs", str("warmup-epochs")) ?? config.warmupEpochs;
  if (!(config.warmupEpochs >= 0)) {
    throw new UserError(`--warmup-epochs must be >= 0, got ${config.warmupEpochs}`);
  }
  config.emaBase = finiteNumber("ema-base", str("ema-base")) ?? config.emaBase;
  if (!(config.emaBase >= 0 && config.emaBase < 1)) {
    throw new UserError(`--ema-base must be in [0, 1), got ${config.emaBase}`);
  }
  config.cropScaleMin = finiteNumber("crop-scale", str("crop-scale")) ?? config.cropScaleMin;
  if (config.cropScaleMin !== undefined && !(config.cropScaleMin > 0 && config.cropScaleMin <= 1)) {
    throw new UserError(`--crop-scale must be in (0, 1], got ${config.cropScaleMin}`);
  }
  config.seed = nonNegativeInt("seed", str("seed")) ?? config.seed;
  config.evalEvery = nonNegativeInt("eval-every", str("eval-every")) ?? config.evalEvery;
  config.logEvery = positiveInt("log-every", str("log-every")) ?? config.logEvery;
  config.knnBankSize = nonNegativeInt("eval-bank", str("eval-bank")) ?? config.knnBankSize;
  config.evalTestSize = nonNegativeInt("eval-test", str("eval-test")) ?? config.evalTestSize;
  config.probeEpochs = nonNegativeInt("probe-epochs", str("probe-epochs")) ?? config.probeEpochs;
  if (flags["no-probe"]) config.probeEpochs = 0;
  if (str("widths") !== undefined) {
    const widths = str("widths")!.split(",").map(Number);
    if (widths.length !== 4 || !widths.every((w) => Number.isInteger(w) && w >= 1)) {
      throw new UserError(`--widths must be four positive integers A,B,C,D; got ${str("widths")}`);
    }
    config.widths = widths as [number, number, number, number];
  }
  const loss = { ...config.loss };
  loss.kind = oneOf("loss", str("loss"), LOSSES) ?? loss.kind;
  if (str("window") !== undefined) {
    const parts = str("window")!.split(",").map(Number);
    if (
      parts.length !== 2 || !parts.every((v) => Number.isInteger(v) && v >= 1) ||
      parts[0] > parts[1]
    ) {
      throw new UserError(`--window must be A,B with 1 <= A <= B, got ${str("window")}`);
    }
    loss.window = [parts[0], parts[1]];
  }
  loss.k = positiveInt("k", str("k")) ?? loss.k;
  loss.margin = finiteNumber("margin", str("margin")) ?? loss.margin;
  loss.gamma = finiteNumber("gamma", str("gamma")) ?? loss.gamma;
  loss.temperature = finiteNumber("temperature", str("temperature")) ?? loss.temperature;
  if (loss.temperature !== undefined && !(loss.temperature > 0)) {
    throw new UserError(`--temperature must be > 0, got ${loss.temperature}`);
  }
  if (loss.kind === "rank-k" && loss.k === undefined) loss.k = 2;
  if (config.batch < 2) {
    throw new UserError("--batch must be at least 2 (BatchNorm and negatives need two images)");
  }
  const negatives = config.batch - 1;
  if (loss.kind === "triplet" && loss.window && loss.window[1] > negatives) {
    if (str("window") !== undefined) {
      throw new UserError(
        `--window ${loss.window} needs ${loss.window[1]} negatives, but a batch of ` +
          `${config.batch} has ${negatives}: use a larger --batch or a smaller window`,
      );
    }
    // The preset's window does not fit a tiny batch (e.g. a smoke test): shrink it, and say so.
    const shrunk: [number, number] = [Math.min(loss.window[0], negatives), negatives];
    config.deviations.push(
      `window [${loss.window}] shrunk to [${shrunk}]: a batch of ${config.batch} has only ` +
        `${negatives} negatives per image`,
    );
    loss.window = shrunk;
  }
  config.loss = loss;
  if (config.dataset === "folder" && !config.data) {
    throw new UserError("--dataset folder needs --data DIR (one sub-folder of images per class)");
  }
  return config;
}

/** The run's augmentation: the preset's recipe with its crop scale applied. */
export function augmentConfig(config: TrainConfig): AugmentConfig {
  const views = config.augment === "imagenet" ? imagenetViews() : smallDataViews(config.imageSize);
  if (config.cropScaleMin !== undefined) {
    for (const view of views.views) view.crop.scale[0] = config.cropScaleMin;
  }
  return views;
}

function modelConfig(config: TrainConfig, channels: number): SslModelConfig {
  return {
    backbone: {
      arch: config.arch,
      inChannels: channels,
      smallImage: config.smallImage,
      widths: config.widths,
    },
    projectorHidden: config.projectorHidden,
    projectorOut: config.projectorOut,
    predictorHidden: config.predictorHidden,
    loss: config.loss,
  };
}

/** A split of the configured dataset; a dataset problem becomes a one-line user error. */
export async function loadSplit(
  config: TrainConfig,
  split: "train" | "test",
): Promise<Dataset> {
  try {
    return await loadDataset(config.dataset, {
      dir: config.data,
      split,
      imageSize: config.imageSize,
    });
  } catch (e) {
    if (e instanceof DatasetError) throw new UserError(e.message);
    throw e;
  }
}

/** One line of metrics.jsonl. */
type MetricsLine = Record<string, number | string | null>;

async function appendLine(path: string, line: MetricsLine): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(line) + "\n", { append: true });
}

async function readMetrics(path: string): Promise<MetricsLine[]> {
  try {
    const text = await Deno.readTextFile(path);
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

/** Keep only metrics lines up to `step` (a resumed run rewrites what came after). */
async function truncateMetrics(path: string, step: number): Promise<void> {
  const kept = (await readMetrics(path)).filter((m) => (m.step as number) <= step);
  await Deno.writeTextFile(path, kept.map((m) => JSON.stringify(m) + "\n").join(""));
}

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args);
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const resumeDir = flags.resume as string | undefined;
  let config: TrainConfig;
  if (resumeDir) {
    let saved: string;
    try {
      saved = await Deno.readTextFile(`${resumeDir}/config.json`);
    } catch {
      throw new UserError(`--resume ${resumeDir}: no config.json there (is it a run directory?)`);
    }
    config = JSON.parse(saved) as TrainConfig;
    // A resumed run may be extended; everything else stays as it was.
    config.steps = positiveInt("steps", flags.steps as string | undefined) ?? config.steps;
  } else {
    config = resolveConfig(flags);
  }
  const outDir = resumeDir ??
    (flags.out as string | undefined) ??
    `runs/${config.preset}-${config.loss.kind}-seed${config.seed}`;
  await Deno.mkdir(outDir, { recursive: true });
  const paths = {
    config: `${outDir}/config.json`,
    metrics: `${outDir}/metrics.jsonl`,
    checkpoint: `${outDir}/checkpoint.safetensors`,
    summary: `${outDir}/summary.json`,
    curves: `${outDir}/curves.svg`,
  };

  const gpu = await acquireGpu();
  const progress = new Progress();
  progress.log(gpu.describe());
  const train = await loadSplit(config, "train");
  const test = await loadSplit(config, "test");
  const model = modelConfig(config, train.channels);
  const memory = (() => {
    try {
      return checkBatchFits(
        model.backbone,
        config.batch,
        config.accum,
        config.imageSize,
        gpu.maxBindingBytes,
      );
    } catch (e) {
      throw new UserError((e as Error).message);
    }
  })();

  const imagesPerStep = config.batch * config.accum;
  const stepsPerEpoch = Math.floor(train.length / imagesPerStep);
  if (stepsPerEpoch < 1) {
    throw new UserError(
      `the training split has ${train.length} images, fewer than one step's ${imagesPerStep} ` +
        "(--batch x --accum): lower the batch",
    );
  }
  const totalSteps = config.steps ?? config.epochs * stepsPerEpoch;
  const warmupSteps = Math.round(config.warmupEpochs * stepsPerEpoch);
  const ssl = new SslModel(gpu, model, config.batch, config.seed);
  const negatives = config.batch - 1;
  let suggestedK: string;
  try {
    suggestedK = String(bernoulliK(train.classes, config.batch, 0.05));
  } catch {
    suggestedK = `none (too few negatives)`;
  }
  progress.log(
    [
      `preset ${config.preset}: ${config.arch} widths ${config.widths.join("/")}, ` +
      `${parameterCount(ssl.online.backbone).toLocaleString("en")} backbone parameters, ` +
      `${parameterCount(ssl.online).toLocaleString("en")} with heads`,
      `data ${config.dataset}: ${train.length} train / ${test.length} test images, ` +
      `${train.classes} classes, ${config.imageSize}px; batch ${config.batch} x accum ${config.accum}`,
      `loss ${config.loss.kind}${
        config.loss.kind === "triplet" ? ` window [${config.loss.window}]` : ""
      }; ` +
      `bernoulliK: with ${train.classes} classes and ${negatives} negatives, the smallest k whose ` +
      `deputy is a false negative with probability <= 0.05 is ${suggestedK}`,
      `memory estimate: ${
        (memory.stepBytes / 2 ** 20).toFixed(0)
      } MiB of activations per micro-batch, ` +
      `largest tensor ${
        (memory.largestTensorBytes / 2 ** 20).toFixed(1)
      } MiB (${memory.largestAt}); ` +
      `largest batch that fits one binding: ${memory.maxBatch}`,
      `${totalSteps} steps (${
        (totalSteps / stepsPerEpoch).toFixed(2)
      } epochs), run directory ${outDir}`,
      ...(config.deviations.length > 0
        ? ["departures from METHOD.md:", ...config.deviations.map((d) => `  - ${d}`)]
        : []),
      ...(Object.keys(config.overrides ?? {}).length > 0
        ? [`flags over the preset: ${JSON.stringify(config.overrides)}`]
        : []),
    ].join("\n"),
  );

  let startStep = 0;
  let wallBefore = 0;
  if (resumeDir) {
    const state = await loadCheckpoint(paths.checkpoint, ssl).catch((e) => {
      throw new UserError(`cannot resume from ${paths.checkpoint}: ${(e as Error).message}`);
    });
    startStep = state.step as number;
    wallBefore = (state.wallSeconds as number) ?? 0;
    await truncateMetrics(paths.metrics, startStep);
    progress.log(`resumed at step ${startStep}`);
  } else {
    await Deno.writeTextFile(paths.config, JSON.stringify(config, null, 1) + "\n");
    await Deno.writeTextFile(paths.metrics, "");
  }

  const augmenter = new Augmenter(gpu, augmentConfig(config), train, config.imageSize);
  if (!config.randomRescale) delete augmenter.config.rescale;
  // One loader step per micro-batch: each has its own shuffle slice and augmentation stream.
  const loader = new BatchLoader(gpu, train, {
    batchSize: config.batch,
    seed: config.seed,
    startStep: startStep * config.accum,
    augmenter,
  });

  const stopAfter = positiveInt("stop-after", flags["stop-after"] as string | undefined);
  const checkpointEvery = positiveInt(
    "checkpoint-every",
    flags["checkpoint-every"] as string | undefined,
  );
  const nanAt = positiveInt("debug-nan-at", flags["debug-nan-at"] as string | undefined);
  let interrupted: string | undefined;
  const onSignal = (name: string) => () => {
    interrupted = name;
  };
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [sig, handler] of signals) Deno.addSignalListener(sig, handler);

  let lastCheckpointStep: number | undefined = resumeDir ? startStep : undefined;
  const diverged = (step: number, why: string) =>
    new UserError(
      `training diverged at step ${step}: ${why}. ` +
        (lastCheckpointStep === undefined
          ? "No checkpoint had been written yet"
          : `The last good checkpoint (step ${lastCheckpointStep}) is kept in ${paths.checkpoint}`) +
        "; lower --lr or check the data",
      3,
    );
  const checkpoint = async (step: number, wallSeconds: number) => {
    try {
      await saveCheckpoint(paths.checkpoint, ssl, {
        step,
        epoch: step / stepsPerEpoch,
        wallSeconds,
        trainConfig: config,
      });
    } catch (e) {
      if (e instanceof NonFiniteError) throw diverged(step, e.message);
      throw e;
    }
    lastCheckpointStep = step;
  };

  const lossSlots = ssl.lossSlots(config.accum);
  let pendingLosses: { step: number; lr: number; ema: number; tensor: Tensor }[] = [];
  const started = performance.now();
  let imagesSinceLog = 0;
  let logClock = performance.now();
  const wall = () => wallBefore + (performance.now() - started) / 1000;
  const evaluate = (step: number, withProbe: boolean) =>
    evaluateAndLog(gpu, ssl, train, test, config, step, withProbe, paths.metrics, progress);

  for (let step = startStep; step < totalSteps; step++) {
    if (nanAt === step + 1) {
      const poisoned = ssl.online.parameters()[0].value;
      poisoned.write(new Float32Array(poisoned.size).fill(NaN));
    }
    const micro: Batch[] = [];
    for (let i = 0; i < config.accum; i++) micro.push(await loader.next());
    const lr = learningRateAt(step, totalSteps, config.lr, warmupSteps);
    const ema = momentumAt(step, totalSteps, config.emaBase);
    const lossOut = gpu.empty([lossSlots]);
    ssl.step(micro.map(toMicroBatch), lr, ema, config, lossOut);
    for (const m of micro) m.release();
    pendingLosses.push({ step: step + 1, lr, ema, tensor: lossOut });
    imagesSinceLog += imagesPerStep;
    const done = step + 1;
    const epochEnd = done % stepsPerEpoch === 0;
    const logNow = done % config.logEvery === 0 || done === totalSteps || epochEnd ||
      (checkpointEvery !== undefined && done % checkpointEvery === 0) ||
      interrupted !== undefined || done === stopAfter ||
      (config.evalEvery > 0 && done % config.evalEvery === 0);
    if (logNow) {
      const [norms, ...values] = await gpu.read([ssl.norms, ...pendingLosses.map((p) => p.tensor)]);
      if (!norms.every(Number.isFinite)) {
        for (const q of pendingLosses) q.tensor.release();
        throw diverged(done, "parameter or gradient norms are not finite");
      }
      const seconds = (performance.now() - logClock) / 1000;
      const imagesPerSecond = imagesSinceLog / seconds;
      for (let i = 0; i < pendingLosses.length; i++) {
        const p = pendingLosses[i];
        const loss = Array.from(values[i]).reduce((a, b) => a + b, 0) / config.accum;
        if (!Number.isFinite(loss)) {
          for (const q of pendingLosses) q.tensor.release();
          throw diverged(p.step, `the loss is ${loss}`);
        }
        await appendLine(paths.metrics, {
          step: p.step,
          epoch: +(p.step / stepsPerEpoch).toFixed(4),
          loss,
          lr: p.lr,
          ema: p.ema,
          imagesPerSecond: i === pendingLosses.length - 1 ? +imagesPerSecond.toFixed(2) : null,
          wallSeconds: +wall().toFixed(2),
        });
        p.tensor.release();
      }
      const lastLoss = Array.from(values[values.length - 1]).reduce((a, b) => a + b, 0) /
        config.accum;
      pendingLosses = [];
      const eta = (totalSteps - done) * (wall() - wallBefore) / Math.max(1, done - startStep);
      progress.update(
        `step ${done}/${totalSteps} ${progress.bar(done / totalSteps)} epoch ` +
          `${(done / stepsPerEpoch).toFixed(2)} loss ${lastLoss.toFixed(4)} ` +
          `${imagesPerSecond.toFixed(1)} img/s ETA ${formatDuration(eta)}`,
      );
      imagesSinceLog = 0;
      logClock = performance.now();
    }
    if (config.evalEvery > 0 && done % config.evalEvery === 0 && done < totalSteps) {
      await evaluate(done, false);
    }
    if (stopAfter === done) interrupted = `--stop-after ${done}`;
    const periodic = checkpointEvery !== undefined && done % checkpointEvery === 0;
    if (epochEnd || periodic || interrupted !== undefined) await checkpoint(done, wall());
    if (interrupted !== undefined) {
      await loader.close();
      progress.log(
        `${interrupted}: checkpoint of step ${done} written to ${paths.checkpoint}; ` +
          `continue with: deno task train --resume ${outDir}`,
      );
      return 130;
    }
  }
  await loader.close();
  await checkpoint(totalSteps, wall());
  const trainSeconds = wall();
  const finalEval = await evaluate(totalSteps, config.probeEpochs > 0);
  for (const [sig, handler] of signals) Deno.removeSignalListener(sig, handler);

  const metrics = await readMetrics(paths.metrics);
  const rates = metrics.map((m) => m.imagesPerSecond).filter((v): v is number =>
    typeof v === "number"
  );
  const summary = {
    preset: config.preset,
    loss: config.loss.kind,
    steps: totalSteps,
    epochs: +(totalSteps / stepsPerEpoch).toFixed(4),
    knnTop1: finalEval.knnTop1,
    linearTop1: finalEval.linearTop1 ?? null,
    linearTop5: finalEval.linearTop5 ?? null,
    finalLoss: metrics.filter((m) => m.loss !== undefined).at(-1)?.loss ?? null,
    wallSeconds: +trainSeconds.toFixed(1),
    evalSeconds: +finalEval.seconds.toFixed(1),
    imagesPerSecond: rates.length
      ? +(rates.reduce((a, b) => a + b, 0) / rates.length).toFixed(2)
      : null,
    adapter: gpu.adapterName,
    fallbackAdapter: gpu.isFallback,
  };
  await Deno.writeTextFile(paths.summary, JSON.stringify(summary, null, 1) + "\n");
  await writeCurves(paths.curves, metrics);
  train.close?.();
  test.close?.();
  progress.log(
    `done: kNN top-1 ${(summary.knnTop1 * 100).toFixed(2)}%` +
      (summary.linearTop1 !== null
        ? `, linear top-1 ${(summary.linearTop1 * 100).toFixed(2)}%`
        : "") +
      ` after ${totalSteps} steps in ${formatDuration(trainSeconds)} ` +
      `(+${formatDuration(finalEval.seconds)} evaluation); ${outDir}/summary.json`,
  );
  return 0;
}

function toMicroBatch(batch: Batch): MicroBatch {
  const { online, target } = batch.branches!;
  return { view1: online[0], view2: online[1], targetView1: target[0], targetView2: target[1] };
}

/** The kNN monitor and linear probe settings of a run (the probe only when `withProbe`). */
export function evaluationOptions(config: TrainConfig, withProbe: boolean): EvaluationOptions {
  return {
    knnK: config.knnK,
    knnTemperature: config.knnTemperature,
    bankSize: config.knnBankSize,
    testSize: config.evalTestSize,
    probeEpochs: withProbe ? config.probeEpochs : 0,
    probeLr: config.probeLr,
    probeBatch: config.probeBatch,
    seed: config.seed,
    batchSize: 256,
  };
}

async function evaluateAndLog(
  gpu: Gpu,
  ssl: SslModel,
  train: Dataset,
  test: Dataset,
  config: TrainConfig,
  step: number,
  withProbe: boolean,
  metricsPath: string,
  progress: Progress,
): Promise<EvaluationResult> {
  const result = await evaluateBackbone(
    gpu,
    ssl.online.backbone,
    train,
    test,
    evaluationOptions(config, withProbe),
    (what, done, total) => progress.update(`eval at step ${step}: ${what} ${done}/${total}`),
  );
  await appendLine(metricsPath, {
    step,
    knnTop1: result.knnTop1,
    linearTop1: result.linearTop1 ?? null,
    linearTop5: result.linearTop5 ?? null,
    evalSeconds: +result.seconds.toFixed(2),
  });
  progress.log(
    `eval at step ${step}: kNN top-1 ${(result.knnTop1 * 100).toFixed(2)}%` +
      (result.linearTop1 !== undefined
        ? `, linear top-1 ${(result.linearTop1 * 100).toFixed(2)}%`
        : ""),
  );
  return result;
}

async function writeCurves(path: string, metrics: MetricsLine[]): Promise<void> {
  const loss = metrics.filter((m) => typeof m.loss === "number").map((m) => ({
    step: m.step as number,
    value: m.loss as number,
    series: "loss",
  }));
  const knn = metrics.filter((m) => typeof m.knnTop1 === "number").map((m) => ({
    step: m.step as number,
    value: 100 * (m.knnTop1 as number),
    series: "kNN top-1",
  }));
  const svg = await renderCurves([
    { title: "training loss", yTitle: "loss (both directions)", points: loss },
    { title: "kNN monitor", yTitle: "top-1 (%)", points: knn },
  ]);
  await Deno.writeTextFile(path, svg);
}

if (import.meta.main) runMain("train", main);
