/**
 * The pieces of a training run that the loop in train.ts calls: the run directory's files, the
 * checkpoint and evaluation cadence, interrupts (Ctrl-C, SIGTERM, --stop-after), the start-up
 * report and the summary at the end. No arithmetic of the method lives here.
 */
import type { Gpu } from "../runtime/gpu.ts";
import { type Dataset, describeSkipped } from "../data/dataset.ts";
import type { SslModel } from "../models/ssl.ts";
import type { Schedule } from "../models/schedule.ts";
import { loadCheckpoint, NonFiniteError, saveCheckpoint } from "../models/checkpoint.ts";
import {
  evaluateBackbone,
  type EvaluatedFeatures,
  type EvaluationResult,
} from "../models/evaluate.ts";
import {
  DivergedError,
  metricsCsv,
  type MetricsLine,
  TrainingLog,
} from "../models/training_log.ts";
import { bernoulliK } from "../models/bernoulli.ts";
import { parameterCount } from "../models/resnet.ts";
import { writeFileAtomic } from "../models/safetensors.ts";
import type { MemoryEstimate } from "../models/memory.ts";
import { formatDuration, Progress, UserError } from "./cli.ts";
import type { TrainConfig } from "./presets.ts";
import { type EvaluationData, evaluationOptions } from "./train_config.ts";
import { renderCurves } from "./plot.ts";

/** The files of a run directory. */
export class RunFiles {
  readonly config: string;
  readonly metrics: string;
  /** The same values as metrics.jsonl, one CSV row per line (models/training_log.ts). */
  readonly metricsCsv: string;
  readonly checkpoint: string;
  readonly summary: string;
  readonly curves: string;

  constructor(readonly dir: string) {
    this.config = `${dir}/config.json`;
    this.metrics = `${dir}/metrics.jsonl`;
    this.metricsCsv = `${dir}/metrics.csv`;
    this.checkpoint = `${dir}/checkpoint.safetensors`;
    this.summary = `${dir}/summary.json`;
    this.curves = `${dir}/curves.svg`;
  }

  /** Create the directory for a new run; an --overwrite replaces the earlier run's files. */
  async startNew(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true });
    for (const path of [this.checkpoint, this.summary, this.curves]) {
      await Deno.remove(path).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
    }
    await Deno.writeTextFile(this.metrics, "");
    await Deno.writeTextFile(this.metricsCsv, metricsCsv([]));
  }

  /** A retained checkpoint of step `step` (--keep-every). */
  keptCheckpoint(step: number): string {
    return `${this.dir}/checkpoint-step${step}.safetensors`;
  }
}

/** Writes checkpoints atomically; remembers the last good one for the divergence message. */
export class Checkpoints {
  lastStep: number | undefined;

  constructor(
    readonly files: RunFiles,
    readonly model: SslModel,
    readonly config: TrainConfig,
    readonly schedule: Schedule,
    readonly control: { checkpointEvery?: number; keepEvery?: number },
    /** Only rank 0 of a data-parallel run writes checkpoints. */
    readonly writes = true,
  ) {}

  /** Checkpoint after `done` steps: every epoch and every --checkpoint-every steps. */
  due(done: number): boolean {
    const { checkpointEvery, keepEvery } = this.control;
    return this.schedule.endsEpoch(done) ||
      (checkpointEvery !== undefined && done % checkpointEvery === 0) ||
      (keepEvery !== undefined && done % keepEvery === 0);
  }

  async save(done: number, wallSeconds: number): Promise<void> {
    if (!this.writes) return;
    try {
      await saveCheckpoint(this.files.checkpoint, this.model, {
        step: done,
        epoch: this.schedule.epochAt(done),
        wallSeconds,
        trainConfig: this.config,
      });
    } catch (e) {
      if (e instanceof NonFiniteError) throw new DivergedError(done, e.message);
      throw e;
    }
    this.lastStep = done;
    const keepEvery = this.control.keepEvery;
    if (keepEvery !== undefined && done % keepEvery === 0) {
      // A copy beside the last checkpoint, made atomic the same way (temporary file, rename).
      const kept = this.files.keptCheckpoint(done);
      await Deno.copyFile(this.files.checkpoint, `${kept}.tmp`);
      await Deno.rename(`${kept}.tmp`, kept);
    }
  }

