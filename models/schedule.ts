/**
 * A run's schedule (METHOD.md "Optimisation" and "Framework"): how many optimizer steps, how
 * many per epoch, the learning rate and the target's EMA momentum at each step.
 *
 * Two learning-rate shapes:
 * - `per-step`: linear warm-up from base/W to base over W steps, then a cosine from base to 0
 *   over the remaining steps, evaluated every step (short runs change lr smoothly).
 * - `released`: what the released code's mmcv 1.0.3 `CosineAnnealing` hook with
 *   `warmup='linear', warmup_ratio=1e-4, warmup_by_epoch=True` computes: a cosine over all
 *   epochs, stepped once per epoch (`base * (1 + cos(pi * epoch / epochs)) / 2`), and during the
 *   first W steps that value times `1 - (1 - step / W) * (1 - 1e-4)` (so step 0 runs at 1e-4 x).
 */

/** The learning-rate shapes {@link Schedule} knows. */
export const LR_SHAPES = ["per-step", "released"] as const;
export type LrShape = typeof LR_SHAPES[number];

/** The released code's warm-up starts at this fraction of the learning rate. */
export const RELEASED_WARMUP_RATIO = 1e-4;

/** What a schedule is computed from. */
export interface ScheduleConfig {
  /** Images in the training split. */
  trainImages: number;
  /** Images per optimizer step (batch x accum x ranks). */
  imagesPerStep: number;
  /** Epochs over the training split, unless `steps` is given. */
  epochs: number;
  steps?: number;
  /** Base learning rate (already scaled for the effective batch). */
  baseLr: number;
  warmupEpochs: number;
  lrShape: LrShape;
  /** EMA momentum at step 0 (rises to 1 on a cosine). */
  emaBase: number;
}

/** Steps, epochs, learning rate and EMA momentum of one run. */
export class Schedule {
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  readonly warmupSteps: number;

  constructor(readonly config: ScheduleConfig) {
    this.stepsPerEpoch = Math.floor(config.trainImages / config.imagesPerStep);
    if (this.stepsPerEpoch < 1) {
      throw new RangeError(
        `the training split has ${config.trainImages} images, fewer than one step's ` +
          `${config.imagesPerStep}: lower the batch or the accumulation`,
      );
    }
    this.totalSteps = config.steps ?? config.epochs * this.stepsPerEpoch;
    this.warmupSteps = Math.round(config.warmupEpochs * this.stepsPerEpoch);
  }

  /** Learning rate of optimizer step `step` (0-based). */
  lrAt(step: number): number {
    const { baseLr, lrShape } = this.config;
    if (lrShape === "released") {
      return releasedLearningRateAt(
        step,
        this.stepsPerEpoch,
        this.totalSteps / this.stepsPerEpoch,
        baseLr,
        this.warmupSteps,
      );
    }
    return learningRateAt(step, this.totalSteps, baseLr, this.warmupSteps);
  }

  /** EMA momentum of the target after optimizer step `step` (0-based). */
  emaAt(step: number): number {
    return momentumAt(step, this.totalSteps, this.config.emaBase);
  }

  /** Epochs done after `stepsDone` optimizer steps (fractional). */
  epochAt(stepsDone: number): number {
    return stepsDone / this.stepsPerEpoch;
  }

  /** Whether `stepsDone` steps end an epoch. */
  endsEpoch(stepsDone: number): boolean {
    return stepsDone % this.stepsPerEpoch === 0;
  }
}

/** `per-step` shape: learning rate at optimizer step `step` (0-based) of `totalSteps`. */
export function learningRateAt(
  step: number,
  totalSteps: number,
  baseLr: number,
  warmupSteps: number,
): number {
  if (warmupSteps > 0 && step < warmupSteps) return baseLr * (step + 1) / warmupSteps;
  const decaySteps = Math.max(1, totalSteps - warmupSteps);
  const progress = Math.min(1, (step - warmupSteps) / decaySteps);
  return baseLr * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** `released` shape (mmcv 1.0.3, see the module comment) at optimizer step `step` (0-based). */
export function releasedLearningRateAt(
  step: number,
  stepsPerEpoch: number,
  epochs: number,
  baseLr: number,
  warmupSteps: number,
): number {
  const epoch = Math.floor(step / stepsPerEpoch);
  const regular = baseLr * (1 + Math.cos(Math.PI * Math.min(1, epoch / epochs))) / 2;
  if (step >= warmupSteps) return regular;
  return regular * (1 - (1 - step / warmupSteps) * (1 - RELEASED_WARMUP_RATIO));
}

/**
 * METHOD.md's EMA momentum at step k of K: m = 1 - (1 - base) (cos(pi k / K) + 1) / 2, rising
 * from `base` at k = 0 to 1 at k = K.
 */
export function momentumAt(step: number, totalSteps: number, base = 0.99): number {
  if (!(totalSteps > 0)) throw new Error(`momentumAt: totalSteps must be > 0, got ${totalSteps}`);
  if (!(step >= 0 && step <= totalSteps)) {
    throw new Error(`momentumAt: step ${step} outside 0..${totalSteps}`);
  }
  if (!(base >= 0 && base <= 1)) throw new Error(`momentumAt: base ${base} outside [0, 1]`);
  return 1 - (1 - base) * (Math.cos(Math.PI * step / totalSteps) + 1) / 2;
}
