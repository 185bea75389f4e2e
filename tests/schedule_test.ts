/**
 * models/schedule.ts (no GPU): step counts, both learning-rate shapes against hand-computed
 * values, and the EMA momentum through the Schedule object.
 */
import assert from "node:assert/strict";
import {
  learningRateAt,
  momentumAt,
  RELEASED_WARMUP_RATIO,
  releasedLearningRateAt,
  Schedule,
} from "../models/schedule.ts";

const close = (got: number, expected: number, what: string, tol = 1e-12) =>
  assert.ok(
    Math.abs(got - expected) <= tol * Math.max(1, Math.abs(expected)),
    `${what}: ${got} vs ${expected}`,
  );

Deno.test("schedule: steps per epoch, total steps, warm-up steps, epoch ends", () => {
  const s = new Schedule({
    trainImages: 1000,
    imagesPerStep: 64,
    epochs: 3,
    baseLr: 1,
    warmupEpochs: 0.5,
    lrShape: "per-step",
    emaBase: 0.99,
  });
  assert.equal(s.stepsPerEpoch, 15); // floor(1000 / 64): the last partial batch is dropped
  assert.equal(s.totalSteps, 45);
  assert.equal(s.warmupSteps, 8); // round(7.5)
  assert.equal(s.endsEpoch(15), true);
  assert.equal(s.endsEpoch(16), false);
  assert.equal(s.epochAt(30), 2);
  const explicit = new Schedule({ ...s.config, steps: 7 });
  assert.equal(explicit.totalSteps, 7);
  assert.throws(
    () => new Schedule({ ...s.config, imagesPerStep: 2000 }),
    /has 1000 images, fewer than one step's 2000: lower the batch or the accumulation/,
  );
});

Deno.test("schedule: per-step shape warms up from base/W and decays on a cosine per step", () => {
  // W = 4 warm-up steps of 12: 0.25, 0.5, 0.75, 1, then cos over the 8 remaining steps.
  const lrs = Array.from({ length: 12 }, (_, k) => learningRateAt(k, 12, 2, 4));
  assert.deepEqual(lrs.slice(0, 4), [0.5, 1, 1.5, 2]);
  close(lrs[4], 2, "first decay step");
  close(lrs[8], 1, "half-way through the decay"); // 2 * (1 + cos(pi/2)) / 2
  close(lrs[11], 2 * 0.5 * (1 + Math.cos(Math.PI * 7 / 8)), "last step");
});

Deno.test("schedule: released shape = mmcv 1.0.3 per-epoch cosine with a linear warm-up factor", () => {
  // 10 steps per epoch, 4 epochs, 1 warm-up epoch, base 4.8.
  const s = new Schedule({
    trainImages: 100,
    imagesPerStep: 10,
    epochs: 4,
    baseLr: 4.8,
    warmupEpochs: 1,
    lrShape: "released",
    emaBase: 0.99,
  });
  const regular = (epoch: number) => 4.8 * (1 + Math.cos(Math.PI * epoch / 4)) / 2;
  // Step 0: 1e-4 of the base (the epoch-0 cosine value is the base).
  close(s.lrAt(0), 4.8 * RELEASED_WARMUP_RATIO, "step 0");
  // Step 5 of 10 warm-up steps: factor 1 - (1 - 0.5)(1 - 1e-4).
  close(s.lrAt(5), 4.8 * (1 - 0.5 * (1 - 1e-4)), "half-way through the warm-up");
  // After the warm-up the value is constant inside an epoch and steps at epoch boundaries.
  for (let k = 10; k < 20; k++) close(s.lrAt(k), regular(1), `epoch 1, step ${k}`);
  for (let k = 30; k < 40; k++) close(s.lrAt(k), regular(3), `epoch 3, step ${k}`);
  close(releasedLearningRateAt(25, 10, 4, 4.8, 10), regular(2), "epoch 2");
  // The warm-up factor multiplies the epoch's cosine value, not the base.
  close(
    releasedLearningRateAt(15, 10, 4, 4.8, 20),
    regular(1) * (1 - 0.25 * (1 - 1e-4)),
    "long warm-up",
  );
});

Deno.test("schedule: EMA momentum through the schedule equals METHOD.md's formula", () => {
  const s = new Schedule({
    trainImages: 640,
    imagesPerStep: 64,
    epochs: 10,
    baseLr: 1,
    warmupEpochs: 0,
    lrShape: "per-step",
    emaBase: 0.9,
  });
  assert.equal(s.emaAt(0), 0.9);
  close(s.emaAt(50), 1 - 0.1 * (Math.cos(Math.PI / 2) + 1) / 2, "half-way");
  assert.equal(s.emaAt(37), momentumAt(37, 100, 0.9));
});
