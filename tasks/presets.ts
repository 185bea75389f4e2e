/**
 * Named training configurations. Every value a run uses lives here (or comes from a flag) and is
 * written to the run's config.json; each preset lists how it departs from METHOD.md and why.
 */
import type { Arch } from "../models/resnet.ts";
import type { LrShape } from "../models/schedule.ts";
import { LOSS_DEFAULTS, type LossConfig } from "../models/loss.ts";
import type { DatasetName, LabelMode } from "../data/dataset.ts";

/** Everything a training run needs. */
export interface TrainConfig {
  preset: string;
  /** Human-readable departures from METHOD.md (empty for the paper's recipe). */
  deviations: string[];
  /** Command-line flags that changed the preset (written to config.json with the rest). */
  overrides?: Record<string, string | boolean>;
  arch: Arch;
  /** Stage widths (torchvision: 64, 128, 256, 512). */
  widths: [number, number, number, number];
  /** 3x3 stride-1 stem without max pool. */
  smallImage: boolean;
  dataset: DatasetName;
  /** Dataset directory (undefined: the dataset's default location). */
  data?: string;
  /** Folder datasets: labels from class sub-folders, none, or by the layout (undefined: auto). */
  labels?: LabelMode;
  /**
   * Evaluation (kNN monitor, probe, per-class figures): "auto" (undefined) runs it where labels
   * exist (the training data's, or `evalData`'s), "none" never.
   */
  evaluation?: "auto" | "none";
  /** A labelled image folder to evaluate on instead of the training data (its own 10% split). */
  evalData?: string;
  /** Training resolution (square). */
  imageSize: number;
  /** Augmentation recipe: METHOD.md's ImageNet views or the small grayscale variant. */
  augment: "imagenet" | "small";
  /** Smallest crop area fraction, replacing the recipe's (undefined: the recipe's own). */
  cropScaleMin?: number;
  /** Gaussian blur sigma range in pixels, replacing the recipe's (undefined: the recipe's own). */
  blurSigma?: [number, number];
  /** Per-branch random batch rescale of the released code. */
  randomRescale: boolean;
  /** Images per micro-batch (negatives come from one micro-batch). */
  batch: number;
  /** Micro-batches per optimizer step on each rank (gradient accumulation). */
  accum: number;
  /** Data-parallel processes (MPI ranks); the effective batch is batch x accum x ranks. */
  ranks: number;
  /** Length of the run: epochs over the training split, or an explicit step count. */
  epochs: number;
  steps?: number;
  /** Base learning rate (already scaled for the effective batch). */
  lr: number;
  warmupEpochs: number;
  /** Learning-rate shape (models/schedule.ts): per-step warm-up + cosine, or the released code's. */
  lrSchedule: LrShape;
  momentum: number;
  weightDecay: number;
  eta: number;
  /** EMA base momentum (rises to 1 on a cosine). */
  emaBase: number;
  projectorHidden: number;
  projectorOut: number;
  predictorHidden: number;
  /** Head Linear inits: torch's default, or the released code's (Kaiming fan-in / N(0, 0.01)). */
  headInit: "torch-default" | "released";
  loss: LossConfig;
  seed: number;
  /** Optimizer steps between loss log lines. */
  logEvery: number;
  /** Optimizer steps between kNN evaluations (0: only at the end). */
  evalEvery: number;
  /** kNN monitor: neighbours, temperature, training images in the memory bank (0: all). */
  knnK: number;
  knnTemperature: number;
  knnBankSize: number;
  /** Test images evaluated (0: all). */
  evalTestSize: number;
  /** kNN bank rows per block (undefined: as many as one storage binding holds). */
  knnBlockRows?: number;
  /** Linear probe: epochs over the bank images, base lr at batch 256, batch. */
  probeEpochs: number;
  probeLr: number;
  probeBatch: number;
}

/**
 * The fields each preset departure describes, by its text: a run whose config changes one of them
 * no longer prints that text but what it actually uses (tasks/departures.ts).
 */
export const DEPARTURE_FIELDS = new Map<string, (keyof TrainConfig)[]>();

/** A preset departure that describes `fields` (registered in {@link DEPARTURE_FIELDS}). */
function departure(fields: (keyof TrainConfig)[], text: string): string {
  DEPARTURE_FIELDS.set(text, fields);
  return text;
}

/** METHOD.md's truncated triplet loss: smoothed rank-k over the window [2, 10]. */
function tripletLoss(window: [number, number] = [...LOSS_DEFAULTS.window]): LossConfig {
  return { kind: "triplet", ...LOSS_DEFAULTS, window };
}

/** Departures that every preset shares. */
const COMMON_DEVIATIONS = [
  "LARS excludes every BatchNorm weight and bias and every bias (METHOD.md); the released " +
  "code's regex `(bn|gn)(\\d+)?.(weight|bias)` misses the shortcut BN weights " +
  "(downsample.1.weight) and the heads' BN weights, which it trains with LARS and weight decay",
  "linear probe on cached features of un-augmented images (no random crop or flip per epoch, " +
  "no warm-up, torch-default Linear init); METHOD.md's probe trains on augmented views",
];

