/**
 * Batches for training and evaluation, one step ahead: when step k is handed out, step k+1's
 * samples are already being read (and decoded, for image folders), and as soon as they arrive
 * they are uploaded and augmented on the GPU, so the next step never waits for the data.
 *
 * Deterministic given the seed: the sample order of epoch e is shuffledOrder(length, seed, e),
 * step k covers positions [k mod S * B, ...) of epoch floor(k / S) (S steps per epoch, B the
 * batch size), and the views of step k use augmentation step k. Resuming at a step reproduces
 * the same batches. With gradient accumulation every micro-batch is one loader step (so each has
 * its own augmentation stream): optimizer step k uses loader steps k*A .. k*A+A-1. With R
 * data-parallel ranks the stream is global: rank r takes loader steps k*A*R + r*A .. + A-1 of
 * optimizer step k, so R ranks see exactly the micro-batches of one process with accumulation A*R.
 *
 * Datasets of images of varying size (image folders) cut both views' random resized crops on the
 * CPU, from each image at its own resolution (`Dataset.randomResizedCrops`); only the crops go to
 * the GPU, which applies the rest of the views, and such a batch has no `images`.
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import type { MicroBatch } from "../models/ssl.ts";
import { type Dataset, shuffledOrder } from "./dataset.ts";
import { cropViewSpec } from "./folder_decode.ts";
import {
  type Augmenter,
  type BranchViews,
  releaseBranches,
  uploadPixels,
  type Views,
} from "./augment.ts";

/** Options of {@link BatchLoader}. */
export interface LoaderOptions {
  batchSize: number;
  seed: number;
  /** The first loader step (to resume a run). Default 0. */
  startStep?: number;
  /** When given, every batch also carries its two augmented views. */
  augmenter?: Augmenter;
  /** Shuffle every epoch (default true); false walks the dataset in order (evaluation). */
  shuffle?: boolean;
  /** Drop the last incomplete batch of an epoch (default true: BatchNorm wants full batches). */
  dropLast?: boolean;
}

/** Options of {@link BatchLoader.forTraining}. */
export interface TrainingLoaderOptions {
  batchSize: number;
  seed: number;
  augmenter: Augmenter;
  /** Micro-batches per optimizer step on this rank (gradient accumulation). */
  accum: number;
  /** The optimizer step to start at (to resume a run). */
  startStep: number;
  /** Data-parallel rank and world size (default 0 of 1). */
  rank?: number;
  ranks?: number;
}

/** One optimizer step's micro-batches, in the model's view shape. */
export interface StepBatches {
  microBatches: MicroBatch[];
  /** Release every tensor of the step's batches. */
  release(): void;
}

/** One step's data, on the GPU. */
export interface Batch {
  step: number;
  epoch: number;
  /** Dataset indices of the samples, in batch order. */
  indices: Uint32Array;
  /**
   * [N, H, W, C] f32 in [0, 1], not normalised; absent when the views were cut on the CPU from
   * images of varying size (a dataset with `randomResizedCrops` and an augmenter).
   */
  images?: Tensor;
  labels: Int32Array;
  /** The two normalised views (when the loader has an augmenter). */
  views?: Views;
  /**
   * The branch inputs (when the loader has an augmenter): the views rescaled per branch when the
   * augment config has `rescale`, otherwise the views themselves (online = target = views).
   */
  branches?: BranchViews;
  /** Release every tensor of the batch. */
  release(): void;
}

/** Yields batches in order of steps, the next one prefetched. */
export class BatchLoader {
  readonly stepsPerEpoch: number;
  private pending: { step: number; batch: Promise<Batch> } | undefined;
  private orders = new Map<number, Uint32Array>();
  private closed = false;
  /** Loader steps of this rank: its position p (0, 1, ...) -> the loader step it takes. */
  private stepOf: (position: number) => number = (p) => p;
  private position: number;
  /** Loader steps per {@link nextStep} call. */
  private accum = 1;

  /**
   * A loader for training: each optimizer step is `accum` consecutive loader steps of this rank's
   * share of the global stream (see the module comment), handed out together by {@link nextStep}.
   */
  static forTraining(gpu: Gpu, dataset: Dataset, options: TrainingLoaderOptions): BatchLoader {
    const { accum, startStep, rank = 0, ranks = 1 } = options;
    const loader = new BatchLoader(gpu, dataset, {
      batchSize: options.batchSize,
      seed: options.seed,
      augmenter: options.augmenter,
    });
    loader.stepOf = (p) => Math.floor(p / accum) * accum * ranks + rank * accum + (p % accum);
    loader.position = startStep * accum;
    loader.accum = accum;
    return loader;
  }

