/**
 * Choosing the rank k of the negative deputy (METHOD.md "Why k"): with C balanced classes, each of
 * a query's N = batchSize - 1 negatives shares its class with probability 1/C, so the number X of
 * false negatives is Binomial(N, 1/C), and the k-th nearest negative can be a false one only when
 * X >= k.
 */

/**
 * P(X >= k) for X ~ Binomial(n, p), summed from the top of the distribution in log space, so a
 * tiny tail keeps its relative precision (1 - CDF would cancel) and large n cannot underflow.
 */
export function binomialTail(n: number, p: number, k: number): number {
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`binomialTail: n must be an integer >= 0, got ${n}`);
  }
  if (!(p >= 0 && p <= 1)) throw new Error(`binomialTail: p must be in [0, 1], got ${p}`);
  if (k <= 0) return 1;
  if (k > n) return 0;
  if (p === 0) return 0;
  if (p === 1) return 1;
  // log pmf(j) by the ratio pmf(j+1)/pmf(j) = (n-j)/(j+1) * p/(1-p), from log pmf(0) = n log(1-p).
  const logOdds = Math.log(p) - Math.log1p(-p);
  const logPmf = new Float64Array(n + 1);
  logPmf[0] = n * Math.log1p(-p);
  for (let j = 0; j < n; j++) logPmf[j + 1] = logPmf[j] + Math.log((n - j) / (j + 1)) + logOdds;
  let top = -Infinity;
  for (let j = k; j <= n; j++) top = Math.max(top, logPmf[j]);
  let sum = 0;
  for (let j = n; j >= k; j--) sum += Math.exp(logPmf[j] - top);
  return Math.min(1, Math.exp(top) * sum);
}

/**
 * The smallest rank k >= 1 with P(X >= k) <= epsilon, X ~ Binomial(batchSize - 1, 1 / classes):
 * the k-th nearest negative is a same-class (false) negative with probability at most epsilon.
 * Throws when even the farthest of the batchSize - 1 negatives is too likely to be false.
 */
export function bernoulliK(classes: number, batchSize: number, epsilon: number): number {
  if (!(Number.isFinite(classes) && classes >= 1)) {
    throw new Error(`bernoulliK: classes must be >= 1, got ${classes}`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 2) {
    throw new Error(`bernoulliK: batchSize must be an integer >= 2, got ${batchSize}`);
  }
  if (!(epsilon > 0 && epsilon < 1)) {
    throw new Error(`bernoulliK: epsilon must be in (0, 1), got ${epsilon}`);
  }
  const negatives = batchSize - 1;
  for (let k = 1; k <= negatives; k++) {
    if (binomialTail(negatives, 1 / classes, k) <= epsilon) return k;
  }
  throw new Error(
    `bernoulliK: with ${classes} classes and ${negatives} negatives, no rank k <= ${negatives} ` +
      `has P(X >= k) <= ${epsilon}; use a larger batch or a larger epsilon`,
  );
}
