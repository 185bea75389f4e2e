import assert from "node:assert/strict";
import { assertClose } from "./util.ts";
import { bernoulliK, binomialTail } from "../models/bernoulli.ts";

Deno.test("bernoulli: METHOD.md's example, C = 1000 and N = 195 negatives: P(X >= 2) = 0.017", () => {
  // Closed form: 1 - 0.999^195 - 195 * 0.001 * 0.999^194.
  const closed = 1 - 0.999 ** 195 - 195 * 0.001 * 0.999 ** 194;
  assertClose([binomialTail(195, 0.001, 2)], [closed], { atol: 0, rtol: 1e-12 }, "P(X >= 2)");
  assert.equal(Math.round(binomialTail(195, 0.001, 2) * 1000) / 1000, 0.017);
  // P(X >= 1) = 1 - 0.999^195 = 0.177 > 0.02 >= P(X >= 2): k = 2 for a batch of 196.
  assert.equal(bernoulliK(1000, 196, 0.02), 2);
  assert.equal(bernoulliK(1000, 196, 0.2), 1);
  assert.equal(bernoulliK(1000, 196, 0.01), 3);
});

Deno.test("bernoulli: tails match an exact float64 sum and stay accurate far out", () => {
  const n = 40;
  const p = 0.1;
  const choose = (a: number, b: number) => {
    let c = 1;
    for (let i = 1; i <= b; i++) c = c * (a - b + i) / i;
    return c;
  };
  for (const k of [0, 1, 5, 20, 40, 41]) {
    let exact = 0;
    for (let j = k; j <= n; j++) exact += choose(n, j) * p ** j * (1 - p) ** (n - j);
    assertClose([binomialTail(n, p, k)], [Math.min(exact, 1)], { atol: 0, rtol: 1e-10 }, `k=${k}`);
  }
  // P(X >= 40) = 0.1^40: a 1 - CDF computation would return 0.
  assertClose([binomialTail(40, 0.1, 40)], [1e-40], { atol: 0, rtol: 1e-10 }, "far tail");
});

Deno.test("bernoulli: the answer grows with the batch and shrinks with more classes", () => {
  const ks = [64, 256, 1024, 4096].map((batch) => bernoulliK(10, batch, 0.05));
  for (let i = 1; i < ks.length; i++) assert.ok(ks[i] > ks[i - 1], `k rises with the batch: ${ks}`);
  assert.ok(bernoulliK(100, 256, 0.05) < bernoulliK(10, 256, 0.05));
  // Every k returned satisfies the bound and k - 1 does not.
  for (const [classes, batch, eps] of [[10, 256, 0.05], [1000, 4096, 0.01], [100, 512, 0.001]]) {
    const k = bernoulliK(classes, batch, eps);
    assert.ok(binomialTail(batch - 1, 1 / classes, k) <= eps);
    assert.ok(k === 1 || binomialTail(batch - 1, 1 / classes, k - 1) > eps);
  }
});

Deno.test("bernoulli: clear errors when no rank is safe or inputs are invalid", () => {
  assert.throws(() => bernoulliK(2, 3, 0.01), /no rank k <= 2/);
  assert.throws(() => bernoulliK(1, 10, 0.5), /no rank k <= 9/);
  assert.throws(() => bernoulliK(10, 1, 0.1), /batchSize must be an integer >= 2/);
  assert.throws(() => bernoulliK(10, 100, 0), /epsilon must be in \(0, 1\)/);
});
