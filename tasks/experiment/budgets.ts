/**
 * What the experiment runs: the two budgets, the compared methods, the two random-init
 * baselines and the plan (one `tasks/train.ts` run per method and seed, with its flags). Pure
 * apart from `resolveConfig`'s validation; tests/experiment_stats_test.ts checks the plans.
 */
import { bernoulliK } from "../../models/bernoulli.ts";
import { finiteNumber, nonNegativeInt, positiveInt, UserError } from "../cli.ts";
import { PRESETS, type TrainConfig } from "../presets.ts";
import type { DatasetName } from "../../data/dataset.ts";
import { resolveConfig } from "../train_config.ts";

/** The probability bound behind the `bernoulliK` rank (METHOD.md "Why k"). */
export const FALSE_NEGATIVE_EPSILON = 0.05;

/** The released smoothed rank-k window (the "triplet" method). */
export const RELEASED_WINDOW: [number, number] = [2, 10];

/** What every method gets: the same data, backbone, batch, steps, evaluation and seeds. */
export interface Budget {
  /** The dataset every run trains and evaluates on. */
  dataset: DatasetName;
  widths: [number, number, number, number];
  batch: number;
  steps: number;
  /** Optimizer steps between kNN evaluations (0: only at the end). */
  evalEvery: number;
  /** Training images in the kNN bank and the probe's training set. */
  evalBank: number;
  /** Test images evaluated (the first N of the test split). */
  evalTest: number;
  /** Linear probe epochs at the end (0: no probe). */
  probeEpochs: number;
  seeds: number;
  /** Learning rate (undefined: the small preset's, linearly scaled to the batch). */
  lr?: number;
}

/** A named budget with its output locations and the time it was sized for. */
export interface BudgetPreset extends Budget {
  runs: string;
  report: string;
  /** The wall time the budget was sized for on the 2-core lavapipe machine. */
  sizedFor: string;
}

/** The preset whose recipe every run inherits (train.ts's default). */
const RECIPE = PRESETS.small;

/**
 * The two budgets, sized from measurements on the 2-core lavapipe machine (quiet): widths
 * 8/16/32/64 at batch 64 take 0.72-0.77 s per step; each train.ts subprocess spends ~25 s
 * (pipeline compilation, data) before its first step; feature extraction runs at ~1000 images/s.
 * Both inherit the small preset's recipe (dataset, lr 3.0, EMA 0.9, crop scale 0.6).
 */
export const BUDGETS: Record<"default" | "quick", BudgetPreset> = {
  default: {
    dataset: RECIPE.dataset,
    widths: [8, 16, 32, 64],
    batch: 64,
    steps: 150,
    evalEvery: 50,
    evalBank: 5000,
    evalTest: 2000,
    probeEpochs: 10,
    seeds: 3,
    runs: "runs/experiment",
    report: "EXPERIMENTS.md",
    sizedFor: "64 min measured: 60.8 min of runs + 3.3 min for both random-init baselines",
  },
  quick: {
    dataset: RECIPE.dataset,
    widths: [8, 16, 32, 64],
    batch: 64,
    steps: 70,
    evalEvery: 35,
    evalBank: 2000,
    evalTest: 1000,
    probeEpochs: 5,
    seeds: 1,
    runs: "runs/experiment-quick",
    report: "runs/experiment-quick/EXPERIMENTS.md",
    sizedFor: "~10 min measured (the CI test: 7 runs + both random-init baselines)",
  },
};

/** One pretraining method or baseline: its id (run directory, `--methods`), labels, flags. */
export interface Method {
  id: string;
  label: string;
  /** A label short enough for the plot's legend. */
  short: string;
  trainArgs: string[];
  /** In the default list (the others run only when named in --methods). */
  standard: boolean;
}

/** Ids of every method `experimentMethods` can list (`--methods`). */
export const METHOD_IDS = [
  "triplet",
  "rank-2",
  "rank-bernoulli",
  "median",
  "hardest",
  "byol",
  "infonce",
  "triplet-bernoulli",
] as const;

