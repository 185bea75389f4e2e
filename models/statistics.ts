/**
 * Statistics over seeds for comparing training runs (no I/O): summary statistics, a neutral
 * comparison of two of them, per-method summaries of evaluation curves, and the Bernoulli
 * false-negative table behind METHOD.md's "Why k". `tasks/experiment/report.ts` turns these
 * numbers into prose.
 */
import { bernoulliK, binomialTail } from "./bernoulli.ts";

/** The sum of `values` (0 when empty), added left to right. */
export function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Mean, sample standard deviation (n - 1; 0 for one value), min, max and count. */
export interface Stat {
  mean: number;
  std: number;
  min: number;
  max: number;
  n: number;
}

/** Summary statistics of `values` (undefined when empty). */
export function describe(values: number[]): Stat | undefined {
  const n = values.length;
  if (n === 0) return undefined;
  const mean = sum(values) / n;
  const variance = n > 1 ? values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1) : 0;
  return { mean, std: Math.sqrt(variance), min: Math.min(...values), max: Math.max(...values), n };
}

/** Two statistics side by side, in the units of their values. */
export interface Comparison {
  /** a.mean - b.mean. */
  gap: number;
  /**
   * The seed spread: the larger standard deviation of the two; undefined when either has a
   * single value (its spread is unknown).
   */
  spread?: number;
  /** |gap| > spread (undefined with the spread). */
  gapExceedsSpread?: boolean;
  /** The min-max ranges overlap (undefined with the spread). */
  rangesOverlap?: boolean;
}

/** Compare `a` with `b`: the gap of the means against the seed spread and the ranges. */
export function compareStats(a: Stat, b: Stat): Comparison {
  const gap = a.mean - b.mean;
  if (a.n < 2 || b.n < 2) return { gap };
  const spread = Math.max(a.std, b.std);
  return {
    gap,
    spread,
    gapExceedsSpread: Math.abs(gap) > spread,
    rangesOverlap: a.min <= b.max && b.min <= a.max,
  };
}

/** What one run measured (the fields a summary over seeds reads). */
export interface RunMeasurements {
  /** kNN top-1 at each evaluated step. */
  evals: { step: number; knnTop1: number }[];
  finalKnn?: number;
  finalLinear?: number | null;
  trainSeconds?: number;
  processSeconds?: number;
  imagesPerSecond?: number | null;
}

/** Statistics over the seeds of one method. */
export interface SeedSummary {
  /** kNN top-1 at each evaluated step, ascending. */
  knnAt: Map<number, Stat>;
  finalKnn?: Stat;
  finalLinear?: Stat;
  trainSeconds?: Stat;
  processSeconds?: Stat;
  imagesPerSecond?: Stat;
}

/** Summarise the finished runs (one per seed) of one method. */
export function summarizeSeeds(runs: RunMeasurements[]): SeedSummary {
  const steps = [...new Set(runs.flatMap((r) => r.evals.map((e) => e.step)))].sort((a, b) => a - b);
  const knnAt = new Map<number, Stat>();
  for (const step of steps) {
    const values = runs.flatMap((r) =>
      r.evals.filter((e) => e.step === step).map((e) => e.knnTop1)
    );
    knnAt.set(step, describe(values)!);
  }
  const numbers = (pick: (r: RunMeasurements) => number | null | undefined) =>
    describe(runs.map(pick).filter((v): v is number => typeof v === "number"));
  return {
    knnAt,
    finalKnn: numbers((r) => r.finalKnn),
    finalLinear: numbers((r) => r.finalLinear),
    trainSeconds: numbers((r) => r.trainSeconds),
    processSeconds: numbers((r) => r.processSeconds),
    imagesPerSecond: numbers((r) => r.imagesPerSecond),
  };
}

/**
 * How many of a query's in-batch negatives are false (same class), for `classes` balanced
 * classes and a batch of `batch`: X ~ Binomial(batch - 1, 1 / classes).
 */
export interface FalseNegativeTable {
  negatives: number;
  /** 1 / classes. */
  sameClassProbability: number;
  /** E[X]. */
  expected: number;
  /** bernoulliK(classes, batch, epsilon); undefined when no rank qualifies. */
  k?: number;
  /** P(X >= k). */
  kTail?: number;
  /** P(X >= rank) for ranks 1-10 and k - 1, k (those within the negatives), ascending. */
  ranks: { rank: number; tail: number }[];
  /** `window` clipped to the negatives. */
  window: [number, number];
  /** P(X >= rank) averaged over the window's ranks. */
  windowMeanTail: number;
}

/** The false-negative table for a rank window (e.g. the released smoothed rank-k [2, 10]). */
export function falseNegativeTable(
  classes: number,
  batch: number,
  epsilon: number,
  window: [number, number],
): FalseNegativeTable {
  const negatives = batch - 1;
  const p = 1 / classes;
  let k: number | undefined;
  try {
    k = bernoulliK(classes, batch, epsilon);
  } catch {
    k = undefined; // too few negatives for any rank
  }
  const ranks = [...new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...(k ? [k - 1, k] : [])])]
    .filter((r) => r <= negatives).sort((a, b) => a - b);
  const clipped = window.map((r) => Math.min(r, negatives)) as [number, number];
  const windowRanks = Array.from(
    { length: clipped[1] - clipped[0] + 1 },
    (_, i) => clipped[0] + i,
  );
  return {
    negatives,
    sameClassProbability: p,
    expected: negatives * p,
    k,
    kTail: k !== undefined ? binomialTail(negatives, p, k) : undefined,
    ranks: ranks.map((rank) => ({ rank, tail: binomialTail(negatives, p, rank) })),
    window: clipped,
    windowMeanTail: windowRanks.reduce((s, r) => s + binomialTail(negatives, p, r), 0) /
      windowRanks.length,
  };
}
