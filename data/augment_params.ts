/**
 * Per-sample augmentation parameters, sampled on the CPU the way torchvision samples them, from
 * the counter-based Philox streams of `random.ts`: the parameters of (seed, step, sample, view)
 * are a pure function of those four numbers. Each parameter has a fixed draw index inside its
 * stream ({@link DRAWS}), so changing one probability never shifts the others' random numbers.
 * The GPU receives one packed record per sample (layout in kernels/augment.wgsl).
 */
import { AUGMENT_PARAM_STRIDE } from "../kernels/augment.ts";
import type { RescaleConfig, ViewConfig } from "./augment_config.ts";
import { CounterStream, DOMAIN_AUGMENT, DOMAIN_RESCALE, stepWords } from "./random.ts";

/** A crop box in input pixels. */
export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Colour jitter factors and the order of the four ops (0 brightness, 1 contrast, ...). */
export interface JitterParams {
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  order: [number, number, number, number];
}

/** Everything random about one view of one sample. */
export interface SampleAugmentation {
  crop: CropBox;
  flip: boolean;
  /** null when the jitter was not applied. */
  jitter: JitterParams | null;
  grayscale: boolean;
  /** 0 when not blurred. */
  blurSigma: number;
  solarize: boolean;
}

/** Draw indices inside a sample's stream (crop tries use 4 draws each). */
export const DRAWS = {
  cropTries: 0, // 10 tries x (scale, log ratio, top, left)
  flip: 40,
  jitterApply: 41,
  brightness: 42,
  contrast: 43,
  saturation: 44,
  hue: 45,
  order: 46, // 3 draws (Fisher-Yates on 4 ops)
  grayscale: 49,
  blurApply: 50,
  blurSigma: 51,
  solarize: 52,
} as const;

const CROP_TRIES = 10;

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * torchvision RandomResizedCrop.get_params: up to 10 tries of (area fraction uniform in
 * `scale`, log aspect ratio uniform in log(`ratio`)), accepting the first box that fits; else
 * the central crop clamped to the ratio range (or the whole image).
 */