/** The compared methods for a dataset of `classes` balanced classes and batch `batch`. */
export function experimentMethods(classes: number, batch: number): Method[] {
  let k: number | undefined;
  try {
    k = bernoulliK(classes, batch, FALSE_NEGATIVE_EPSILON);
  } catch {
    k = undefined; // too few negatives: the method is listed as unavailable below
  }
  const methods: Method[] = [
    {
      id: "triplet",
      label: `smoothed rank-k [${RELEASED_WINDOW}]`,
      short: `triplet [${RELEASED_WINDOW}]`,
      trainArgs: ["--loss", "triplet", "--window", RELEASED_WINDOW.join(",")],
      standard: true,
    },
    {
      id: "rank-2",
      label: "rank-k, k=2",
      short: "rank-k 2",
      trainArgs: ["--loss", "rank-k", "--k", "2"],
      standard: true,
    },
  ];
  if (k !== undefined) {
    methods.push({
      id: "rank-bernoulli",
      label: `rank-k, k=${k} (bernoulliK)`,
      short: `rank-k ${k}`,
      trainArgs: ["--loss", "rank-k", "--k", String(k)],
      standard: true,
    });
  }
  methods.push(
    {
      id: "median",
      label: "median",
      short: "median",
      trainArgs: ["--loss", "median"],
      standard: true,
    },
    {
      id: "hardest",
      label: "hardest (rank 1)",
      short: "hardest",
      trainArgs: ["--loss", "hardest"],
      standard: true,
    },
    { id: "byol", label: "BYOL", short: "BYOL", trainArgs: ["--loss", "byol"], standard: true },
    {
      id: "infonce",
      label: "InfoNCE (SimCLR)",
      short: "InfoNCE",
      trainArgs: ["--loss", "infonce"],
      standard: true,
    },
  );
  if (k !== undefined && k + 8 <= batch - 1) {
    methods.push({
      id: "triplet-bernoulli",
      label: `smoothed rank-k [${k},${k + 8}]`,
      short: `triplet [${k},${k + 8}]`,
      trainArgs: ["--loss", "triplet", "--window", `${k},${k + 8}`],
      standard: false,
    });
  }
  return methods;
}

/**
 * The methods `--methods` names (undefined: the standard ones), checked against what the batch
 * allows.
 */
export function selectMethods(
  classes: number,
  batch: number,
  requested: string | undefined,
): Method[] {
  const available = experimentMethods(classes, batch);
  let methods = available.filter((m) => m.standard);
  if (requested !== undefined) {
    const ids = requested.split(",").map((s) => s.trim()).filter(Boolean);
    methods = ids.map((id) => {
      const method = available.find((m) => m.id === id);
      if (!method) {
        throw new UserError(
          (METHOD_IDS as readonly string[]).includes(id)
            ? `--methods: ${id} is unavailable at batch ${batch} (too few negatives for ` +
              `bernoulliK(${classes}, ${batch}, ${FALSE_NEGATIVE_EPSILON}))`
            : `--methods: unknown method ${JSON.stringify(id)}; choose from ${
              METHOD_IDS.join(", ")
            }`,
        );
      }
      return method;
    });
    if (new Set(ids).size !== ids.length) throw new UserError("--methods names a method twice");
  }
  if (methods.some((m) => m.id === "triplet") && batch <= RELEASED_WINDOW[1]) {
    throw new UserError(
      `the [${RELEASED_WINDOW}] window needs ${RELEASED_WINDOW[1]} negatives: --batch must be at ` +
        `least ${RELEASED_WINDOW[1] + 1}`,
    );
  }
  return methods;
}

/**
 * The first random-init baseline: the backbone every method starts from, untrained, with the
 * BatchNorm running statistics as initialised (mean 0, variance 1: what `deno task eval` of an
 * untrained checkpoint measures). A `train.ts --steps 0` run: it builds the model exactly as the
 * trained runs do and evaluates it without a step.
 */
export const RANDOM_INIT: Method = {
  id: "random-init",
  label: "random init",
  short: "init",
  trainArgs: [],
  standard: false,
};

/**
 * The second random-init baseline: the untrained weights with BatchNorm running statistics
 * estimated the way every trained run's are (train.ts at learning rate 0 for
 * CALIBRATION_STEPS steps: the weights stay put, the running statistics follow the augmented
 * training batches).
 */
export const CALIBRATED_INIT: Method = {
  id: "calibrated-init",
  label: "random init, BN statistics estimated",
  short: "init (BN est.)",
  trainArgs: [],
  standard: false,
};

/** Steps at lr 0 for the running statistics to settle (0.9^30 = 4% of the initial values left). */
export const CALIBRATION_STEPS = 30;

/** The budget of a baseline's runs: no steps (random init), or the calibration at lr 0. */
export function baselineBudget(baseline: Method, budget: Budget): Budget {
  if (baseline.id === RANDOM_INIT.id) return { ...budget, steps: 0, evalEvery: 0 };
  if (baseline.id === CALIBRATED_INIT.id) {
    return { ...budget, steps: CALIBRATION_STEPS, evalEvery: 0, lr: 0 };
  }
  throw new Error(`${baseline.id} is not a baseline`);
}