  /** Restore the model; returns the step and wall time the checkpoint was written at. */
  async restore(): Promise<{ step: number; wallSeconds: number }> {
    const state = await loadCheckpoint(this.files.checkpoint, this.model).catch((e) => {
      throw new UserError(`cannot resume from ${this.files.checkpoint}: ${(e as Error).message}`);
    });
    this.lastStep = state.step as number;
    return { step: state.step as number, wallSeconds: (state.wallSeconds as number) ?? 0 };
  }

  /** The user's message for a diverged run (exit code 3). */
  divergedError(e: DivergedError): UserError {
    return new UserError(
      `${e.message}. ` +
        (this.lastStep === undefined
          ? "No checkpoint had been written yet"
          : `The last good checkpoint (step ${this.lastStep}) is kept in ${this.files.checkpoint}`) +
        "; lower --lr or check the data",
      3,
    );
  }
}

/** The kNN monitor during training (and kNN + probe at the end), logged to metrics.jsonl. */
export class EvaluationMonitor {
  constructor(
    readonly gpu: Gpu,
    readonly model: SslModel,
    /** The labelled bank and test splits, or none (then nothing is due). */
    readonly data: EvaluationData,
    readonly config: TrainConfig,
    readonly totalSteps: number,
    readonly log: TrainingLog,
    readonly progress: Progress,
  ) {}

  /** An intermediate kNN evaluation after `done` steps (--eval-every). */
  due(done: number): boolean {
    return this.data.bank !== undefined && this.config.evalEvery > 0 &&
      done % this.config.evalEvery === 0 && done < this.totalSteps;
  }

  /** `keep` receives the extracted features (see evaluateBackbone). */
  async run(
    step: number,
    withProbe: boolean,
    keep?: (features: EvaluatedFeatures) => void,
  ): Promise<EvaluationResult> {
    const { bank, test } = this.data;
    if (!bank || !test) throw new Error("EvaluationMonitor.run: the run has no evaluation data");
    const result = await evaluateBackbone(
      this.gpu,
      this.model.online.backbone,
      bank,
      test,
      evaluationOptions(this.config, withProbe),
      (what, done, total) => this.progress.update(`eval at step ${step}: ${what} ${done}/${total}`),
      keep,
    );
    await this.log.append({
      step,
      knnTop1: result.knnTop1,
      linearTop1: result.linearTop1 ?? null,
      linearTop5: result.linearTop5 ?? null,
      evalSeconds: +result.seconds.toFixed(2),
    });
    this.progress.log(
      `eval at step ${step}: kNN top-1 ${(result.knnTop1 * 100).toFixed(2)}%` +
        (result.linearTop1 !== undefined
          ? `, linear top-1 ${(result.linearTop1 * 100).toFixed(2)}%`
          : ""),
    );
    return result;
  }
}

/** Ctrl-C and SIGTERM (and --stop-after) ask the loop to checkpoint and stop. */
export class Interrupts {
  reason: string | undefined;
  private handlers: [Deno.Signal, () => void][] = [];

  constructor() {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      const handler = () => this.reason = signal;
      Deno.addSignalListener(signal, handler);
      this.handlers.push([signal, handler]);
    }
  }

  get requested(): boolean {
    return this.reason !== undefined;
  }

  request(reason: string): void {
    this.reason = reason;
  }

  close(): void {
    for (const [signal, handler] of this.handlers) Deno.removeSignalListener(signal, handler);
  }
}

