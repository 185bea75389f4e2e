/**
 * The experiment's pure parts, no GPU: the statistics over seeds (models/statistics.ts) on
 * made-up numbers with exact expected values, the Bernoulli false-negative table on batches
 * small enough to work out by hand, and the plan of runs (tasks/experiment/budgets.ts) for the
 * quick and default budgets. Float comparisons state their tolerance; the rest are exact.
 */
import assert from "node:assert/strict";
import {
  compareStats,
  describe,
  falseNegativeTable,
  sum,
  summarizeSeeds,
} from "../models/statistics.ts";
import {
  budgetOverrides,
  BUDGETS,
  CALIBRATION_STEPS,
  commonTrainArgs,
  experimentMethods,
  planRuns,
  resolveBudget,
  selectMethods,
  trainConfigFor,
} from "../tasks/experiment/budgets.ts";
import { keptCommentary, reproduceCommand } from "../tasks/experiment/report.ts";
import { UserError } from "../tasks/cli.ts";

Deno.test("statistics: sum, mean, sample standard deviation, min, max of made-up numbers", () => {
  assert.equal(sum([]), 0);
  assert.equal(sum([0.25, 0.5, 1.25]), 2);
  // 1..5: mean 3, squared deviations 4+1+0+1+4 = 10 over n - 1 = 4: variance 2.5.
  assert.deepEqual(describe([3, 1, 4, 5, 2]), {
    mean: 3,
    std: Math.sqrt(2.5),
    min: 1,
    max: 5,
    n: 5,
  });
  // One value: no spread (not NaN from 0 / 0).
  assert.deepEqual(describe([0.75]), { mean: 0.75, std: 0, min: 0.75, max: 0.75, n: 1 });
  assert.equal(describe([]), undefined);
});

Deno.test("statistics: a comparison's gap, seed spread and ranges", () => {
  // a: 0.5, 1.0 (mean 0.75, std sqrt(0.125)); b: 0.25, 0.5 (mean 0.375, std sqrt(0.03125)).
  const a = describe([0.5, 1.0])!;
  const b = describe([0.25, 0.5])!;
  assert.deepEqual(compareStats(a, b), {
    gap: 0.375,
    spread: Math.sqrt(0.125),
    gapExceedsSpread: true,
    rangesOverlap: true, // they touch at 0.5
  });
  assert.deepEqual(compareStats(b, a), {
    gap: -0.375,
    spread: Math.sqrt(0.125),
    gapExceedsSpread: true,
    rangesOverlap: true,
  });
  // Ranges apart:
  const c = describe([0.0, 0.25])!;
  const d = describe([0.5, 0.75])!;
  assert.deepEqual(compareStats(c, d), {
    gap: -0.5,
    spread: Math.sqrt(0.03125),
    gapExceedsSpread: true,
    rangesOverlap: false,
  });
  // A gap smaller than the spread.
  const e = describe([0.0, 1.0])!; // mean 0.5, std sqrt(0.5)
  assert.equal(compareStats(e, d).gapExceedsSpread, false);
  // A single seed on either side: the spread is unknown, only the gap is given.
  assert.deepEqual(compareStats(describe([0.5])!, d), { gap: -0.125 });
});

Deno.test("statistics: per-step and final summaries over seeds", () => {
  const summary = summarizeSeeds([
    {
      evals: [{ step: 20, knnTop1: 0.5 }, { step: 10, knnTop1: 0.25 }],
      finalKnn: 0.5,
      finalLinear: 0.75,
      trainSeconds: 100,
      processSeconds: 130,
      imagesPerSecond: 40,
    },
    {
      // A run evaluated at step 10 only, with no probe and no throughput figure.
      evals: [{ step: 10, knnTop1: 0.75 }],
      finalKnn: 0.75,
      finalLinear: null,
      trainSeconds: 200,
      processSeconds: 230,
      imagesPerSecond: null,
    },
  ]);
  assert.deepEqual([...summary.knnAt.keys()], [10, 20]);
  assert.deepEqual(summary.knnAt.get(10), {
    mean: 0.5,
    std: Math.sqrt(0.125),
    min: 0.25,
    max: 0.75,
    n: 2,
  });
  assert.deepEqual(summary.knnAt.get(20), { mean: 0.5, std: 0, min: 0.5, max: 0.5, n: 1 });
  assert.equal(summary.finalKnn!.mean, 0.625);
  assert.deepEqual(summary.finalLinear, { mean: 0.75, std: 0, min: 0.75, max: 0.75, n: 1 });
  assert.equal(summary.trainSeconds!.mean, 150);
  assert.equal(summary.trainSeconds!.std, Math.sqrt(5000));
  assert.equal(summary.processSeconds!.mean, 180);
  assert.equal(summary.imagesPerSecond!.n, 1);
  assert.deepEqual(summarizeSeeds([]).knnAt.size, 0);
  assert.equal(summarizeSeeds([]).finalKnn, undefined);
});