/** Presets by name; `small` is the default. */
export const PRESETS: Record<string, TrainConfig> = {
  small: {
    preset: "small",
    deviations: [
      departure(
        ["arch", "widths", "smallImage"],
        "ResNet-18 small-image variant (3x3 stride-1 stem, no max pool) at widths 8/16/32/64 " +
          "(torchvision: 64/128/256/512), to train ~1,250 steps in minutes on a CPU adapter",
      ),
      departure(
        ["dataset", "imageSize", "cropScaleMin"],
        "28x28 grayscale Fashion-MNIST: colour ops are no-ops; crop scale from 0.6 instead of 0.08 " +
          "(a short run learns faster from milder crops: kNN 68.5% vs 66.8% at 200 steps with 0.3)",
      ),
      departure(
        ["projectorHidden", "projectorOut", "predictorHidden"],
        "projector/predictor 64 -> 512 -> 64 (METHOD.md: 2048 -> 4096 -> 256), scaled with the backbone",
      ),
      departure(
        ["batch", "accum", "ranks", "lr", "warmupEpochs"],
        "batch 64 on one device; lr 3.0 (METHOD.md's scaling gives 4.8*64/4096 = 0.075): LARS moves " +
          "each tensor by about lr*eta of its norm per step, so a run of ~1,250 steps needs a " +
          "larger lr to move at all; warm-up 0.05 epochs (~47 steps) instead of 10 epochs",
      ),
      departure(
        ["emaBase"],
        "EMA base momentum 0.9 instead of 0.99: a 1,250-step run cannot wait ~100 steps for the target " +
          "to follow the online network (kNN 69.7% vs 68.5% at 200 steps with crop 0.6)",
      ),
      departure(
        ["steps", "epochs", "evalEvery"],
        "1,250 steps (~1.3 epochs), sized to finish with evaluation in under 15 minutes on a 2-core " +
          "CPU through lavapipe; kNN every 500 steps",
      ),
      departure(
        ["loss"],
        "smoothed rank-k window [11, 19] instead of [2, 10]: with 10 classes a batch of 64 holds " +
          "~6.3 same-class (false) negatives per image, so ranks 2-10 are mostly false negatives; " +
          "bernoulliK(10, 64, 0.05) = 11 is the first rank that is a true negative with probability " +
          ">= 0.95, and the window keeps the released code's width of nine ranks",
      ),
      departure(
        ["knnBankSize", "evalTestSize"],
        "linear probe and kNN on a subset of the training split to fit the time budget",
      ),
      departure(
        ["randomRescale"],
        "no per-branch batch rescale (the released code resizes online views to 96-224 px and " +
          "target views to 128-224 px each iteration; a 28 px image has nothing to rescale to)",
      ),
      departure(
        ["augment"],
        "crops resampled bilinearly (METHOD.md: bicubic): bicubic overshoot rings at 28 px",
      ),
      departure(
        ["blurSigma", "imageSize"],
        "Gaussian blur sigma scaled by 28/224 to 0.0125-0.25 px, which leaves a 28 px image " +
          "practically unchanged: METHOD.md's view-1/view-2 blur asymmetry (p 1.0 / 0.1) is absent. " +
          "Kept so on purpose: a blur that does something (--blur-sigma 0.1,1) lowered the 200-step " +
          "kNN from 71.9% to 69.1% (one seed, 5,000 test images, 2026-12-02)",
      ),
      departure(
        ["lrSchedule"],
        "learning rate per step (linear warm-up from lr/W, then a cosine per step): the released " +
          "code's per-epoch cosine would stay flat over a run shorter than one epoch",
      ),
      departure(
        ["headInit"],
        "heads initialised as torch's Linear default (the released code: projector Kaiming-normal " +
          "fan-in, predictor Normal(0, 0.01), biases 0; kept for the recorded default run)",
      ),
      ...COMMON_DEVIATIONS,
    ],
    arch: "resnet18",
    widths: [8, 16, 32, 64],
    smallImage: true,
    dataset: "fashion-mnist",
    imageSize: 28,
    augment: "small",
    cropScaleMin: 0.6,
    randomRescale: false,
    batch: 64,
    accum: 1,
    ranks: 1,
    epochs: 1,
    steps: 1250,
    lr: 3.0,
    warmupEpochs: 0.05,
    lrSchedule: "per-step",
    momentum: 0.9,
    weightDecay: 1e-6,
    eta: 0.001,
    emaBase: 0.9,
    projectorHidden: 512,
    projectorOut: 64,
    predictorHidden: 512,
    headInit: "torch-default",
    loss: tripletLoss([11, 19]),
    seed: 0,
    logEvery: 10,
    evalEvery: 500,
    knnK: 200,
    knnTemperature: 0.1,
    knnBankSize: 10000,
    evalTestSize: 0,
    probeEpochs: 10,
    probeLr: 0.15,
    probeBatch: 256,
  },
  "folder-96": {
    preset: "folder-96",
    deviations: [
      departure(
        ["arch", "widths", "smallImage", "imageSize"],
        "for a folder of a few thousand photos (--data DIR, labelled or not): torchvision's " +
          "ResNet-18 (64/128/256/512, 7x7 stride-2 stem and max pool, so the exported backbone is " +
          "torchvision.models.resnet18) at 96x96 instead of ResNet-50 at 224",
      ),
      departure(
        ["batch", "accum", "ranks", "lr", "warmupEpochs", "lrSchedule"],
        "batch 128 on one device, lr 2.0 with a 10-epoch warm-up, per-step cosine (METHOD.md's " +
          "scaling gives 4.8*128/4096 = 0.15, too slow for a run of a few thousand steps, as the " +
          "small preset found; not tuned on photos yet)",
      ),
      departure(
        ["steps", "epochs"],
        "100 epochs: ~2,300 steps for 3,000 photos, sized for about an hour on a GPU when the " +
          "photos are stored at about 256 px (jpeg-js decodes a 1536x1536 JPEG in 0.3-0.8 s, a " +
          "full-size camera photo in seconds: shrink them first, see the README); an estimate, " +
          "not yet timed on a GPU",
      ),
      departure(
        ["projectorHidden", "projectorOut", "predictorHidden"],
        "projector/predictor 512 -> 2048 -> 256 (METHOD.md: 2048 -> 4096 -> 256), scaled with the " +
          "backbone's 512 features",
      ),
      departure(
        ["cropScaleMin", "blurSigma"],
        "crop scale from 0.2 instead of 0.08 (a 0.08 crop of a 96 px view is ~27 px); blur sigma " +
          "scaled by 96/224 to 0.04-0.86 px",
      ),
      departure(
        ["randomRescale"],
        "no per-branch batch rescale (a fixed 96 px run)",
      ),
      departure(
        ["knnK", "evalEvery"],
        "kNN with k = 20 (a few thousand images: 200 neighbours would span whole small classes); " +
          "kNN every 500 steps and at the end, when labels exist",
      ),
      ...COMMON_DEVIATIONS,
    ],
    arch: "resnet18",
    widths: [64, 128, 256, 512],
    smallImage: false,
    dataset: "folder",
    imageSize: 96,
    augment: "imagenet",
    cropScaleMin: 0.2,
    blurSigma: [0.1 * 96 / 224, 2.0 * 96 / 224],
    randomRescale: false,
    batch: 128,
    accum: 1,
    ranks: 1,
    epochs: 100,
    lr: 2.0,
    warmupEpochs: 10,
    lrSchedule: "per-step",
    momentum: 0.9,
    weightDecay: 1e-6,
    eta: 0.001,
    emaBase: 0.99,
    projectorHidden: 2048,
    projectorOut: 256,
    predictorHidden: 2048,
    headInit: "torch-default",
    loss: tripletLoss(),
    seed: 0,
    logEvery: 10,
    evalEvery: 500,
    knnK: 20,
    knnTemperature: 0.1,
    knnBankSize: 0,
    evalTestSize: 0,
    probeEpochs: 100,
    probeLr: 0.15,
    probeBatch: 256,
  },
  "resnet50-imagenet": {
    preset: "resnet50-imagenet",
    deviations: [
      departure(
        ["batch", "accum", "ranks"],
        "one device: the released runs put 196 images on each of 8 GPUs with synchronised BN and " +
          "accumulated to an effective 6272; here 196 images per micro-batch (the negatives of a row " +
          "come from its 196, as per GPU in the released code) x 32 micro-batches = 6272, with BN " +
          "statistics per micro-batch (no SyncBN); --distributed spreads the micro-batches over ranks",
      ),
      "fp32 (the released runs used fp16)",
      ...COMMON_DEVIATIONS,
    ],
    arch: "resnet50",
    widths: [64, 128, 256, 512],
    smallImage: false,
    dataset: "folder",
    imageSize: 224,
    augment: "imagenet",
    randomRescale: true,
    batch: 196,
    accum: 32,
    ranks: 1,
    epochs: 200,
    lr: 4.8,
    warmupEpochs: 10,
    lrSchedule: "released",
    momentum: 0.9,
    weightDecay: 1e-6,
    eta: 0.001,
    emaBase: 0.99,
    projectorHidden: 4096,
    projectorOut: 256,
    predictorHidden: 4096,
    headInit: "released",
    loss: tripletLoss(),
    seed: 0,
    logEvery: 20,
    evalEvery: 0,
    knnK: 200,
    knnTemperature: 0.1,
    knnBankSize: 0,
    evalTestSize: 0,
    probeEpochs: 100,
    probeLr: 0.15,
    probeBatch: 256,
  },
};
