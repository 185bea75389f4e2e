/**
 * The augmentation pipeline: uint8 pixels -> GPU f32 in [0, 1] -> two independently augmented,
 * normalised views at the training resolution, plus the optional per-branch batch rescale.
 * Random parameters come from `augment_params.ts` (Philox, keyed by seed/step/sample/view), are
 * uploaded once per view and batch, and every pixel operation runs in WGSL (kernels/augment).
 */
import type { Gpu, Tensor } from "../runtime/gpu.ts";
import {
  AUGMENT_PARAM_STRIDE,
  blurSolarizeNormalize,
  colourJitterGrayscale,
  cropResizeFlip,
  rescaleBilinear,
  unpackBytes,
} from "../kernels/augment.ts";
import { type AugmentConfig, validateAugmentConfig } from "./augment_config.ts";
import {
  type BranchSizes,
  packAugmentations,
  type SampleAugmentation,
  sampleBatch,
  sampleBranchSizes,
} from "./augment_params.ts";

/** Shape of the input images plus the normalisation statistics (one value per channel). */
export interface AugmentInput {
  height: number;
  width: number;
  channels: number;
  mean: readonly number[];
  std: readonly number[];
}

/** The two views of a batch, [N, S, S, C] normalised. */
export interface Views {
  view1: Tensor;
  view2: Tensor;
}

/** Branch inputs after the per-branch rescale. */
export interface BranchViews {
  sizes: BranchSizes;
  /** Online inputs of view 1 and view 2. */
  online: [Tensor, Tensor];
  /** Target inputs of view 1 and view 2. */
  target: [Tensor, Tensor];
}

/**
 * Upload uint8 pixels (HWC images back to back) as a [N, H, W, C] f32 tensor in [0, 1]: the bytes
 * travel packed 4 per word (a quarter of the f32 upload) and are converted on the GPU.
 */
export function uploadPixels(
  gpu: Gpu,
  pixels: Uint8Array,
  shape: [number, number, number, number],
): Tensor {
  const count = shape[0] * shape[1] * shape[2] * shape[3];
  if (pixels.length !== count) {
    throw new Error(
      `uploadPixels: ${pixels.length} bytes for ${shape[0]} images of ` +
        `${shape[1]}x${shape[2]}x${shape[3]} (${count} expected)`,
    );
  }
  const words = new Uint32Array(Math.ceil(count / 4));
  new Uint8Array(words.buffer).set(pixels);
  const packed = gpu.upload(words, [words.length], "u32");
  const images = gpu.empty(shape, "f32", "images");
  unpackBytes(gpu, packed, count, images);
  packed.release();
  return images;
}

/** One GPU tensor the augmentation allocates (each is bound whole, so each must fit a binding). */
export interface AugmentTensor {
  label: string;
  bytes: number;
}

/**
 * The GPU tensors that augmenting one view of `n` images allocates, largest first, without
 * allocating them: from CPU-cut crops (`viewsFromCrops`, image folders) or from a batch of
 * `source.height` x `source.width` images already on the GPU (`views`; the batch's own tensors,
 * its packed upload and f32 images, are listed too). Compare the first with the adapter's
 * `maxBindingBytes`.
 */
export function augmentTensors(
  n: number,
  outputSize: number,
  channels: number,
  source: "crops" | { height: number; width: number },
): AugmentTensor[] {
  const viewBytes = n * outputSize * outputSize * channels * 4;
  const packed = (values: number) => Math.ceil(values / 4) * 4;
  const tensors: AugmentTensor[] = [
    { label: "augment.params", bytes: n * AUGMENT_PARAM_STRIDE * 4 },
    { label: "augment.cropped", bytes: viewBytes },
    { label: "augment.blur", bytes: viewBytes },
    { label: "view", bytes: viewBytes },
  ];
  if (source === "crops") {
    tensors.push({ label: "crops (packed uint8)", bytes: packed(viewBytes / 4) });
  } else {
    const imageValues = n * source.height * source.width * channels;
    tensors.push(
      { label: "images (packed uint8)", bytes: packed(imageValues) },
      { label: "images", bytes: imageValues * 4 },
      { label: "augment.wide", bytes: n * source.height * outputSize * channels * 4 },
    );
  }
  return tensors.sort((a, b) => b.bytes - a.bytes);
}

/** Two-view augmentation of image batches on the GPU; same seed and step, same views. */
export class Augmenter {
  constructor(
    readonly gpu: Gpu,
    readonly config: AugmentConfig,
    readonly input: AugmentInput,
    /** Side of the square training views. */
    readonly outputSize: number,
  ) {
    validateAugmentConfig(config);
    if (input.mean.length !== input.channels || input.std.length !== input.channels) {
      throw new Error(`Augmenter: mean/std need ${input.channels} values (one per channel)`);
    }
    if (input.std.some((s) => !(s > 0))) throw new Error("Augmenter: std values must be > 0");
    if (!Number.isInteger(outputSize) || outputSize < 1) {
      throw new Error(`Augmenter: output size must be a positive integer, not ${outputSize}`);
    }
  }

  /** Upload `n` uint8 HWC images and convert them to f32 in [0, 1] ([n, H, W, C]) on the GPU. */
  uploadBatch(pixels: Uint8Array, n: number): Tensor {
    const { height, width, channels } = this.input;
    return uploadPixels(this.gpu, pixels, [n, height, width, channels]);
  }