/** The start-up report: model size, data, loss, memory, schedule and departures. */
export function describeRun(
  config: TrainConfig,
  model: SslModel,
  train: Dataset,
  test: Dataset,
  memory: MemoryEstimate,
  schedule: Schedule,
  outDir: string,
  evalData: EvaluationData,
): string {
  const negatives = config.batch - 1;
  let suggestedK: string;
  try {
    suggestedK = String(bernoulliK(train.classes, config.batch, 0.05));
  } catch {
    suggestedK = `none (too few negatives)`;
  }
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
  return [
    `preset ${config.preset}: ${config.arch} widths ${config.widths.join("/")}, ` +
    `${parameterCount(model.online.backbone).toLocaleString("en")} backbone parameters, ` +
    `${parameterCount(model.online).toLocaleString("en")} with heads`,
    `data ${config.dataset}: ${train.length} train / ${test.length} test images, ` +
    (train.labelled === false ? "unlabelled" : `${train.classes} classes`) +
    `, ${config.imageSize}px; batch ${config.batch} x accum ${config.accum}`,
    ...(train.skippedFiles?.length ? [`skipped ${describeSkipped(train.skippedFiles)}`] : []),
    evalData.bank
      ? `evaluation: kNN${config.probeEpochs > 0 ? " and linear probe" : ""} on ${evalData.source}`
      : `evaluation: none (${evalData.reason}); pictures without class marks`,
    `loss ${config.loss.kind}${
      config.loss.kind === "triplet" ? ` window [${config.loss.window}]` : ""
    }; ` +
    `bernoulliK: with ${train.classes} classes and ${negatives} negatives, the smallest k whose ` +
    `deputy is a false negative with probability <= 0.05 is ${suggestedK}`,
    `memory estimate: ${mib(memory.stepBytes)} MiB of activations per micro-batch, ` +
    `largest tensor ${(memory.largestTensorBytes / 2 ** 20).toFixed(1)} MiB ` +
    `(${memory.largestAt}); largest batch that fits one binding: ${memory.maxBatch}`,
    `${schedule.totalSteps} steps (${
      schedule.epochAt(schedule.totalSteps).toFixed(2)
    } epochs), run directory ${outDir}`,
    ...(config.deviations.length > 0
      ? ["departures from METHOD.md:", ...config.deviations.map((d) => `  - ${d}`)]
      : []),
    ...(Object.keys(config.overrides ?? {}).length > 0
      ? [`flags over the preset: ${JSON.stringify(config.overrides)}`]
      : []),
  ].join("\n");
}

/** summary.json: the run's outcome. */
export interface RunSummary {
  preset: string;
  loss: string;
  steps: number;
  epochs: number;
  /** Null when the run was not evaluated (`evaluation` says why). */
  knnTop1: number | null;
  linearTop1: number | null;
  linearTop5: number | null;
  finalLoss: number | string | null;
  wallSeconds: number;
  evalSeconds: number;
  imagesPerSecond: number | null;
  adapter: string;
  fallbackAdapter: boolean;
  /** The kernel plans the run's device ran (by adapter, or forced by --kernel-plan). */
  kernelPlans: "gpu" | "cpu";
  /** Why the run was not evaluated (absent when it was). */
  evaluation?: string;
  /** From the end-of-run pictures: per-class kNN top-1, confusion matrix, retrieval, PNG paths. */
  perClassKnnTop1?: unknown;
  confusion?: unknown;
}

