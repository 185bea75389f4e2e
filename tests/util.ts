/** Shared test helpers: the validating GPU, seeded random data and the tolerance check. */
import { acquireGpu, type Gpu, type PlanKind } from "../runtime/gpu.ts";
import { SslModel } from "../models/ssl.ts";
export { Rng } from "../runtime/random.ts";

/** The shared GPU with per-dispatch validation scopes on, so bad dispatches throw by name. */
export function testGpu(): Promise<Gpu> {
  return acquireGpu({ validate: true });
}

/** Deno.test options for GPU tests: the device outlives single tests, so skip the sanitizers. */
export const gpuTest = { sanitizeOps: false, sanitizeResources: false } as const;

/** Tolerance of a comparison: |got - expected| <= atol + rtol * |expected|. */
export interface Tolerance {
  atol: number;
  rtol: number;
}

/**
 * Assert every element is within tolerance; the failure names the worst element
 * (index, got, expected) and how many failed.
 */
export function assertClose(
  got: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance,
  label = "values",
): void {
  if (got.length !== expected.length) {
    throw new Error(`${label}: got ${got.length} values, expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = -Infinity;
  let failures = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i];
    const e = expected[i];
    const excess = Math.abs(g - e) - (tol.atol + tol.rtol * Math.abs(e));
    if (!(excess <= 0)) {
      failures++;
      if (!(excess <= worstExcess)) {
        worstExcess = excess;
        worst = i;
      }
    }
  }
  if (failures > 0) {
    throw new Error(
      `${label}: ${failures}/${got.length} outside |a-e| <= ${tol.atol} + ${tol.rtol}*|e|; ` +
        `worst at index ${worst}: got ${got[worst]}, expected ${expected[worst]}`,
    );
  }
}

/** `deno task train` flags for a tiny, fast run (widths 4/8/8/16, batch 16, small evaluation). */
export const TINY_TRAIN_FLAGS = [
  "--dataset",
  "fashion-mnist",
  "--widths",
  "4,8,8,16",
  "--batch",
  "16",
  "--log-every",
  "1",
  "--eval-bank",
  "256",
  "--eval-test",
  "128",
  "--no-probe",
];

/** Both kernel plan kinds, forced: every machine tests the CPU plans and the GPU plans. */
export const FORCED_PLANS = ["cpu", "gpu"] as const;

/** Run `body` with the device's kernel plans forced to `plan`, then restore its settings. */
export async function withKernelPlan<T>(
  gpu: Gpu,
  plan: PlanKind,
  body: () => Promise<T>,
): Promise<T> {
  const saved = gpu.settings;
  gpu.settings = { ...saved, plan };
  try {
    return await body();
  } finally {
    gpu.settings = saved;
  }
}

/** A tiny untrained SslModel (ResNet-18 at widths 4/4/8/8, batch 4) for checkpoint-reading tests. */
export function tinySslModel(gpu: Gpu, inChannels: number): SslModel {
  return new SslModel(
    gpu,
    {
      backbone: { arch: "resnet18", inChannels, smallImage: true, widths: [4, 4, 8, 8] },
      projectorHidden: 8,
      projectorOut: 4,
      predictorHidden: 8,
      loss: { kind: "triplet", window: [1, 2] },
    },
    4,
    0,
    { momentum: 0.9, weightDecay: 1e-6, eta: 0.001 },
  );
}