/** The budget: a preset with the flags applied. */
export function resolveBudget(flags: Record<string, string | boolean | undefined>): BudgetPreset {
  const preset = structuredClone(flags.quick ? BUDGETS.quick : BUDGETS.default);
  const str = (name: string) => flags[name] as string | undefined;
  preset.seeds = positiveInt("seeds", str("seeds")) ?? preset.seeds;
  preset.steps = positiveInt("steps", str("steps")) ?? preset.steps;
  preset.evalEvery = nonNegativeInt("eval-every", str("eval-every")) ?? preset.evalEvery;
  preset.evalBank = positiveInt("eval-bank", str("eval-bank")) ?? preset.evalBank;
  preset.evalTest = positiveInt("eval-test", str("eval-test")) ?? preset.evalTest;
  preset.probeEpochs = nonNegativeInt("probe-epochs", str("probe-epochs")) ?? preset.probeEpochs;
  preset.batch = positiveInt("batch", str("batch")) ?? preset.batch;
  preset.lr = finiteNumber("lr", str("lr")) ?? preset.lr;
  // train.ts parses and checks the widths (its message names the flag and the form).
  if (str("widths") !== undefined) preset.widths = resolveConfig({ widths: str("widths") }).widths;
  preset.runs = str("runs") ?? preset.runs;
  preset.report = str("report") ?? preset.report;
  return preset;
}

/** Names of the budget fields that differ from the preset's. */
export function budgetOverrides(budget: Budget, preset: Budget): string[] {
  const fields: (keyof Budget)[] = [
    "dataset",
    "widths",
    "batch",
    "steps",
    "evalEvery",
    "evalBank",
    "evalTest",
    "probeEpochs",
    "seeds",
    "lr",
  ];
  return fields.filter((f) => JSON.stringify(budget[f]) !== JSON.stringify(preset[f]));
}

/** train.ts flags shared by every method of one seed. */
export function commonTrainArgs(budget: Budget, seed: number): string[] {
  return [
    "--dataset",
    budget.dataset,
    "--widths",
    budget.widths.join(","),
    "--batch",
    String(budget.batch),
    "--steps",
    String(budget.steps),
    "--eval-every",
    String(budget.evalEvery),
    "--eval-bank",
    String(budget.evalBank),
    "--eval-test",
    String(budget.evalTest),
    "--probe-epochs",
    String(budget.probeEpochs),
    "--seed",
    String(seed),
    "--log-every",
    "10",
    ...(budget.lr !== undefined ? ["--lr", String(budget.lr)] : []),
  ];
}

/** The resolved training configuration of a seed (validated by train.ts's own checks). */
export function trainConfigFor(budget: Budget, seed: number): TrainConfig {
  const args = commonTrainArgs(budget, seed);
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) flags[args[i].slice(2)] = args[i + 1];
  return resolveConfig(flags);
}

/** One run of the plan: a method (or baseline) at a seed, its directory and train.ts flags. */
export interface RunSpec {
  method: Method;
  seed: number;
  dir: string;
  trainArgs: string[];
}

/** The directory of a method's run at a seed. */
export function runDir(runs: string, methodId: string, seed: number): string {
  return `${runs}/${methodId}-seed${seed}`;
}

/** The run of `method` at `seed` under `budget`, writing into `runs`. */
export function runSpec(method: Method, seed: number, budget: Budget, runs: string): RunSpec {
  const dir = runDir(runs, method.id, seed);
  return {
    method,
    seed,
    dir,
    trainArgs: [...commonTrainArgs(budget, seed), ...method.trainArgs, "--out", dir],
  };
}

/**
 * Every run of the experiment, seed-major (an interrupted experiment has every method at the
 * first seeds): per seed the random init (every curve's step 0), the methods, then the
 * calibrated random init.
 */
export function planRuns(budget: Budget, methods: Method[], runs: string): RunSpec[] {
  const plan: RunSpec[] = [];
  for (let seed = 0; seed < budget.seeds; seed++) {
    plan.push(runSpec(RANDOM_INIT, seed, baselineBudget(RANDOM_INIT, budget), runs));
    for (const method of methods) plan.push(runSpec(method, seed, budget, runs));
    plan.push(runSpec(CALIBRATED_INIT, seed, baselineBudget(CALIBRATED_INIT, budget), runs));
  }
  return plan;
}
