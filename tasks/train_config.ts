/**
 * The training task's flags (one table: parsing and --help come from it) and how they resolve
 * against a preset into the run's {@link TrainConfig}; plus the settings derived from a config
 * that several tasks need (model, augmentation, evaluation, datasets).
 */
import {
  type Dataset,
  DATASET_NAMES,
  DatasetError,
  LABEL_MODES,
  loadDataset,
} from "../data/dataset.ts";
import { type AugmentConfig, imagenetViews, smallDataViews } from "../data/augment_config.ts";
import type { EvaluationOptions } from "../models/evaluate.ts";
import { ARCH_NAMES } from "../models/resnet.ts";
import { LOSS_KINDS } from "../models/loss.ts";
import type { PlanKind } from "../runtime/gpu.ts";
import {
  finiteNumber,
  flagHelp,
  type FlagRow,
  kernelPlanSetting,
  nonNegativeInt,
  oneOf,
  parseFlagTable,
  positiveInt,
  UserError,
} from "./cli.ts";
import { PRESETS, type TrainConfig } from "./presets.ts";
import { departuresOf } from "./departures.ts";

/** One flag of `deno task train` (tasks/cli.ts's table row) and its default preset's value. */
interface FlagSpec extends FlagRow {
  /** The default preset's value, shown in --help. */
  preset?: (preset: TrainConfig) => unknown;
}

const PRESET_NAMES = Object.keys(PRESETS);

