/** Learning-rate schedule of METHOD.md: linear warm-up, then cosine decay to 0. */

/** Learning rate at optimizer step `step` (0-based) of `totalSteps`. */
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

/** METHOD.md's linear scaling: 4.8 at batch 4096. */
export function scaledLearningRate(batch: number, lrAt4096 = 4.8): number {
  return lrAt4096 * batch / 4096;
}