  constructor(readonly gpu: Gpu, readonly dataset: Dataset, readonly options: LoaderOptions) {
    const { batchSize } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new Error(`batch size must be a positive integer, not ${batchSize}`);
    }
    const dropLast = options.dropLast ?? true;
    this.stepsPerEpoch = dropLast
      ? Math.floor(dataset.length / batchSize)
      : Math.ceil(dataset.length / batchSize);
    if (this.stepsPerEpoch === 0) {
      throw new Error(
        `${dataset.name} has ${dataset.length} samples, fewer than one batch of ${batchSize}: ` +
          "lower the batch size",
      );
    }
    const augmenter = options.augmenter;
    if (augmenter) {
      const { height, width, channels } = augmenter.input;
      if (height !== dataset.height || width !== dataset.width || channels !== dataset.channels) {
        throw new Error(
          `augmenter expects ${height}x${width}x${channels} images, ${dataset.name} has ` +
            `${dataset.height}x${dataset.width}x${dataset.channels}`,
        );
      }
    }
    this.position = options.startStep ?? 0;
  }

  /** The dataset indices of a step's samples. */
  indicesOf(step: number): Uint32Array {
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const start = (step % this.stepsPerEpoch) * this.options.batchSize;
    const end = Math.min(start + this.options.batchSize, this.dataset.length);
    return this.order(epoch).subarray(start, end);
  }

  /**
   * The batch of the next step. Loading of the step after it starts now, so it is read,
   * uploaded and augmented while the caller works on this one.
   */
  next(): Promise<Batch> {
    if (this.closed) return Promise.reject(new Error("BatchLoader: next() after close()"));
    const step = this.stepOf(this.position++);
    const current = this.pending?.step === step ? this.pending.batch : this.load(step);
    const following = this.stepOf(this.position);
    this.pending = { step: following, batch: this.load(following) };
    return current;
  }

  /** The micro-batches of the next optimizer step (a loader made by {@link forTraining}). */
  async nextStep(): Promise<StepBatches> {
    const batches: Batch[] = [];
    for (let i = 0; i < this.accum; i++) batches.push(await this.next());
    return {
      microBatches: batches.map(toMicroBatch),
      release: () => batches.forEach((b) => b.release()),
    };
  }

  /** Batches forever (stop with `break`; then call close()). */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    while (!this.closed) yield await this.next();
  }

  /** Drop the prefetched batch (releasing its tensors); the loader cannot be used afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const pending = this.pending;
    this.pending = undefined;
    if (pending) {
      try {
        (await pending.batch).release();
      } catch {
        // A failed prefetch nobody asked for is not an error.
      }
    }
  }

  private order(epoch: number): Uint32Array {
    let order = this.orders.get(epoch);
    if (!order) {
      const length = this.dataset.length;
      order = this.options.shuffle === false
        ? Uint32Array.from({ length }, (_, i) => i)
        : shuffledOrder(length, this.options.seed, epoch);
      // Keep the current and the next epoch only.
      for (const e of this.orders.keys()) if (e < epoch - 1) this.orders.delete(e);
      this.orders.set(epoch, order);
    }
    return order;
  }

  private load(step: number): Promise<Batch> {
    const indices = this.indicesOf(step);
    const promise = this.options.augmenter && this.dataset.randomResizedCrops
      ? this.loadCrops(step, indices, this.options.augmenter)
      : this.loadImages(step, indices);
    // Errors surface when the batch is asked for, not as an unhandled rejection before that.
    promise.catch(() => {});
    return promise;
  }

  /** Fixed-size images uploaded whole; the views (if any) are cut from them on the GPU. */
  private async loadImages(step: number, indices: Uint32Array): Promise<Batch> {
    const { dataset, gpu } = this;
    const augmenter = this.options.augmenter;
    const { pixels, labels } = await dataset.batch(indices);
    const images = uploadPixels(gpu, pixels, [
      indices.length,
      dataset.height,
      dataset.width,
      dataset.channels,
    ]);
    const views = augmenter?.views(images, this.options.seed, step);
    return this.assemble(step, indices, labels, images, views);
  }

  /** Both views' crops cut by the dataset on the CPU; the GPU does the rest. */
  private async loadCrops(
    step: number,
    indices: Uint32Array,
    augmenter: Augmenter,
  ): Promise<Batch> {
    const { seed } = this.options;
    const [view1, view2] = augmenter.config.views;
    const { views: crops, labels } = await this.dataset.randomResizedCrops!(indices, {
      seed,
      step,
      size: augmenter.outputSize,
      views: [cropViewSpec(view1), cropViewSpec(view2)],
    });
    const views = augmenter.viewsFromCrops(crops, indices.length, seed, step);
    return this.assemble(step, indices, labels, undefined, views);
  }

  private assemble(
    step: number,
    indices: Uint32Array,
    labels: Int32Array,
    images: Tensor | undefined,
    views: Views | undefined,
  ): Batch {
    const augmenter = this.options.augmenter;
    const branches = views && augmenter
      ? branchInputs(augmenter, views, this.options.seed, step)
      : undefined;
    return {
      step,
      epoch: Math.floor(step / this.stepsPerEpoch),
      indices,
      images,
      labels,
      views,
      branches,
      release() {
        images?.release();
        if (views && branches) releaseBranches(views, branches);
      },
    };
  }
}

/** The rescaled branch inputs, or the views themselves when the config has no rescale. */
function branchInputs(augmenter: Augmenter, views: Views, seed: number, step: number): BranchViews {
  if (augmenter.config.rescale) return augmenter.rescaleBranches(views, seed, step);
  const size = augmenter.outputSize;
  return {
    sizes: { online: [size, size], target: [size, size] },
    online: [views.view1, views.view2],
    target: [views.view1, views.view2],
  };
}

/** A batch's branch inputs in the model's shape (online views, target views). */
function toMicroBatch(batch: Batch): MicroBatch {
  const { online, target } = batch.branches!;
  return { view1: online[0], view2: online[1], targetView1: target[0], targetView2: target[1] };
}