/** Every flag of `deno task train`, in --help order. */
export const TRAIN_FLAGS: FlagSpec[] = [
  { name: "preset", value: "NAME", help: `${PRESET_NAMES.join(" | ")}`, preset: (p) => p.preset },
  {
    name: "config",
    value: "FILE",
    help: "settings from a JSON file (any config.json fields; a run's config.json repeats " +
      "that run); the preset fills the rest and flags override it",
  },
  { name: "arch", value: "NAME", help: ARCH_NAMES.join(" | "), preset: (p) => p.arch },
  { name: "dataset", value: "NAME", help: DATASET_NAMES.join(" | "), preset: (p) => p.dataset },
  {
    name: "data",
    value: "DIR",
    help: "dataset directory (folder: images in any layout, or one sub-folder per class)",
  },
  {
    name: "labels",
    value: "MODE",
    help: "folder labels: auto (class sub-folders when every image is in one of >= 2 " +
      "first-level sub-folders, else unlabelled) | folders | none",
  },
  {
    name: "eval",
    value: "MODE",
    help: "auto (kNN/probe where labels exist: the data's or --eval-data's) | none",
  },
  {
    name: "eval-data",
    value: "DIR",
    help: "labelled image folder (class sub-folders) to evaluate on, for unlabelled training data",
  },
  { name: "image-size", value: "N", help: "training resolution", preset: (p) => p.imageSize },
  { name: "epochs", value: "N", help: "epochs over the training split", preset: (p) => p.epochs },
  {
    name: "steps",
    value: "N",
    help: "stop after N optimizer steps (overrides --epochs; 0 evaluates the untrained " +
      "network: the random-init baseline)",
    preset: (p) => p.steps,
  },
  {
    name: "batch",
    value: "N",
    help: "images per micro-batch (negatives come from one micro-batch)",
    preset: (p) => p.batch,
  },
  {
    name: "accum",
    value: "N",
    help: "micro-batches per optimizer step (gradient accumulation)",
    preset: (p) => p.accum,
  },
  { name: "lr", value: "X", help: "base learning rate", preset: (p) => p.lr },
  {
    name: "warmup-epochs",
    value: "X",
    help: "linear learning-rate warm-up length, in epochs",
    preset: (p) => p.warmupEpochs,
  },
  {
    name: "ema-base",
    value: "X",
    help: "target EMA momentum at step 0 (rises to 1 on a cosine; in [0, 1))",
    preset: (p) => p.emaBase,
  },
  {
    name: "crop-scale",
    value: "X",
    help: "smallest area fraction of the random resized crop (0 < X <= 1)",
    preset: (p) => p.cropScaleMin,
  },
  {
    name: "blur-sigma",
    value: "A,B",
    help: "Gaussian blur sigma range in pixels at the training size (default: the recipe's)",
  },
  { name: "loss", value: "NAME", help: LOSS_KINDS.join(" | "), preset: (p) => p.loss.kind },
  {
    name: "window",
    value: "A,B",
    help: "smoothed rank-k window of negatives (triplet)",
    preset: (p) => p.loss.window,
  },
  { name: "k", value: "N", help: "rank of the negative deputy (rank-k; default 2)" },
  { name: "margin", value: "X", help: "triplet margin M", preset: (p) => p.loss.margin },
  {
    name: "gamma",
    value: "X",
    help: "weight of the positive distance",
    preset: (p) => p.loss.gamma,
  },
  {
    name: "temperature",
    value: "X",
    help: "InfoNCE temperature",
    preset: (p) => p.loss.temperature,
  },
  {
    name: "seed",
    value: "N",
    help: "seed for initialisation, data order and augmentation",
    preset: (p) => p.seed,
  },
  { name: "out", value: "DIR", help: "run directory (default runs/<preset>-<loss>-seed<N>)" },
  {
    name: "overwrite",
    help: "replace the run in a non-empty --out (refused without it)",
  },
  {
    name: "resume",
    value: "DIR",
    help: "continue the run in DIR from its checkpoint (with --steps/--epochs: extend it)",
  },
  {
    name: "widths",
    value: "A,B,C,D",
    help: "stage widths (torchvision: 64,128,256,512)",
    preset: (p) => p.widths,
  },
  {
    name: "log-every",
    value: "N",
    help: "optimizer steps between loss readbacks / log lines",
    preset: (p) => p.logEvery,
  },
  {
    name: "eval-every",
    value: "N",
    help: "kNN evaluation every N steps (0: only at the end)",
    preset: (p) => p.evalEvery,
  },
  {
    name: "eval-bank",
    value: "N",
    help: "training images in the kNN bank and probe set (0: all)",
    preset: (p) => p.knnBankSize,
  },
  {
    name: "eval-test",
    value: "N",
    help: "test images evaluated (0: all)",
    preset: (p) => p.evalTestSize,
  },
  {
    name: "eval-block-rows",
    value: "N",
    help: "kNN bank rows per GPU block (default: as many as one storage binding holds)",
  },
  {
    name: "probe-epochs",
    value: "N",
    help: "linear probe epochs at the end",
    preset: (p) => p.probeEpochs,
  },
  { name: "no-probe", help: "skip the final linear probe" },
  {
    name: "no-pictures",
    help: "skip the pictures at the end (retrieval grid, t-SNE map, confusion matrix)",
  },
  {
    name: "checkpoint-every",
    value: "N",
    help: "also checkpoint every N steps (default: every epoch and at the end)",
  },
  {
    name: "keep-every",
    value: "N",
    help: "keep checkpoint-step<S>.safetensors every N steps beside the last checkpoint",
  },
  {
    name: "stop-after",
    value: "N",
    help: "act as if interrupted after step N (checkpoint, exit 130)",
  },
  {
    name: "debug-nan-at",
    value: "N",
    help: "(testing) poison a weight with NaN before step N to exercise the NaN stop",
  },
  {
    name: "distributed",
    help: "one rank of `mpiexec -n N ... --distributed` (MPI data-parallel; see README)",
  },
  {
    name: "kernel-plan",
    value: "KIND",
    help: "kernel tiles for: auto (by adapter) | gpu | cpu (default: env TRITRAIN_KERNEL_PLAN)",
  },
  { name: "help", help: "this text" },
];

/** `deno task train --help`, generated from {@link TRAIN_FLAGS} and the default preset. */
export function trainHelp(): string {
  return flagHelp(
    "deno task train [flags]",
    "Self-supervised pretraining with the truncated triplet loss (Wang et al., ICCV 2021).\n" +
      "Defaults come from the preset; (small: X) is the default preset's value.",
    TRAIN_FLAGS.map((f) => {
      const shown = f.preset?.(PRESETS.small);
      return { ...f, help: f.help + (shown === undefined ? "" : ` (small: ${shown})`) };
    }),
  );
}