Deno.test("statistics: the false-negative table on batches worked out by hand", () => {
  // The tails come from binomialTail (log space): compared with |got - expected| <= 1e-12.
  const close = (got: number, expected: number, what: string) =>
    assert.ok(Math.abs(got - expected) <= 1e-12, `${what}: got ${got}, expected ${expected}`);
  // 4 classes, batch 4: X ~ Binomial(3, 1/4). P(X >= 1) = 1 - (3/4)^3 = 37/64,
  // P(X >= 2) = 3 (1/4)^2 (3/4) + (1/4)^3 = 10/64, P(X >= 3) = 1/64 <= 0.05: k = 3.
  const four = falseNegativeTable(4, 4, 0.05, [2, 10]);
  assert.equal(four.negatives, 3);
  assert.equal(four.sameClassProbability, 0.25);
  assert.equal(four.expected, 0.75);
  assert.equal(four.k, 3);
  close(four.kTail!, 1 / 64, "P(X >= 3)");
  assert.deepEqual(four.ranks.map((r) => r.rank), [1, 2, 3]);
  [37 / 64, 10 / 64, 1 / 64].forEach((p, i) => close(four.ranks[i].tail, p, `rank ${i + 1}`));
  // The window [2, 10] clipped to the 3 negatives: ranks 2 and 3, mean (10/64 + 1/64) / 2.
  assert.deepEqual(four.window, [2, 3]);
  close(four.windowMeanTail, 11 / 128, "window mean");
  // 2 classes, batch 3: X ~ Binomial(2, 1/2); no rank has P(X >= k) <= 0.05 (P(X >= 2) = 1/4).
  const two = falseNegativeTable(2, 3, 0.05, [2, 10]);
  assert.equal(two.k, undefined);
  assert.equal(two.kTail, undefined);
  assert.deepEqual(two.ranks.map((r) => r.rank), [1, 2]);
  close(two.ranks[0].tail, 0.75, "rank 1");
  close(two.windowMeanTail, 0.25, "window mean");
  // The experiment's setting: 10 classes, batch 64 -> k = 11, ranks 1-11 listed.
  const quick = falseNegativeTable(10, 64, 0.05, [2, 10]);
  assert.equal(quick.k, 11);
  assert.deepEqual(quick.ranks.map((r) => r.rank), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.ok(quick.kTail! <= 0.05 && quick.ranks[9].tail > 0.05);
});

const QUICK_METHODS = [
  "triplet",
  "rank-2",
  "rank-bernoulli",
  "median",
  "hardest",
  "byol",
  "infonce",
];

Deno.test("budgets: the quick plan is the random init, seven methods and the calibration", () => {
  const methods = experimentMethods(10, BUDGETS.quick.batch).filter((m) => m.standard);
  const plan = planRuns(BUDGETS.quick, methods, "runs/q");
  assert.deepEqual(
    plan.map((r) => `${r.method.id}/${r.seed}`),
    ["random-init/0", ...QUICK_METHODS.map((id) => `${id}/0`), "calibrated-init/0"],
  );
  const common = [
    "--dataset",
    "fashion-mnist",
    "--widths",
    "8,16,32,64",
    "--batch",
    "64",
  ];
  const evaluation = ["--eval-bank", "2000", "--eval-test", "1000", "--probe-epochs", "5"];
  /** The flags every run of seed 0 shares, with its own steps and kNN interval. */
  const shared = (steps: number, evalEvery: number) => [
    ...common,
    "--steps",
    String(steps),
    "--eval-every",
    String(evalEvery),
    ...evaluation,
    "--seed",
    "0",
    "--log-every",
    "10",
  ];
  // The random init: train.ts with no steps evaluates the untrained backbone.
  assert.deepEqual(plan[0].trainArgs, [...shared(0, 0), "--out", "runs/q/random-init-seed0"]);
  assert.equal(plan[0].dir, "runs/q/random-init-seed0");
  assert.deepEqual(plan[1].trainArgs, [
    ...shared(70, 35),
    "--loss",
    "triplet",
    "--window",
    "2,10",
    "--out",
    "runs/q/triplet-seed0",
  ]);
  assert.deepEqual(plan[3].trainArgs, [
    ...shared(70, 35),
    "--loss",
    "rank-k",
    "--k",
    "11", // bernoulliK(10, 64, 0.05)
    "--out",
    "runs/q/rank-bernoulli-seed0",
  ]);
  // The calibration: the weights stay put at lr 0 while BatchNorm statistics settle.
  assert.deepEqual(plan[8].trainArgs, [
    ...shared(CALIBRATION_STEPS, 0),
    "--lr",
    "0",
    "--out",
    "runs/q/calibrated-init-seed0",
  ]);
});

Deno.test("budgets: the default plan is seed-major, 3 seeds x 9 runs", () => {
  const methods = experimentMethods(10, BUDGETS.default.batch).filter((m) => m.standard);
  const plan = planRuns(BUDGETS.default, methods, BUDGETS.default.runs);
  assert.equal(plan.length, 27);
  const order = ["random-init", ...QUICK_METHODS, "calibrated-init"];
  assert.deepEqual(
    plan.map((r) => `${r.method.id}/${r.seed}`),
    [0, 1, 2].flatMap((seed) => order.map((id) => `${id}/${seed}`)),
  );
  for (const run of plan) {
    const args = run.trainArgs;
    const flag = (name: string) => args[args.indexOf(name) + 1];
    assert.equal(run.dir, `runs/experiment/${run.method.id}-seed${run.seed}`);
    assert.equal(flag("--out"), run.dir);
    assert.equal(flag("--seed"), String(run.seed));
    assert.equal(flag("--eval-bank"), "5000");
    assert.equal(flag("--eval-test"), "2000");
    assert.equal(flag("--probe-epochs"), "10");
    const steps = { "random-init": "0", "calibrated-init": String(CALIBRATION_STEPS) }[
      run.method.id
    ] ?? "150";
    assert.equal(flag("--steps"), steps, run.method.id);
    assert.equal(flag("--eval-every"), steps === "150" ? "50" : "0", run.method.id);
    assert.equal(args.includes("--lr"), run.method.id === "calibrated-init", run.method.id);
  }
});

Deno.test("budgets: flags over a preset, and the methods a batch allows", () => {
  const budget = resolveBudget({ quick: true, steps: "100", widths: "4,8,16,32" });
  assert.equal(budget.steps, 100);
  assert.deepEqual(budget.widths, [4, 8, 16, 32]);
  assert.equal(budget.evalEvery, BUDGETS.quick.evalEvery);
  assert.deepEqual(budgetOverrides(budget, BUDGETS.quick), ["widths", "steps"]);
  assert.throws(() => resolveBudget({ widths: "4,8,16" }), UserError);
  assert.throws(() => resolveBudget({ steps: "0" }), UserError);
  // The lr flag reaches train.ts; without it train.ts scales the small preset's to the batch.
  assert.deepEqual(
    commonTrainArgs(resolveBudget({ lr: "0.5" }), 2).slice(-4),
    ["--log-every", "10", "--lr", "0.5"],
  );
  assert.equal(trainConfigFor(BUDGETS.quick, 0).lr, 3.0);
  assert.equal(trainConfigFor({ ...BUDGETS.quick, batch: 128 }, 0).lr, 6.0);
  assert.equal(trainConfigFor(BUDGETS.quick, 1).dataset, BUDGETS.quick.dataset);

  assert.deepEqual(selectMethods(10, 64, "byol, triplet").map((m) => m.id), ["byol", "triplet"]);
  assert.deepEqual(selectMethods(10, 64, undefined).map((m) => m.id), QUICK_METHODS);
  assert.throws(() => selectMethods(10, 64, "simclr"), /unknown method "simclr"/);
  assert.throws(() => selectMethods(10, 64, "byol,byol"), /names a method twice/);
  // Batch 16: bernoulliK(10, 16, 0.05) = 5 (P(X >= 4) = 0.056, P(X >= 5) = 0.013 for
  // X ~ Binomial(15, 0.1)), and [5, 13] fits 15 negatives.
  assert.equal(selectMethods(10, 16, "triplet-bernoulli")[0].label, "smoothed rank-k [5,13]");
  assert.throws(() => selectMethods(10, 10, "triplet"), /--batch must be at least 11/);
  assert.throws(() => selectMethods(2, 4, "rank-bernoulli"), /rank-bernoulli is unavailable/);
});

Deno.test("report: the reproduce command and the kept commentary", () => {
  const methods = experimentMethods(10, 64).filter((m) => ["triplet", "byol"].includes(m.id));
  assert.equal(
    reproduceCommand({
      budget: BUDGETS.quick,
      mode: "quick",
      methods,
      runs: "r",
      report: "r/E.md",
      backend: "vulkan",
    }),
    "DENO_WEBGPU_BACKEND=vulkan deno task experiment --quick --steps 70 --eval-every 35 " +
      "--eval-bank 2000 --eval-test 1000 --probe-epochs 5 --widths 8,16,32,64 --batch 64 " +
      "--seeds 1 --methods triplet,byol --runs r --report r/E.md",
  );
  const start = "<!-- commentary:start (hand-written; kept when the report is regenerated) -->";
  const end = "<!-- commentary:end -->";
  assert.equal(keptCommentary(`# x\n${start}\nMine.\n${end}\n`), "\nMine.\n");
  assert.equal(
    keptCommentary(`${start}\n_Lead: hand-written interpretation goes here (...)._\n${end}`),
    undefined,
  );
  assert.equal(keptCommentary("no markers"), undefined);
});
