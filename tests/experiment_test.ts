/**
 * The experiment runner (tasks/experiment.ts): the method list and the report's generated text on
 * synthetic runs (no GPU), then a CI-sized experiment end to end as a user runs it (a subprocess
 * that itself runs tasks/train.ts): widths 4/8/8/16, batch 32, 4 steps, kNN at steps 2 and 4 on a
 * 256-image bank and 128 test images, 1 seed, two methods; a rerun skips the finished runs, the
 * hand-written commentary survives regeneration, and a finished run with other settings is refused.
 *
 * Why the end-to-end test does not assert "every method beats the random-init backbone": at this
 * size the 4 steps are deep in the learning-rate warm-up (0.1 epoch = 187 steps at batch 32), so
 * the weights barely move, and kNN on 128 test images moves by several points with the BatchNorm
 * running statistics alone. Measured here: seed 0 init 25.8%, triplet 25.8% and BYOL 26.6% after
 * 4 steps; after 8 steps triplet 26.6% / BYOL 23.4% (seed 0, init 25.8%) and 15.6% / 14.8%
 * (seed 1, init 18.0%); hardest after 10/20/30 steps 24.2/19.5/16.4%. Early self-supervised steps
 * often lower kNN accuracy below the untrained network's, so that assertion would fail or pass by
 * chance; the test asserts completion, valid accuracies and the report's structure instead.
 */
import assert from "node:assert/strict";
import { binomialTail } from "../models/bernoulli.ts";
import { buildReport, describe, experimentMethods, type RunRecord } from "../tasks/experiment.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TEST = { sanitizeOps: false, sanitizeResources: false };

Deno.test("experiment: the compared methods and their train.ts flags at batch 128", () => {
  const methods = experimentMethods(10, 128);
  assert.deepEqual(
    methods.filter((m) => m.standard).map((m) => m.id),
    ["triplet", "rank-2", "rank-bernoulli", "median", "hardest", "byol", "infonce"],
  );
  const byId = new Map(methods.map((m) => [m.id, m]));
  assert.deepEqual(byId.get("triplet")!.trainArgs, ["--loss", "triplet", "--window", "2,10"]);
  // bernoulliK(10, 128, 0.05) = 19: P(X >= 19) <= 0.05 < P(X >= 18) for X ~ Binomial(127, 0.1).
  assert.ok(binomialTail(127, 0.1, 19) <= 0.05 && binomialTail(127, 0.1, 18) > 0.05);
  assert.deepEqual(byId.get("rank-bernoulli")!.trainArgs, ["--loss", "rank-k", "--k", "19"]);
  assert.deepEqual(byId.get("triplet-bernoulli")!.trainArgs, [
    "--loss",
    "triplet",
    "--window",
    "19,27",
  ]);
  // Too few negatives for any bernoulliK rank: the method is left out rather than guessed.
  assert.ok(!experimentMethods(2, 4).some((m) => m.id === "rank-bernoulli"));
});

Deno.test("experiment: mean and sample standard deviation over seeds", () => {
  const s = describe([0.5, 0.6, 0.7])!;
  assert.ok(Math.abs(s.mean - 0.6) < 1e-12 && Math.abs(s.std - 0.1) < 1e-12);
  assert.equal(s.min, 0.5);
  assert.equal(s.max, 0.7);
  assert.equal(describe([0.4])!.std, 0);
  assert.equal(describe([]), undefined);
});

/** A finished synthetic run: kNN at steps 10 and 20, linear probe at the end. */
function run(method: string, seed: number, knn10: number, knn20: number): RunRecord {
  return {
    method,
    seed,
    dir: `runs/x/${method}-seed${seed}`,
    status: "done",
    evals: [
      { step: 10, knnTop1: knn10, linearTop1: null },
      { step: 20, knnTop1: knn20, linearTop1: knn20 + 0.05 },
    ],
    finalKnn: knn20,
    finalLinear: knn20 + 0.05,
    trainSeconds: 100,
    processSeconds: 130,
    imagesPerSecond: 40,
  };
}