/** Parsed flags: strings and switches by flag name. */
export type Flags = Record<string, string | boolean | undefined>;

/** Parse the command line against {@link TRAIN_FLAGS}. */
export function parseTrainFlags(args: string[]): Flags {
  return parseFlagTable(TRAIN_FLAGS, args);
}

/** Flags that are about this invocation, not the run's recipe (not written as overrides). */
const INVOCATION_FLAGS = [
  "preset",
  "config",
  "out",
  "help",
  "overwrite",
  "distributed",
  "no-pictures",
  "kernel-plan",
];

/** Flags that --resume applies; every other one would be ignored, so it is refused. */
export const RESUME_FLAGS = [
  "resume",
  "steps",
  "epochs",
  "stop-after",
  "checkpoint-every",
  "keep-every",
  "debug-nan-at",
  "no-pictures",
  "distributed",
  "kernel-plan",
];

/**
 * The preset (with the fields of a --config `file` over it, checked by tasks/config_file.ts) with
 * every flag applied, for `ranks` data-parallel processes; validated; its departures listed.
 */
export function resolveConfig(
  flags: Flags,
  ranks = 1,
  file: Partial<TrainConfig> = {},
): TrainConfig {
  const presetName = (flags.preset as string | undefined) ?? file.preset ?? "small";
  const preset = PRESETS[presetName];
  if (!preset) {
    throw new UserError(
      `unknown preset ${JSON.stringify(presetName)}: choose ${PRESET_NAMES.join(", ")}`,
    );
  }
  const config: TrainConfig = { ...structuredClone(preset), ...structuredClone(file) };
  config.preset = presetName;
  config.loss = { ...preset.loss, ...file.loss };
  // A file with epochs and no steps (a run's config.json after --epochs) runs by epochs.
  if (file.epochs !== undefined && file.steps === undefined) config.steps = undefined;
  config.overrides = {
    ...file.overrides,
    ...Object.fromEntries(
      Object.entries(flags).filter(([name, value]) =>
        value !== undefined && !INVOCATION_FLAGS.includes(name)
      ),
    ),
  } as Record<string, string | boolean>;
  const str = (name: string) => flags[name] as string | undefined;
  config.arch = oneOf("arch", str("arch"), ARCH_NAMES) ?? config.arch;
  config.dataset = oneOf("dataset", str("dataset"), DATASET_NAMES) ?? config.dataset;
  config.data = str("data") ?? config.data;
  config.imageSize = positiveInt("image-size", str("image-size")) ?? config.imageSize;
  config.epochs = positiveInt("epochs", str("epochs")) ?? config.epochs;
  if (str("epochs") !== undefined) config.steps = undefined;
  config.steps = nonNegativeInt("steps", str("steps")) ?? config.steps;
  // METHOD.md's linear scaling: without --lr, the lr follows the effective batch. Its reference is
  // the file's batch when the file sets the lr (a run's config.json), else the preset's, so a file
  // that changes only the batch scales the lr as --batch does.
  const reference = file.lr !== undefined ? config : preset;
  const presetImagesPerStep = reference.batch * reference.accum * reference.ranks;
  config.batch = positiveInt("batch", str("batch")) ?? config.batch;
  config.accum = positiveInt("accum", str("accum")) ?? config.accum;
  config.ranks = ranks;
  const imagesPerStep = config.batch * config.accum * config.ranks;
  config.lr = finiteNumber("lr", str("lr")) ??
    (imagesPerStep === presetImagesPerStep
      ? config.lr
      : config.lr * imagesPerStep / presetImagesPerStep);
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
  if (str("blur-sigma") !== undefined) {
    const sigma = str("blur-sigma")!.split(",").map(Number);
    if (sigma.length !== 2 || !(sigma[0] >= 0 && sigma[1] >= sigma[0])) {
      throw new UserError(`--blur-sigma must be A,B with 0 <= A <= B, got ${str("blur-sigma")}`);
    }
    config.blurSigma = [sigma[0], sigma[1]];
  }
  config.seed = nonNegativeInt("seed", str("seed")) ?? config.seed;
  config.evalEvery = nonNegativeInt("eval-every", str("eval-every")) ?? config.evalEvery;
  config.logEvery = positiveInt("log-every", str("log-every")) ?? config.logEvery;
  config.knnBankSize = nonNegativeInt("eval-bank", str("eval-bank")) ?? config.knnBankSize;
  config.evalTestSize = nonNegativeInt("eval-test", str("eval-test")) ?? config.evalTestSize;
  config.knnBlockRows = positiveInt("eval-block-rows", str("eval-block-rows")) ??
    config.knnBlockRows;
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
  loss.kind = oneOf("loss", str("loss"), LOSS_KINDS) ?? loss.kind;
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
  // A window given by --window or by the file (other than the preset's) is checked, not shrunk.
  const fileWindow = file.loss?.window !== undefined &&
    JSON.stringify(file.loss.window) !== JSON.stringify(preset.loss.window);
  if (loss.kind === "triplet" && loss.window && loss.window[1] > negatives) {
    if (str("window") !== undefined || fileWindow) {
      throw new UserError(
        `${str("window") !== undefined ? "--window" : "--config's loss.window"} ${loss.window} ` +
          `needs ${loss.window[1]} negatives, but a batch of ${config.batch} has ${negatives}: ` +
          "use a larger --batch or a smaller window (--window)",
      );
    }
    // The preset's window does not fit a tiny batch (e.g. a smoke test): shrink it, and say so
    // (tasks/departures.ts names the shrink).
    loss.window = [Math.min(loss.window[0], negatives), negatives];
  }
  config.loss = loss;
  applyFolderFlags(config, flags);
  config.deviations = departuresOf(config);
  return config;
}

