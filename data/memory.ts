/** A dataset held in memory as one uint8 HWC array plus labels (idx, CIFAR, tests). */
import type { Dataset } from "./dataset.ts";
import { checkIndices } from "./common.ts";

/** Shape and statistics of an in-memory dataset. */
export interface ArrayDatasetInfo {
  name: string;
  classes: number;
  height: number;
  width: number;
  channels: number;
  mean: number[];
  std: number[];
}

/** Images stored back to back (uint8, HWC) with one label each. */
export class ArrayDataset implements Dataset {
  readonly name: string;
  readonly length: number;
  readonly classes: number;
  readonly height: number;
  readonly width: number;
  readonly channels: number;
  readonly mean: number[];
  readonly std: number[];
  private readonly imageBytes: number;

  constructor(info: ArrayDatasetInfo, readonly pixels: Uint8Array, readonly labels: Int32Array) {
    this.name = info.name;
    this.classes = info.classes;
    this.height = info.height;
    this.width = info.width;
    this.channels = info.channels;
    this.mean = info.mean;
    this.std = info.std;
    this.imageBytes = info.height * info.width * info.channels;
    this.length = labels.length;
    if (info.mean.length !== info.channels || info.std.length !== info.channels) {
      throw new Error(`${info.name}: mean/std need one value per channel (${info.channels})`);
    }
    if (pixels.length !== this.length * this.imageBytes) {
      throw new Error(
        `${info.name}: ${pixels.length} pixel bytes for ${this.length} images of ` +
          `${info.height}x${info.width}x${info.channels}`,
      );
    }
    for (let i = 0; i < labels.length; i++) {
      if (!(labels[i] >= 0 && labels[i] < info.classes)) {
        throw new Error(
          `${info.name}: label ${labels[i]} of sample ${i} outside [0, ${info.classes})`,
        );
      }
    }
  }

  /** Pixels and labels of the given samples, copied in order. */
  // deno-lint-ignore require-await
  async batch(indices: ArrayLike<number>): Promise<{ pixels: Uint8Array; labels: Int32Array }> {
    checkIndices(this.name, indices, this.length);
    const pixels = new Uint8Array(indices.length * this.imageBytes);
    const labels = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      pixels.set(
        this.pixels.subarray(i * this.imageBytes, (i + 1) * this.imageBytes),
        k * this.imageBytes,
      );
      labels[k] = this.labels[i];
    }
    return { pixels, labels };
  }
}