  /** The parameters `views` uses for view 0 or 1 of an n-image batch at (seed, step). */
  sampleParams(n: number, seed: number, step: number, view: 0 | 1): SampleAugmentation[] {
    return sampleBatch(this.config.views[view], this.input, n, seed, step, view);
  }

  /** Two augmented, normalised views [N, S, S, C] of `images` [N, H, W, C] in [0, 1]. */
  views(images: Tensor, seed: number, step: number): Views {
    const n = this.checkImages(images);
    const view1 = this.augment(images, this.sampleParams(n, seed, step, 0), 0);
    const view2 = this.augment(images, this.sampleParams(n, seed, step, 1), 1);
    return { view1, view2 };
  }

  /** One view from explicit per-sample parameters (tests, previews, custom pipelines). */
  augment(images: Tensor, samples: readonly SampleAugmentation[], view: 0 | 1): Tensor {
    const n = this.checkImages(images);
    if (samples.length !== n) throw new Error(`augment: ${samples.length} records for ${n} images`);
    const { channels } = this.input;
    const size = this.outputSize;
    const params = this.gpu.upload(packAugmentations(samples, this.input), [
      n,
      AUGMENT_PARAM_STRIDE,
    ]);
    const cropped = this.gpu.empty([n, size, size, channels], "f32", "augment.cropped");
    cropResizeFlip(this.gpu, images, params, cropped, this.config.views[view].crop.interpolation);
    return this.colourBlurNormalize(cropped, params, view);
  }

  /**
   * Both views from random resized crops already cut (and flipped) on the CPU, uint8
   * [n, S, S, C] each with S the output size (`Dataset.randomResizedCrops`): the GPU applies the
   * rest of each view with the same per-(seed, step, sample, view) parameters as `views`.
   */
  viewsFromCrops(crops: [Uint8Array, Uint8Array], n: number, seed: number, step: number): Views {
    const [view1, view2] = ([0, 1] as const).map((v) => {
      const size = this.outputSize;
      const { channels } = this.input;
      const cropped = uploadPixels(this.gpu, crops[v], [n, size, size, channels]);
      // The crop and flip are done: the GPU's record says "whole image, not flipped".
      const samples = this.sampleParams(n, seed, step, v).map((s) => ({
        ...s,
        crop: { top: 0, left: 0, height: size, width: size },
        flip: false,
      }));
      const params = this.gpu.upload(packAugmentations(samples, { height: size, width: size }), [
        n,
        AUGMENT_PARAM_STRIDE,
      ]);
      return this.colourBlurNormalize(cropped, params, v);
    });
    return { view1, view2 };
  }

  /** Colour jitter, grayscale, blur, solarize, normalise; releases `cropped` and `params`. */
  private colourBlurNormalize(cropped: Tensor, params: Tensor, view: 0 | 1): Tensor {
    const viewConfig = this.config.views[view];
    const [n, size, , channels] = cropped.shape;
    colourJitterGrayscale(this.gpu, cropped, params);
    const out = this.gpu.empty([n, size, size, channels], "f32", `view${view + 1}`);
    blurSolarizeNormalize(this.gpu, cropped, params, out, {
      mean: this.input.mean,
      std: this.input.std,
      solarizeThreshold: viewConfig.solarize.threshold,
      blurKernelSize: viewConfig.blur.kernelSize,
    });
    cropped.release();
    params.release();
    return out;
  }

  /** The per-branch sizes at a step (requires `config.rescale`). */
  branchSizes(seed: number, step: number): BranchSizes {
    if (!this.config.rescale) throw new Error("branchSizes: the augment config has no rescale");
    return sampleBranchSizes(this.config.rescale, this.outputSize, seed, step);
  }

  /**
   * The released code's per-branch batch rescale of normalised views: online inputs of each
   * view at a random size in the online range, target inputs in the target range (one size per
   * branch and view per step). A size equal to the view's own is a copy-free pass-through: the
   * returned tensor is then the view itself, so release views and branch inputs with care
   * (`releaseBranches` does it right).
   */
  rescaleBranches(views: Views, seed: number, step: number): BranchViews {
    const sizes = this.branchSizes(seed, step);
    const resize = (t: Tensor, s: number): Tensor => {
      if (s === t.shape[1] && s === t.shape[2]) return t;
      const out = this.gpu.empty([t.shape[0], s, s, t.shape[3]], "f32", "augment.rescaled");
      rescaleBilinear(this.gpu, t, out);
      return out;
    };
    return {
      sizes,
      online: [resize(views.view1, sizes.online[0]), resize(views.view2, sizes.online[1])],
      target: [resize(views.view1, sizes.target[0]), resize(views.view2, sizes.target[1])],
    };
  }

  private checkImages(images: Tensor): number {
    const { height, width, channels } = this.input;
    const [n, h, w, c] = images.shape;
    if (images.shape.length !== 4 || h !== height || w !== width || c !== channels) {
      throw new Error(
        `Augmenter: images [${images.shape}] are not [N, ${height}, ${width}, ${channels}]`,
      );
    }
    return n;
  }
}

/** Release views and their rescaled branch inputs exactly once each. */
export function releaseBranches(views: Views, branches: BranchViews): void {
  const all = new Set([views.view1, views.view2, ...branches.online, ...branches.target]);
  for (const t of all) t.release();
}
