/** Shared test helpers: the validating GPU, seeded random data and the tolerance check. */
import { acquireGpu, type Gpu } from "../runtime/gpu.ts";

/** The shared GPU with per-dispatch validation scopes on, so bad dispatches throw by name. */
export function testGpu(): Promise<Gpu> {
  return acquireGpu({ validate: true });
}

/** Deno.test options for GPU tests: the device outlives single tests, so skip the sanitizers. */
export const gpuTest = { sanitizeOps: false, sanitizeResources: false } as const;

/** A small seeded generator (mulberry32): same seed, same numbers. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform in [lo, hi). */
  uniform(lo = -1, hi = 1): number {
    return lo + (hi - lo) * this.next();
  }
  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  /** n uniform values in [lo, hi) as float32. */
  array(n: number, lo = -1, hi = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniform(lo, hi);
    return out;
  }
  /** n standard normal values as float32. */
  normals(n: number, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = std * this.normal();
    return out;
  }
}

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