Deno.test("experiment: the report's tables and discussion come from the numbers", () => {
  const methods = experimentMethods(10, 128).filter((m) =>
    ["triplet", "byol", "infonce"].includes(m.id)
  );
  const runs = [0, 1, 2].flatMap((seed) => [
    // triplet ahead of BYOL by 10 points with a 1-point spread; InfoNCE level within the spread.
    run("triplet", seed, 0.5, 0.70 + 0.01 * seed),
    run("byol", seed, 0.45, 0.60 + 0.01 * seed),
    run("infonce", seed, 0.55, 0.695 + 0.02 * seed),
  ]);
  const report = buildReport({
    budget: {
      widths: [8, 16, 32, 64],
      batch: 128,
      steps: 20,
      evalEvery: 10,
      evalBank: 1000,
      evalTest: 500,
      probeEpochs: 5,
      seeds: 3,
    },
    mode: "default",
    overrides: ["steps"],
    lr: 0.6,
    methods,
    runs,
    randomInit: [0, 1, 2].map((seed) => ({ seed, knnTop1: 0.65, linearTop1: 0.6 })),
    classes: 10,
    command: "deno task experiment --steps 20",
    plotFile: "EXPERIMENTS-knn.svg",
    commentary: "\nOur reading: kept verbatim.\n",
  });
  // Rows: random init, then every method; columns: step 0, the evaluation steps, linear.
  assert.match(report, /\| method \| kNN @ 0 \| kNN @ 10 \| kNN @ 20 \| linear \(end\) \|/);
  assert.match(report, /\| random init \| 65\.0 ± 0\.0 \| — \| — \| 60\.0 ± 0\.0 \|/);
  assert.match(
    report,
    /\| smoothed rank-k \[2,10\] \| \(init\) \| 50\.0 ± 0\.0 \| 71\.0 ± 1\.0 \| 76\.0 ± 1\.0 \|/,
  );
  assert.match(report, /\| BYOL \| \(init\) \| 45\.0 ± 0\.0 \| 61\.0 ± 1\.0 \|/);
  assert.match(report, /\| InfoNCE \(SimCLR\) \| \(init\) \| 55\.0 ± 0\.0 \| 71\.5 ± 2\.0 \|/);
  assert.match(report, /!\[[^\]]*\]\(EXPERIMENTS-knn\.svg\)/);
  assert.match(report, /deno task experiment --steps 20/);
  // Bernoulli analysis for 10 classes, batch 128: E[X] = 127 / 10.
  assert.match(report, /E\[X\] = 12\.70/);
  assert.ok(report.includes(`| 10 (in [2,10]) | ${binomialTail(127, 0.1, 10).toFixed(4)} |`));
  assert.ok(report.includes(`| 19 (bernoulliK) | ${binomialTail(127, 0.1, 19).toFixed(4)} |`));
  assert.match(report, /most deputies the released window picks on this data are false negatives/);
  // Discussion: gaps against the seed spread, in neutral words.
  assert.match(
    report,
    /smoothed rank-k \[2,10\] \(71\.0%\) is 10\.0 points above BYOL \(61\.0%\); the gap is larger than the seed spread \(the larger standard deviation of the two, 1\.0 points\), and the min-max ranges over seeds do not overlap/,
  );
  assert.match(
    report,
    /smoothed rank-k \[2,10\] \(71\.0%\) is 0\.5 points below InfoNCE \(SimCLR\) \(71\.5%\); the gap is not larger than the seed spread \(the larger standard deviation of the two, 2\.0 points\), and the min-max ranges over seeds overlap/,
  );
  assert.match(report, /its mean kNN was above BYOL's at 2 of them/);
  assert.match(
    report,
    /mean final kNN above it: InfoNCE \(SimCLR\), smoothed rank-k \[2,10\]; not above it: BYOL/,
  );
  assert.match(report, /Our reading: kept verbatim\./);
});

interface Result {
  code: number;
  output: string;
}

async function experiment(args: string[]): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", `${ROOT}tasks/experiment.ts`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, output: decode(out.stdout) + decode(out.stderr) };
}

Deno.test({
  name: "experiment: a CI-sized experiment completes, reports every method, continues and keeps " +
    "the commentary",
  ...TEST,
  fn: async () => {
    const base = await Deno.makeTempDir();
    const report = `${base}/report/EXPERIMENTS.md`;
    const args = [
      "--widths",
      "4,8,8,16",
      "--batch",
      "32",
      "--steps",
      "4",
      "--eval-every",
      "2",
      "--eval-bank",
      "256",
      "--eval-test",
      "128",
      "--probe-epochs",
      "2",
      "--seeds",
      "1",
      "--methods",
      "triplet,byol",
      "--runs",
      `${base}/runs`,
      "--report",
      report,
    ];
    const first = await experiment(args);
    assert.equal(first.code, 0, first.output);

    for (const method of ["triplet", "byol"]) {
      const summary = JSON.parse(
        await Deno.readTextFile(`${base}/runs/${method}-seed0/summary.json`),
      );
      assert.equal(summary.steps, 4);
      for (const key of ["knnTop1", "linearTop1"]) {
        assert.ok(
          Number.isFinite(summary[key]) && summary[key] > 0 && summary[key] <= 1,
          `${method} ${key} = ${summary[key]}`,
        );
      }
    }
    const init = JSON.parse(await Deno.readTextFile(`${base}/runs/random-init-seed0/summary.json`));
    assert.ok(init.knnTop1 > 0 && init.knnTop1 <= 1, `random-init kNN ${init.knnTop1}`);
    console.log(`random-init kNN top-1 ${init.knnTop1} (reported, not asserted against)`);

    const text = await Deno.readTextFile(report);
    assert.match(text, /\| method \| kNN @ 0 \| kNN @ 2 \| kNN @ 4 \| linear \(end\) \|/);
    assert.match(text, /\| random init \| \d+\.\d \|/);
    for (const label of ["smoothed rank-k \\[2,10\\]", "BYOL"]) {
      assert.match(
        text,
        new RegExp(`\\| ${label} \\| \\(init\\) \\| \\d+\\.\\d \\| \\d+\\.\\d \\|`),
      );
    }
    assert.match(text, /Runs: 2 of 2 finished/);
    assert.match(text, /E\[X\] = 3\.10/);
    assert.match(await Deno.readTextFile(`${base}/report/EXPERIMENTS-knn.svg`), /^<svg/);

    // A rerun skips the finished runs; the hand-written commentary survives regeneration.
    await Deno.writeTextFile(
      report,
      text.replace(
        /(<!-- commentary:start[^>]*-->)[\s\S]*(<!-- commentary:end -->)/,
        "$1\nMine.\n$2",
      ),
    );
    const again = await experiment(args);
    assert.equal(again.code, 0, again.output);
    assert.equal(again.output.match(/done before/g)?.length, 2, again.output);
    assert.doesNotMatch(again.output, /evaluating the untrained backbone/);
    assert.match(
      await Deno.readTextFile(report),
      /commentary:start[^>]*-->\nMine\.\n<!-- commentary:end/,
    );

    // Finished runs made with other settings are refused before anything runs.
    const changed = args.map((a) => (a === "4" ? "5" : a));
    const refused = await experiment(changed);
    assert.equal(refused.code, 2, refused.output);
    assert.match(refused.output, /holds a finished run made with other settings/);
    await Deno.remove(base, { recursive: true });
  },
});