/** summary.json and curves.svg at the end of a run; returns the summary. */
export async function writeSummary(
  files: RunFiles,
  config: TrainConfig,
  schedule: Schedule,
  finalEval: EvaluationResult | undefined,
  trainSeconds: number,
  gpu: Gpu,
  insight: Record<string, unknown>,
  notEvaluated?: string,
): Promise<RunSummary> {
  const metrics = await TrainingLog.read(files.metrics);
  const rates = metrics.map((m) => m.imagesPerSecond).filter((v): v is number =>
    typeof v === "number"
  );
  const totalSteps = schedule.totalSteps;
  const summary: RunSummary = {
    preset: config.preset,
    loss: config.loss.kind,
    steps: totalSteps,
    epochs: +schedule.epochAt(totalSteps).toFixed(4),
    knnTop1: finalEval?.knnTop1 ?? null,
    linearTop1: finalEval?.linearTop1 ?? null,
    linearTop5: finalEval?.linearTop5 ?? null,
    finalLoss: metrics.filter((m) => m.loss !== undefined).at(-1)?.loss ?? null,
    wallSeconds: +trainSeconds.toFixed(1),
    evalSeconds: +(finalEval?.seconds ?? 0).toFixed(1),
    imagesPerSecond: rates.length
      ? +(rates.reduce((a, b) => a + b, 0) / rates.length).toFixed(2)
      : null,
    adapter: gpu.adapterName,
    fallbackAdapter: gpu.isFallback,
    kernelPlans: gpu.planKind,
    ...(notEvaluated === undefined ? {} : { evaluation: `not evaluated: ${notEvaluated}` }),
    ...insight,
  };
  await writeJsonAtomic(files.summary, summary);
  await Deno.writeTextFile(files.curves, await curvesSvg(metrics));
  return summary;
}

/** A run file as indented JSON, written whole (a crash leaves the old file or the new one). */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(value, null, 1) + "\n"));
}

/** The run's one-line ending. */
export function doneLine(summary: RunSummary, files: RunFiles): string {
  return `done: ${
    summary.knnTop1 === null ? "not evaluated" : `kNN top-1 ${(summary.knnTop1 * 100).toFixed(2)}%`
  }` +
    (summary.linearTop1 !== null
      ? `, linear top-1 ${(summary.linearTop1 * 100).toFixed(2)}%`
      : "") +
    ` after ${summary.steps} steps in ${formatDuration(summary.wallSeconds)} ` +
    `(+${formatDuration(summary.evalSeconds)} evaluation); ${files.summary}`;
}

function curvesSvg(metrics: MetricsLine[]): Promise<string> {
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
  return renderCurves([
    { title: "training loss", yTitle: "loss (both directions)", points: loss },
    { title: "kNN monitor", yTitle: "top-1 (%)", points: knn },
  ]);
}

/** Presets too large for a CPU adapter: hours per epoch there. */
const LARGE_PRESETS = ["resnet50-imagenet", "folder-96"];
/** Activations per optimizer step above which a run is called large (the small preset: ~0.1 GiB). */
const LARGE_STEP_BYTES = 2 ** 30;

/**
 * A loud warning when a large run (a large preset, or a big estimated step) is about to train
 * on a fallback (CPU) adapter; undefined otherwise.
 */
export function fallbackWarning(
  config: TrainConfig,
  gpu: Pick<Gpu, "isFallback" | "adapterName">,
  memory: MemoryEstimate,
): string | undefined {
  if (!gpu.isFallback) return undefined;
  const stepBytes = memory.stepBytes * config.accum;
  const namedLarge = LARGE_PRESETS.includes(config.preset);
  if (!namedLarge && stepBytes < LARGE_STEP_BYTES) return undefined;
  const bar = "!".repeat(78);
  return [
    bar,
    `!! WARNING: preset ${config.preset} (${config.arch}, ${config.imageSize}px, batch ` +
    `${config.batch} x accum ${config.accum}, ~${(stepBytes / 2 ** 30).toFixed(1)} GiB of ` +
    "activations per step)",
    `!! is running on the FALLBACK CPU adapter "${gpu.adapterName}": expect it to be about 100x ` +
    "slower than on a GPU.",
    "!! For a real run install the GPU's driver and the Vulkan loader (README: GPU vs CPU), or",
    "!! use this only as a smoke test (e.g. --steps 2 --batch 4).",
    bar,
  ].join("\n");
}