export function sampleCrop(
  stream: CounterStream,
  height: number,
  width: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): CropBox {
  const area = height * width;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let t = 0; t < CROP_TRIES; t++) {
    const d = DRAWS.cropTries + 4 * t;
    const targetArea = area * stream.uniformIn(d, scale[0], scale[1]);
    const aspect = Math.exp(stream.uniformIn(d + 1, logLo, logHi));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = stream.integer(d + 2, height - h + 1);
      const left = stream.integer(d + 3, width - w + 1);
      return { top, left, height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number, h: number;
  if (inRatio < Math.min(ratio[0], ratio[1])) {
    w = width;
    h = roundHalfEven(w / Math.min(ratio[0], ratio[1]));
  } else if (inRatio > Math.max(ratio[0], ratio[1])) {
    h = height;
    w = roundHalfEven(h * Math.max(ratio[0], ratio[1]));
  } else {
    w = width;
    h = height;
  }
  return {
    top: Math.floor((height - h) / 2),
    left: Math.floor((width - w) / 2),
    height: h,
    width: w,
  };
}

/** torchvision's factor range for brightness/contrast/saturation: [max(0, 1 - x), 1 + x]. */
function factor(stream: CounterStream, d: number, strength: number): number {
  return strength === 0 ? 1 : stream.uniformIn(d, Math.max(0, 1 - strength), 1 + strength);
}

/** The stream of one (seed, step, sample, view). */
export function sampleStream(
  seed: number,
  step: number,
  sample: number,
  view: number,
): CounterStream {
  const [stepLow, stepHigh] = stepWords(step);
  return new CounterStream(seed, DOMAIN_AUGMENT + view, sample, stepLow, stepHigh);
}

/** The crop (against `height` x `width`) and flip draws of a sample's stream. */
function cropAndFlipOf(
  stream: CounterStream,
  view: Pick<ViewConfig, "crop" | "flipP">,
  height: number,
  width: number,
): { crop: CropBox; flip: boolean } {
  return {
    crop: sampleCrop(stream, height, width, view.crop.scale, view.crop.ratio),
    flip: stream.uniform(DRAWS.flip) < view.flipP,
  };
}

/**
 * The random resized crop and flip of one view of one sample, sampled against that image's own
 * `height` x `width`: the same draws as {@link sampleAugmentation} makes for them, so the decode
 * workers can cut the crops of images of any size while the GPU applies the rest.
 */
export function sampleCropAndFlip(
  view: Pick<ViewConfig, "crop" | "flipP">,
  height: number,
  width: number,
  seed: number,
  step: number,
  sample: number,
  viewIndex: number,
): { crop: CropBox; flip: boolean } {
  return cropAndFlipOf(sampleStream(seed, step, sample, viewIndex), view, height, width);
}

/**
 * Sample the augmentation of one view of one sample (input `height` x `width` x `channels`).
 * On 1-channel data saturation, hue and grayscale are recorded as off (their draws are still
 * reserved).
 */
export function sampleAugmentation(
  view: ViewConfig,
  input: { height: number; width: number; channels: number },
  seed: number,
  step: number,
  sample: number,
  viewIndex: number,
): SampleAugmentation {
  const s = sampleStream(seed, step, sample, viewIndex);
  const colour = input.channels === 3;
  const { crop, flip } = cropAndFlipOf(s, view, input.height, input.width);
  let jitter: JitterParams | null = null;
  if (s.uniform(DRAWS.jitterApply) < view.jitter.p) {
    const order: [number, number, number, number] = [0, 1, 2, 3];
    for (let i = 3; i > 0; i--) {
      const j = s.integer(DRAWS.order + 3 - i, i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const hue = view.jitter.hue === 0
      ? 0
      : s.uniformIn(DRAWS.hue, -view.jitter.hue, view.jitter.hue);
    jitter = {
      brightness: factor(s, DRAWS.brightness, view.jitter.brightness),
      contrast: factor(s, DRAWS.contrast, view.jitter.contrast),
      saturation: colour ? factor(s, DRAWS.saturation, view.jitter.saturation) : 1,
      hue: colour ? hue : 0,
      order,
    };
  }
  const grayscale = colour && s.uniform(DRAWS.grayscale) < view.grayscaleP;
  const blurSigma = s.uniform(DRAWS.blurApply) < view.blur.p
    ? s.uniformIn(DRAWS.blurSigma, view.blur.sigma[0], view.blur.sigma[1])
    : 0;
  const solarize = s.uniform(DRAWS.solarize) < view.solarize.p;
  return { crop, flip, jitter, grayscale, blurSigma, solarize };
}

/** Sample a batch of `count` samples of one view (sample indices 0..count-1 at this step). */
export function sampleBatch(
  view: ViewConfig,
  input: { height: number; width: number; channels: number },
  count: number,
  seed: number,
  step: number,
  viewIndex: number,
): SampleAugmentation[] {
  return Array.from(
    { length: count },
    (_, n) => sampleAugmentation(view, input, seed, step, n, viewIndex),
  );
}

/** Pack records for the GPU ({@link AUGMENT_PARAM_STRIDE} f32 each; see augment.wgsl). */
export function packAugmentations(
  samples: readonly SampleAugmentation[],
  input: { height: number; width: number },
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(samples.length * AUGMENT_PARAM_STRIDE);
  samples.forEach((a, n) => {
    const { top, left, height, width } = a.crop;
    if (
      !(Number.isInteger(top) && Number.isInteger(left) && height >= 1 && width >= 1 &&
        top >= 0 && left >= 0 && top + height <= input.height && left + width <= input.width)
    ) {
      throw new Error(
        `sample ${n}: crop ${JSON.stringify(a.crop)} is not inside ${input.height}x${input.width}`,
      );
    }
    const r = out.subarray(n * AUGMENT_PARAM_STRIDE, (n + 1) * AUGMENT_PARAM_STRIDE);
    r[0] = top;
    r[1] = left;
    r[2] = height;
    r[3] = width;
    r[4] = a.flip ? 1 : 0;
    if (a.jitter) {
      r[5] = 1;
      r[6] = a.jitter.brightness;
      r[7] = a.jitter.contrast;
      r[8] = a.jitter.saturation;
      r[9] = a.jitter.hue;
      const o = a.jitter.order;
      if ([...o].sort().join() !== "0,1,2,3") throw new Error(`sample ${n}: bad jitter order ${o}`);
      r[10] = o[0] | (o[1] << 2) | (o[2] << 4) | (o[3] << 6);
    } else {
      r[6] = r[7] = r[8] = 1;
    }
    r[11] = a.grayscale ? 1 : 0;
    r[12] = a.blurSigma;
    r[13] = a.solarize ? 1 : 0;
  });
  return out;
}

/** Square sizes of the per-branch rescale at one step. */
export interface BranchSizes {
  /** Online branch sizes of view 1 and view 2. */
  online: [number, number];
  /** Target branch sizes of view 1 and view 2. */
  target: [number, number];
}

/** A rescale range scaled to the training resolution, at least 1 px. */
export function scaledRange(
  range: [number, number],
  config: RescaleConfig,
  trainingSize: number,
): [number, number] {
  const factor = trainingSize / config.referenceSize;
  const lo = Math.max(1, Math.round(range[0] * factor));
  return [lo, Math.max(lo, Math.round(range[1] * factor))];
}

/** The released code's random sizes (np.random.randint, inclusive ranges), scaled. */
export function sampleBranchSizes(
  config: RescaleConfig,
  trainingSize: number,
  seed: number,
  step: number,
): BranchSizes {
  const [stepLow, stepHigh] = stepWords(step);
  const s = new CounterStream(seed, DOMAIN_RESCALE, 0, stepLow, stepHigh);
  const pick = (d: number, range: [number, number]) => {
    const [lo, hi] = scaledRange(range, config, trainingSize);
    return lo + s.integer(d, hi - lo + 1);
  };
  return {
    online: [pick(0, config.online), pick(1, config.online)],
    target: [pick(2, config.target), pick(3, config.target)],
  };
}