/** --labels, --eval and --eval-data, checked against the dataset (needs --data for folders). */
function applyFolderFlags(config: TrainConfig, flags: Flags): void {
  const str = (name: string) => flags[name] as string | undefined;
  config.labels = oneOf("labels", str("labels"), LABEL_MODES) ?? config.labels;
  config.evaluation = oneOf("eval", str("eval"), ["auto", "none"] as const) ?? config.evaluation;
  config.evalData = str("eval-data") ?? config.evalData;
  if (config.dataset === "folder" && !config.data) {
    throw new UserError(
      "--dataset folder needs --data DIR (a folder of images, any layout, or one sub-folder of " +
        'images per class: see the README\'s "Your own images")',
    );
  }
  if (config.dataset !== "folder") {
    for (const name of ["labels", "eval-data"]) {
      if (str(name) !== undefined) {
        throw new UserError(`--${name} applies to --dataset folder only, not ${config.dataset}`);
      }
    }
    // From --config: evalData would otherwise evaluate this dataset's run on that folder, and
    // labels would be silently ignored.
    if (config.evalData !== undefined) {
      throw new UserError(
        `--config's evalData ${config.evalData} applies to --dataset folder only, not ` +
          `${config.dataset}: remove it from the file`,
      );
    }
    if (config.labels !== undefined) {
      throw new UserError(
        `--config's labels ${config.labels} applies to --dataset folder only, not ` +
          `${config.dataset}: remove it from the file`,
      );
    }
  }
  if (config.evalData !== undefined && config.evaluation === "none") {
    throw new UserError(
      "--eval-data gives a folder to evaluate on, but --eval none turns evaluation off: drop one",
    );
  }
}

/** The flags that steer one invocation (not the recipe), validated with the rest. */
export interface RunControl {
  stopAfter?: number;
  checkpointEvery?: number;
  keepEvery?: number;
  debugNanAt?: number;
  /** Which kernel plans to run (--kernel-plan, env TRITRAIN_KERNEL_PLAN, else "auto"). */
  kernelPlan: PlanKind;
}

