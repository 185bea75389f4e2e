/**
 * Augmentation settings as data. `imagenetViews()` is METHOD.md's pipeline (the released code's
 * `train_pipeline1` / `train_pipeline2`); `smallDataViews()` adapts it to 28x28 / 32x32 data.
 */

/** Resampling filter of the random resized crop. */
export type Interpolation = "bilinear" | "bicubic";

/** The random augmentations of one view, applied in this order. */
export interface ViewConfig {
  /** RandomResizedCrop: area fraction and aspect ratio ranges (torchvision sampling). */
  crop: { scale: [number, number]; ratio: [number, number]; interpolation: Interpolation };
  /** Probability of a horizontal flip. */
  flipP: number;
  /** ColorJitter applied with probability p; factors as in torchvision (0 = op off). */
  jitter: { p: number; brightness: number; contrast: number; saturation: number; hue: number };
  /** Probability of converting to grey (kept as 3 channels). */
  grayscaleP: number;
  /**
   * Gaussian blur with probability p, sigma uniform in `sigma`. `kernelSize` fixes the kernel
   * (odd, torchvision convention); by default the radius is ceil(3 sigma), an exact Gaussian like
   * the released code's PIL GaussianBlur(radius=sigma), which has no kernel size.
   */
  blur: { p: number; sigma: [number, number]; kernelSize?: number };
  /** Solarize (x >= threshold -> 1 - x) with probability p. */
  solarize: { p: number; threshold: number };
}

/**
 * The released code's per-branch batch rescale: each branch's views are resized bilinearly to a
 * random square size per step, online in `online`, target in `target` (inclusive ranges, in
 * pixels at `referenceSize`; scaled by trainingSize / referenceSize for other resolutions).
 */
export interface RescaleConfig {
  online: [number, number];
  target: [number, number];
  referenceSize: number;
}

/** Both views plus the optional branch rescale. */
export interface AugmentConfig {
  views: [ViewConfig, ViewConfig];
  /** Present to enable the per-branch random rescale (the trainer applies it). */
  rescale?: RescaleConfig;
}

/** The released code's rescale: online 96-224 px, target 128-224 px. */
export const RELEASED_RESCALE: RescaleConfig = {
  online: [96, 224],
  target: [128, 224],
  referenceSize: 224,
};

function imagenetView(blurP: number, solarizeP: number): ViewConfig {
  return {
    crop: { scale: [0.08, 1.0], ratio: [3 / 4, 4 / 3], interpolation: "bicubic" },
    flipP: 0.5,
    jitter: { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 },
    grayscaleP: 0.2,
    blur: { p: blurP, sigma: [0.1, 2.0] },
    solarize: { p: solarizeP, threshold: 0.5 },
  };
}

/**
 * METHOD.md's views for ImageNet-like data at 224 px: crop scale 0.08-1, aspect 3/4-4/3,
 * bicubic; flip 0.5; jitter (0.4, 0.4, 0.2, 0.1) p 0.8; grayscale 0.2; blur sigma 0.1-2 with
 * p 1.0 (view 1) / 0.1 (view 2); solarize p 0 (view 1) / 0.2 (view 2). Includes the released
 * code's per-branch rescale.
 */
export function imagenetViews(): AugmentConfig {
  return {
    views: [imagenetView(1.0, 0.0), imagenetView(0.1, 0.2)],
    rescale: { ...RELEASED_RESCALE },
  };
}

/**
 * Views for small images (28x28 grayscale, 32x32 colour). Differences from ImageNet's, and why:
 * - crop scale 0.3-1 (not 0.08): an 8% crop of a 28 px digit is ~8x8 px, too little to identify;
 * - bilinear (not bicubic): bicubic overshoot rings visibly at this size;
 * - blur sigma scaled with the image, 0.1-2.0 px at 224 -> x imageSize/224 (so sigma <= 0.25 px
 *   at 28 px), keeping the per-view blur probabilities 1.0 / 0.1;
 * - no per-branch rescale by default (set `rescale` to RELEASED_RESCALE to get it scaled).
 * Colour ops that need colour (saturation, hue, grayscale) are no-ops on 1-channel data; the
 * probabilities are unchanged so the random streams match the colour case.
 */
export function smallDataViews(imageSize = 28): AugmentConfig {
  const sigmaScale = imageSize / 224;
  const view = (blurP: number, solarizeP: number): ViewConfig => ({
    crop: { scale: [0.3, 1.0], ratio: [3 / 4, 4 / 3], interpolation: "bilinear" },
    flipP: 0.5,
    jitter: { p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 },
    grayscaleP: 0.2,
    blur: { p: blurP, sigma: [0.1 * sigmaScale, 2.0 * sigmaScale] },
    solarize: { p: solarizeP, threshold: 0.5 },
  });
  return { views: [view(1.0, 0.0), view(0.1, 0.2)] };
}

/** The config for a dataset: ImageNet views from 96 px up, small-data views below. */
export function augmentConfigFor(imageSize: number): AugmentConfig {
  return imageSize >= 96 ? imagenetViews() : smallDataViews(imageSize);
}

/** Check a config's ranges and probabilities; throws naming the bad field. */
export function validateAugmentConfig(config: AugmentConfig): void {
  const probability = (name: string, p: number) => {
    if (!(p >= 0 && p <= 1)) throw new Error(`augment config: ${name} = ${p} is not in [0, 1]`);
  };
  const range = (name: string, [lo, hi]: [number, number], min: number) => {
    if (!(lo >= min && hi >= lo)) throw new Error(`augment config: ${name} = [${lo}, ${hi}]`);
  };
  config.views.forEach((v, i) => {
    const at = `views[${i}]`;
    range(`${at}.crop.scale`, v.crop.scale, 0);
    if (v.crop.scale[1] <= 0) throw new Error(`augment config: ${at}.crop.scale is empty`);
    range(`${at}.crop.ratio`, v.crop.ratio, Number.MIN_VALUE);
    probability(`${at}.flipP`, v.flipP);
    probability(`${at}.jitter.p`, v.jitter.p);
    for (const key of ["brightness", "contrast", "saturation"] as const) {
      if (!(v.jitter[key] >= 0)) throw new Error(`augment config: ${at}.jitter.${key} < 0`);
    }
    if (!(v.jitter.hue >= 0 && v.jitter.hue <= 0.5)) {
      throw new Error(`augment config: ${at}.jitter.hue = ${v.jitter.hue} is not in [0, 0.5]`);
    }
    probability(`${at}.grayscaleP`, v.grayscaleP);
    probability(`${at}.blur.p`, v.blur.p);
    range(`${at}.blur.sigma`, v.blur.sigma, 0);
    const k = v.blur.kernelSize;
    if (k !== undefined && !(Number.isInteger(k) && k % 2 === 1)) {
      throw new Error(`augment config: ${at}.blur.kernelSize = ${k} must be odd`);
    }
    probability(`${at}.solarize.p`, v.solarize.p);
  });
  if (config.rescale) {
    range("rescale.online", config.rescale.online, 1);
    range("rescale.target", config.rescale.target, 1);
  }
}