/** Parse the invocation flags (validated before anything is written). */
export function runControl(flags: Flags): RunControl {
  const int = (name: string) => positiveInt(name, flags[name] as string | undefined);
  return {
    stopAfter: int("stop-after"),
    checkpointEvery: int("checkpoint-every"),
    keepEvery: int("keep-every"),
    debugNanAt: int("debug-nan-at"),
    kernelPlan: kernelPlanSetting(flags["kernel-plan"] as string | undefined),
  };
}

/** The run's augmentation: the preset's recipe, its crop scale, its branch rescale or none. */
export function augmentConfig(config: TrainConfig): AugmentConfig {
  const views = config.augment === "imagenet" ? imagenetViews() : smallDataViews(config.imageSize);
  if (config.cropScaleMin !== undefined) {
    for (const view of views.views) view.crop.scale[0] = config.cropScaleMin;
  }
  if (config.blurSigma !== undefined) {
    for (const view of views.views) view.blur.sigma = [...config.blurSigma];
  }
  if (!config.randomRescale) delete views.rescale;
  return views;
}

/** Images per forward pass when evaluation extracts features. */
export const EVAL_FORWARD_BATCH = 256;

/** The kNN monitor and linear probe settings of a run (the probe only when `withProbe`). */
export function evaluationOptions(
  config: TrainConfig,
  withProbe: boolean,
  overrides: Partial<EvaluationOptions> = {},
): EvaluationOptions {
  return {
    knnK: config.knnK,
    knnTemperature: config.knnTemperature,
    bankSize: config.knnBankSize,
    testSize: config.evalTestSize,
    probeEpochs: withProbe ? config.probeEpochs : 0,
    probeLr: config.probeLr,
    probeBatch: config.probeBatch,
    seed: config.seed,
    batchSize: EVAL_FORWARD_BATCH,
    knnBlockRows: config.knnBlockRows,
    // Only the overrides that are set.
    ...Object.fromEntries(Object.entries(overrides).filter(([, value]) => value !== undefined)),
  };
}

/** A split of the configured dataset; a dataset problem becomes a one-line user error. */
export async function loadSplit(config: TrainConfig, split: "train" | "test"): Promise<Dataset> {
  try {
    return await loadDataset(config.dataset, {
      dir: config.data,
      split,
      imageSize: config.imageSize,
      labels: config.labels,
    });
  } catch (e) {
    if (e instanceof DatasetError) throw new UserError(e.message);
    throw e;
  }
}

/** What a run evaluates on: labelled bank and test splits, or nothing and why. */
export type EvaluationData =
  | { bank: Dataset; test: Dataset; source: string }
  | { bank?: undefined; test?: undefined; reason: string };

/**
 * The evaluation data of a run: --eval-data's labelled folder (its own train/test split), else
 * the training data's splits when they are labelled; none with --eval none or without labels.
 */
export async function evaluationData(
  config: TrainConfig,
  train: Dataset,
  test: Dataset,
): Promise<EvaluationData> {
  if (config.evaluation === "none") return { reason: "--eval none" };
  if (config.evalData !== undefined) {
    const load = async (split: "train" | "test") => {
      try {
        return await loadDataset("folder", {
          dir: config.evalData,
          split,
          imageSize: config.imageSize,
          labels: "folders",
        });
      } catch (e) {
        if (e instanceof DatasetError) throw new UserError(`--eval-data: ${e.message}`);
        throw e;
      }
    };
    const bank = await load("train");
    const evalTest = await load("test");
    return {
      bank,
      test: evalTest,
      source: `--eval-data ${config.evalData} (${bank.classes} classes: kNN bank of its ` +
        `${bank.length} train images, ${evalTest.length} test images)`,
    };
  }
  if (train.labelled === false) {
    return {
      reason: "the training images are unlabelled; pass --eval-data DIR (a folder with one " +
        "sub-folder per class) to measure kNN/probe accuracy",
    };
  }
  return { bank: train, test, source: "the dataset's own train/test splits" };
}
