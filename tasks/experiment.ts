/**
 * `deno task experiment [flags]`: does the truncated triplet loss learn faster? Equal-budget
 * pretraining (same backbone, batch, seed, augmentations and steps) of the smoothed rank-k loss and
 * its baselines on Fashion-MNIST, one `tasks/train.ts` subprocess per method and seed, then a
 * report (EXPERIMENTS.md): kNN top-1 during training, the final linear probe, the random-init
 * baseline, the Bernoulli false-negative analysis and a discussion generated from the numbers.
 * `--help` lists the flags and the two budgets.
 */
import { parseArgs } from "node:util";
import { acquireGpu } from "../runtime/gpu.ts";
import { Rng } from "../runtime/random.ts";
import { Context } from "../models/layers.ts";
import { ResNet } from "../models/resnet.ts";
import { evaluateBackbone } from "../models/evaluate.ts";
import { bernoulliK, binomialTail } from "../models/bernoulli.ts";
import type { Dataset } from "../data/dataset.ts";
import { evaluationOptions, loadSplit, resolveConfig } from "./train_config.ts";
import type { TrainConfig } from "./presets.ts";
import {
  finiteNumber,
  formatDuration,
  nonNegativeInt,
  positiveInt,
  runMain,
  UserError,
} from "./cli.ts";
import { type CurvePoint, renderCurves } from "./plot.ts";

/** The probability bound behind the `bernoulliK` rank (METHOD.md "Why k"). */
export const FALSE_NEGATIVE_EPSILON = 0.05;

/** What every method gets: the same backbone, batch, steps, evaluation and seeds. */
export interface Budget {
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

/**
 * The two budgets, sized from measurements on the 2-core lavapipe machine (quiet): widths
 * 8/16/32/64 at batch 64 take 0.72-0.77 s per step; each train.ts subprocess spends ~25 s
 * (pipeline compilation, data) before its first step; feature extraction runs at ~1000 images/s.
 * Both inherit the small preset's recipe (lr 3.0, EMA 0.9, crop scale 0.6).
 */
export const BUDGETS: Record<"default" | "quick", BudgetPreset> = {
  default: {
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

/** One pretraining method: its id (run directory, `--methods`), label and train.ts flags. */
export interface Method {
  id: string;
  label: string;
  /** A label short enough for the plot's legend. */
  short: string;
  trainArgs: string[];
  /** In the default list (the others run only when named in --methods). */
  standard: boolean;
}

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
      label: "smoothed rank-k [2,10]",
      short: "triplet [2,10]",
      trainArgs: ["--loss", "triplet", "--window", "2,10"],
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
 * The second random-init baseline: the untrained weights with BatchNorm running statistics
 * estimated the way every trained run's are (train.ts at learning rate 0 for
 * CALIBRATION_STEPS steps: the weights stay put, the running statistics follow the augmented
 * training batches). The first baseline keeps the statistics as initialised (mean 0, variance 1),
 * which is what `deno task eval` of an untrained checkpoint measures.
 */
const CALIBRATED_INIT: Method = {
  id: "calibrated-init",
  label: "random init, BN statistics estimated",
  short: "init (BN est.)",
  trainArgs: [],
  standard: false,
};
/** Steps at lr 0 for the running statistics to settle (0.9^30 = 4% of the initial values left). */
const CALIBRATION_STEPS = 30;

/** The options a calibration run is planned with: the budget at lr 0, no intermediate kNN. */
function calibrationOptions(options: Options): Options {
  return {
    ...options,
    budget: { ...options.budget, steps: CALIBRATION_STEPS, evalEvery: 0, lr: 0 },
  };
}

const METHOD_IDS = [
  "triplet",
  "rank-2",
  "rank-bernoulli",
  "median",
  "hardest",
  "byol",
  "infonce",
  "triplet-bernoulli",
];

const HELP = `usage: deno task experiment [flags]

Equal-budget pretraining on Fashion-MNIST of the truncated triplet loss and its baselines, one
\`tasks/train.ts\` run per method and seed (runs/experiment/<method>-seed<s>; a run whose
summary.json exists is skipped, an interrupted one resumes from its checkpoint), then a report
with kNN top-1 during training, the final linear probe, the random-init baselines (BatchNorm
statistics as initialised, and estimated by ${CALIBRATION_STEPS} steps at learning rate 0 in
<runs>/calibrated-init-seed<s>), the Bernoulli false-negative analysis and a generated discussion.

Methods (--methods, default: all but the last):
  triplet            smoothed rank-k, window [2,10] (the released default)
  rank-2             rank-k with k = 2
  rank-bernoulli     rank-k with k = bernoulliK(10, batch, ${FALSE_NEGATIVE_EPSILON}) (${
  bernoulliK(10, BUDGETS.default.batch, FALSE_NEGATIVE_EPSILON)
} at batch ${BUDGETS.default.batch})
  median, hardest    rank-k at the median / at rank 1
  byol, infonce      the BYOL and InfoNCE (SimCLR) baselines
  triplet-bernoulli  smoothed rank-k, window [k, k+8] with k from bernoulliK (optional)

Budgets (flags below override either):
  default  ResNet-18 widths ${BUDGETS.default.widths}, batch ${BUDGETS.default.batch}, ${BUDGETS.default.steps} steps, kNN every ${BUDGETS.default.evalEvery} steps,
           bank ${BUDGETS.default.evalBank} / test ${BUDGETS.default.evalTest}, probe ${BUDGETS.default.probeEpochs} epochs, ${BUDGETS.default.seeds} seeds;
           ${BUDGETS.default.sizedFor} (2-core lavapipe CPU adapter)
           -> ${BUDGETS.default.runs}/, ${BUDGETS.default.report}
  --quick  widths ${BUDGETS.quick.widths}, batch ${BUDGETS.quick.batch}, ${BUDGETS.quick.steps} steps, kNN every ${BUDGETS.quick.evalEvery} steps,
           bank ${BUDGETS.quick.evalBank} / test ${BUDGETS.quick.evalTest}, probe ${BUDGETS.quick.probeEpochs} epochs, ${BUDGETS.quick.seeds} seed;
           ${BUDGETS.quick.sizedFor}
           -> ${BUDGETS.quick.runs}/, ${BUDGETS.quick.report}

  --quick              the reduced budget above
  --seeds N            seeds 0..N-1
  --steps N            optimizer steps per run
  --eval-every N       kNN evaluation every N steps (0: only at the end)
  --eval-bank N        training images in the kNN bank and probe set
  --eval-test N        test images evaluated
  --probe-epochs N     linear probe epochs at the end (0: none)
  --widths A,B,C,D     ResNet-18 stage widths
  --batch N            images per step (negatives come from the batch)
  --lr X               learning rate (default: the small preset's, scaled to the batch)
  --methods A,B,...    methods to run (ids above)
  --runs DIR           run directories go here
  --report FILE        the Markdown report (its plot is written beside it as <name>-knn.svg)
  --report-only        do not train; aggregate the runs that exist
  --retry-failed       rerun runs that failed before (default: report them as failed)
  --help               this text`;

interface Options {
  budget: Budget;
  mode: "default" | "quick";
  methods: Method[];
  runs: string;
  report: string;
  reportOnly: boolean;
  retryFailed: boolean;
  /** Balanced classes of the dataset (Bernoulli analysis). */
  classes: number;
  /** Budget fields that flags changed from the preset. */
  overrides: string[];
  /** The learning rate train.ts resolves for the budget. */
  lr: number;
}

function parseFlags(args: string[]): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({
      args,
      options: {
        quick: { type: "boolean" },
        seeds: { type: "string" },
        steps: { type: "string" },
        "eval-every": { type: "string" },
        "eval-bank": { type: "string" },
        "eval-test": { type: "string" },
        "probe-epochs": { type: "string" },
        widths: { type: "string" },
        batch: { type: "string" },
        lr: { type: "string" },
        methods: { type: "string" },
        runs: { type: "string" },
        report: { type: "string" },
        "report-only": { type: "boolean" },
        "retry-failed": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UserError(`${(e as Error).message} (see --help)`);
  }
}

/** The budget: a preset with the flags applied. */
function resolveBudget(flags: Record<string, string | boolean | undefined>): BudgetPreset {
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
  if (str("widths") !== undefined) {
    const widths = str("widths")!.split(",").map(Number);
    if (widths.length !== 4 || !widths.every((w) => Number.isInteger(w) && w >= 1)) {
      throw new UserError(`--widths must be four positive integers A,B,C,D; got ${str("widths")}`);
    }
    preset.widths = widths as [number, number, number, number];
  }
  preset.runs = str("runs") ?? preset.runs;
  preset.report = str("report") ?? preset.report;
  return preset;
}

/** Names of the budget fields that differ from the preset's. */
function budgetOverrides(budget: Budget, preset: Budget): string[] {
  const fields: (keyof Budget)[] = [
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
function commonTrainArgs(budget: Budget, seed: number): string[] {
  return [
    "--dataset",
    "fashion-mnist",
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

/** The resolved training configuration of a seed (the random-init baseline builds from it). */
function trainConfigFor(budget: Budget, seed: number): TrainConfig {
  const args = commonTrainArgs(budget, seed);
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) flags[args[i].slice(2)] = args[i + 1];
  return resolveConfig(flags);
}

// ---------------------------------------------------------------------------------------------
// Running

/** What the experiment writes into each run directory beside train.ts's files. */
interface RunManifest {
  method: string;
  seed: number;
  trainArgs: string[];
  exitCode?: number;
  /** Wall time of the train.ts subprocesses (summed over resumes). */
  processSeconds: number;
  failure?: string;
}

const TRAIN_SCRIPT = new URL("./train.ts", import.meta.url).pathname;

function runDir(runs: string, method: string, seed: number): string {
  return `${runs}/${method}-seed${seed}`;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Lines of a child stream, each passed to `onLine`. */
async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split(/\r?\n|\r/);
    pending = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (pending) onLine(pending);
}

/** The running child, so a signal to the experiment reaches it. */
let currentChild: Deno.ChildProcess | undefined;
let interruptedBy: string | undefined;

type RunOutcome = "done" | "skipped" | "failed" | "interrupted";

/** One method and seed, and what to do with it given what its directory already holds. */
interface PlannedRun {
  method: Method;
  seed: number;
  dir: string;
  trainArgs: string[];
  action: "skip" | "failed-before" | "resume" | "train";
  manifest?: RunManifest;
}

/**
 * Decide what a run needs: skip it (summary.json written with the same settings), report an
 * earlier failure, resume it from its checkpoint, or train it. A finished run made with other
 * settings stops the experiment before anything runs (it would otherwise be mixed in).
 */
async function planRun(method: Method, seed: number, options: Options): Promise<PlannedRun> {
  const dir = runDir(options.runs, method.id, seed);
  const trainArgs = [...commonTrainArgs(options.budget, seed), ...method.trainArgs, "--out", dir];
  const manifest = await readJson<RunManifest>(`${dir}/experiment.json`);
  const sameSettings = manifest !== undefined &&
    JSON.stringify(manifest.trainArgs) === JSON.stringify(trainArgs);
  const plan: PlannedRun = { method, seed, dir, trainArgs, action: "train", manifest };
  if (await exists(`${dir}/summary.json`)) {
    if (!sameSettings) {
      throw new UserError(
        `${dir} holds a finished run made with other settings (see its experiment.json); ` +
          "remove it or choose another --runs",
      );
    }
    plan.action = "skip";
  } else if (sameSettings && manifest!.failure !== undefined && !options.retryFailed) {
    plan.action = "failed-before";
  } else if (
    sameSettings && await exists(`${dir}/checkpoint.safetensors`) &&
    await exists(`${dir}/config.json`)
  ) {
    plan.action = "resume";
  }
  return plan;
}

/** Carry out a plan: train.ts as a subprocess, its output logged to train.log in the run. */
async function runOne(plan: PlannedRun): Promise<RunOutcome> {
  const { method, seed, dir, trainArgs } = plan;
  const tag = `[${method.id} seed ${seed}]`;
  if (plan.action === "skip") {
    console.log(`${tag} done before: ${dir}/summary.json`);
    return "skipped";
  }
  if (plan.action === "failed-before") {
    console.log(`${tag} failed before (${plan.manifest!.failure}); --retry-failed runs it again`);
    return "failed";
  }
  const resume = plan.action === "resume";
  const manifestPath = `${dir}/experiment.json`;
  await Deno.mkdir(dir, { recursive: true });
  const record: RunManifest = {
    method: method.id,
    seed,
    trainArgs,
    processSeconds: resume ? plan.manifest!.processSeconds : 0,
  };
  await Deno.writeTextFile(manifestPath, JSON.stringify(record, null, 1) + "\n");
  const args = [
    "run",
    "-A",
    "--unstable-webgpu",
    TRAIN_SCRIPT,
    ...(resume ? ["--resume", dir] : trainArgs),
  ];
  console.log(
    `${tag} ${resume ? "resuming" : "training"}: train.ts ${
      resume ? `--resume ${dir}` : trainArgs.join(" ")
    }`,
  );
  const log = await Deno.open(`${dir}/train.log`, { create: true, append: true });
  const encoder = new TextEncoder();
  const tail: string[] = [];
  const onLine = (line: string) => {
    log.writeSync(encoder.encode(line + "\n"));
    tail.push(line);
    if (tail.length > 20) tail.shift();
    // Feature-extraction progress is in train.log; the console gets the rest.
    if (!/features \((train|test)\)|linear probe 0\/1/.test(line)) console.log(`${tag} ${line}`);
  };
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  currentChild = child;
  await Promise.all([forwardLines(child.stdout, onLine), forwardLines(child.stderr, onLine)]);
  const status = await child.status;
  currentChild = undefined;
  log.close();
  record.exitCode = status.code;
  record.processSeconds += (performance.now() - started) / 1000;
  record.processSeconds = +record.processSeconds.toFixed(1);
  let outcome: RunOutcome = "done";
  if (status.code === 130 || interruptedBy !== undefined) {
    outcome = "interrupted";
  } else if (status.code !== 0 || !(await exists(`${dir}/summary.json`))) {
    const reason = tail.filter((l) => /error/i.test(l)).at(-1) ?? `exit code ${status.code}`;
    record.failure = reason.trim();
    outcome = "failed";
    console.log(`${tag} failed: ${record.failure} (log: ${dir}/train.log)`);
  }
  await Deno.writeTextFile(manifestPath, JSON.stringify(record, null, 1) + "\n");
  return outcome;
}

/** kNN / probe accuracy of the untrained backbone of one seed (cached in the runs directory). */
interface InitRecord {
  seed: number;
  trainArgs: string[];
  knnTop1: number;
  linearTop1: number | null;
  seconds: number;
}

/**
 * The random-init baseline: the backbone every method starts from (a Branch builds its ResNet
 * first from `new Rng(seed)`, so the same seed and config give the same weights), evaluated in
 * process exactly as train.ts evaluates (same bank subset, test images, kNN and probe settings).
 */
async function randomInitBaselines(options: Options, compute: boolean): Promise<InitRecord[]> {
  const records: InitRecord[] = [];
  let gpu: Awaited<ReturnType<typeof acquireGpu>> | undefined;
  let splits: { train: Dataset; test: Dataset } | undefined;
  try {
    for (let seed = 0; seed < options.budget.seeds; seed++) {
      const trainArgs = commonTrainArgs(options.budget, seed);
      const path = `${options.runs}/random-init-seed${seed}/summary.json`;
      const cached = await readJson<InitRecord>(path);
      if (cached && JSON.stringify(cached.trainArgs) === JSON.stringify(trainArgs)) {
        records.push(cached);
        continue;
      }
      if (!compute) continue;
      const config = trainConfigFor(options.budget, seed);
      gpu ??= await acquireGpu();
      splits ??= { train: await loadSplit(config, "train"), test: await loadSplit(config, "test") };
      const backbone = new ResNet(new Context(gpu), {
        arch: config.arch,
        inChannels: splits.train.channels,
        smallImage: config.smallImage,
        widths: config.widths,
      }, new Rng(config.seed));
      console.log(`[random init seed ${seed}] evaluating the untrained backbone`);
      const result = await evaluateBackbone(
        gpu,
        backbone,
        splits.train,
        splits.test,
        evaluationOptions(config, true),
      );
      const record: InitRecord = {
        seed,
        trainArgs,
        knnTop1: result.knnTop1,
        linearTop1: result.linearTop1 ?? null,
        seconds: +result.seconds.toFixed(1),
      };
      console.log(
        `[random init seed ${seed}] kNN top-1 ${pct(record.knnTop1)}%` +
          (record.linearTop1 !== null ? `, linear top-1 ${pct(record.linearTop1)}%` : ""),
      );
      await Deno.mkdir(`${options.runs}/random-init-seed${seed}`, { recursive: true });
      await Deno.writeTextFile(path, JSON.stringify(record, null, 1) + "\n");
      records.push(record);
    }
  } finally {
    splits?.train.close?.();
    splits?.test.close?.();
    gpu?.destroy();
  }
  return records;
}

// ---------------------------------------------------------------------------------------------
// Aggregation

/** One evaluation of one run. */
interface EvalPoint {
  step: number;
  knnTop1: number;
  linearTop1: number | null;
}

/** Everything the report needs about one run. */
export interface RunRecord {
  method: string;
  seed: number;
  dir: string;
  status: "done" | "failed" | "missing";
  evals: EvalPoint[];
  finalKnn?: number;
  finalLinear?: number | null;
  /** Training time: summary.wallSeconds less the intermediate evaluations. */
  trainSeconds?: number;
  processSeconds?: number;
  imagesPerSecond?: number | null;
  adapter?: string;
  failure?: string;
}

/** Read a run directory (summary.json, metrics.jsonl, experiment.json). */
async function readRun(runs: string, method: string, seed: number): Promise<RunRecord> {
  const dir = runDir(runs, method, seed);
  const manifest = await readJson<RunManifest>(`${dir}/experiment.json`);
  const summary = await readJson<Record<string, unknown>>(`${dir}/summary.json`);
  const record: RunRecord = { method, seed, dir, status: "missing", evals: [] };
  if (!summary) {
    if (manifest?.failure) {
      record.status = "failed";
      record.failure = manifest.failure;
    }
    return record;
  }
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`).catch(() => "");
  const byStep = new Map<number, EvalPoint>();
  let intermediateEvalSeconds = 0;
  for (const line of text.split("\n")) {
    let m: Record<string, number | null>;
    try {
      m = JSON.parse(line);
    } catch {
      continue; // blank, or a line cut short by an interruption
    }
    if (typeof m.knnTop1 !== "number") continue;
    byStep.set(m.step as number, {
      step: m.step as number,
      knnTop1: m.knnTop1,
      linearTop1: typeof m.linearTop1 === "number" ? m.linearTop1 : null,
    });
    if ((m.step as number) < (summary.steps as number)) {
      intermediateEvalSeconds += (m.evalSeconds as number) ?? 0;
    }
  }
  record.status = "done";
  record.evals = [...byStep.values()].sort((a, b) => a.step - b.step);
  record.finalKnn = summary.knnTop1 as number;
  record.finalLinear = (summary.linearTop1 as number | null) ?? null;
  record.trainSeconds = (summary.wallSeconds as number) - intermediateEvalSeconds;
  record.processSeconds = manifest?.processSeconds;
  record.imagesPerSecond = (summary.imagesPerSecond as number | null) ?? null;
  record.adapter = summary.adapter as string | undefined;
  return record;
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
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const variance = n > 1 ? values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1) : 0;
  return { mean, std: Math.sqrt(variance), min: Math.min(...values), max: Math.max(...values), n };
}

function pct(fraction: number): string {
  return (100 * fraction).toFixed(1);
}

/** "a ± s" in percent (the spread only with two or more seeds). */
function cell(stat: Stat | undefined): string {
  if (!stat) return "—";
  return stat.n > 1 ? `${pct(stat.mean)} ± ${pct(stat.std)}` : pct(stat.mean);
}

function minutes(seconds: number): string {
  return `${(seconds / 60).toFixed(1)} min`;
}

function secondsCell(stat: Stat | undefined): string {
  if (!stat) return "—";
  return stat.n > 1 ? `${stat.mean.toFixed(0)} ± ${stat.std.toFixed(0)}` : stat.mean.toFixed(0);
}

/** Per-method statistics over seeds. */
interface MethodResult {
  method: Method;
  runs: RunRecord[];
  knnAt: Map<number, Stat>;
  finalKnn?: Stat;
  finalLinear?: Stat;
  trainSeconds?: Stat;
  processSeconds?: Stat;
  imagesPerSecond?: Stat;
}

function aggregate(method: Method, runs: RunRecord[]): MethodResult {
  const done = runs.filter((r) => r.status === "done");
  const steps = [...new Set(done.flatMap((r) => r.evals.map((e) => e.step)))].sort((a, b) => a - b);
  const knnAt = new Map<number, Stat>();
  for (const step of steps) {
    const values = done.flatMap((r) =>
      r.evals.filter((e) => e.step === step).map((e) => e.knnTop1)
    );
    knnAt.set(step, describe(values)!);
  }
  const numbers = (pick: (r: RunRecord) => number | null | undefined) =>
    describe(done.map(pick).filter((v): v is number => typeof v === "number"));
  return {
    method,
    runs,
    knnAt,
    finalKnn: numbers((r) => r.finalKnn),
    finalLinear: numbers((r) => r.finalLinear),
    trainSeconds: numbers((r) => r.trainSeconds),
    processSeconds: numbers((r) => r.processSeconds),
    imagesPerSecond: numbers((r) => r.imagesPerSecond),
  };
}

/** Neutral comparison of two statistics (percent points), with the seed spread. */
function compare(aLabel: string, a: Stat, bLabel: string, b: Stat): string {
  const gap = 100 * (a.mean - b.mean);
  const shown = Math.abs(gap).toFixed(1);
  const relation = shown === "0.0"
    ? "level (to 0.1 points) with"
    : `${shown} points ${gap > 0 ? "above" : "below"}`;
  let text = `${aLabel} (${pct(a.mean)}%) is ${relation} ${bLabel} (${pct(b.mean)}%)`;
  if (a.n < 2 || b.n < 2) {
    text +=
      "; with a single seed the seed spread is unknown, so the gap cannot be judged against it";
  } else {
    const spread = 100 * Math.max(a.std, b.std);
    const overlap = a.min <= b.max && b.min <= a.max;
    text +=
      `; the gap is ${Math.abs(gap) > spread ? "larger" : "not larger"} than the seed spread ` +
      `(the larger standard deviation of the two, ${spread.toFixed(1)} points), and the ` +
      `min-max ranges over seeds ${overlap ? "overlap" : "do not overlap"}`;
  }
  return text;
}

/** The report's inputs. */
export interface ReportInput {
  budget: Budget;
  mode: "default" | "quick";
  /** Budget fields that flags changed from the preset. */
  overrides: string[];
  /** The learning rate the runs used (resolved by train.ts). */
  lr: number;
  methods: Method[];
  runs: RunRecord[];
  randomInit: { seed: number; knnTop1: number; linearTop1: number | null; seconds?: number }[];
  /** The untrained weights with estimated BatchNorm statistics (runs of CALIBRATED_INIT). */
  calibratedInit?: RunRecord[];
  classes: number;
  command: string;
  plotFile: string;
  /** Text kept from a previous report between the commentary markers. */
  commentary?: string;
}

const COMMENTARY_START =
  "<!-- commentary:start (hand-written; kept when the report is regenerated) -->";
const COMMENTARY_END = "<!-- commentary:end -->";

/** The Bernoulli false-negative analysis for the batch and classes used (computed). */
function bernoulliSection(classes: number, batch: number): string[] {
  const negatives = batch - 1;
  const p = 1 / classes;
  const expected = negatives * p;
  let k: number | undefined;
  try {
    k = bernoulliK(classes, batch, FALSE_NEGATIVE_EPSILON);
  } catch {
    k = undefined;
  }
  const ranks = [...new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...(k ? [k - 1, k] : [])])]
    .filter((r) => r <= negatives).sort((a, b) => a - b);
  const window = [2, 10].map((r) => Math.min(r, negatives));
  const windowRanks = Array.from({ length: window[1] - window[0] + 1 }, (_, i) => window[0] + i);
  const windowMean = windowRanks.reduce((s, r) => s + binomialTail(negatives, p, r), 0) /
    windowRanks.length;
  const lines = [
    "## Bernoulli analysis: how many negatives are false?",
    "",
    `With ${classes} balanced classes, each of a query's ${negatives} negatives in a batch of ` +
    `${batch} shares its class with probability 1/${classes}, so the number X of same-class ` +
    `(false) negatives per row is Binomial(${negatives}, ${p.toFixed(3)}): **E[X] = ` +
    `${expected.toFixed(2)}** per row. If the encoder ranks same-class images nearest (what ` +
    "training aims for), the rank-k deputy is a false negative exactly when X >= k:",
    "",
    "| rank k | P(X >= k) |",
    "|---:|---:|",
    ...ranks.map((r) =>
      `| ${r}${r >= window[0] && r <= window[1] ? " (in [2,10])" : ""}${
        r === k ? " (bernoulliK)" : ""
      } | ` +
      `${binomialTail(negatives, p, r).toFixed(4)} |`
    ),
    "",
    `Averaged over the ranks of the [${window}] window, P(X >= k) = ${windowMean.toFixed(3)}: ` +
    (windowMean > 0.5
      ? "under that assumption most deputies the released window picks on this data are false " +
        "negatives (same-class images pushed apart)."
      : "under that assumption most deputies the released window picks on this data are true " +
        "negatives."),
    k !== undefined
      ? `bernoulliK(${classes}, ${batch}, ${FALSE_NEGATIVE_EPSILON}) = ${k}: the smallest rank whose ` +
        `deputy is a false negative with probability <= ${FALSE_NEGATIVE_EPSILON} ` +
        `(P(X >= ${k}) = ${
          binomialTail(negatives, p, k).toFixed(4)
        }). The "rank-k, k=${k}" run tests ` +
        "this prediction against rank-k, k=2."
      : `No rank up to ${negatives} has P(X >= k) <= ${FALSE_NEGATIVE_EPSILON} at this batch.`,
    "",
  ];
  return lines;
}

/** The Markdown report (pure: everything comes from `input`). */
export function buildReport(input: ReportInput): string {
  const { budget, methods } = input;
  const results = methods.map((m) => aggregate(m, input.runs.filter((r) => r.method === m.id)));
  const init = describe(input.randomInit.map((r) => r.knnTop1));
  const initLinear = describe(
    input.randomInit.map((r) => r.linearTop1).filter((v): v is number => v !== null),
  );
  const evalSteps = [...new Set(results.flatMap((r) => [...r.knnAt.keys()]))].sort((a, b) => a - b);
  const finished = input.runs.filter((r) => r.status === "done").length;
  const failed = input.runs.filter((r) => r.status === "failed");
  const adapters = [...new Set(input.runs.map((r) => r.adapter).filter(Boolean))];
  const epochs = budget.steps * budget.batch / 60000;
  const out: string[] = [
    "# Experiment: does truncated triplet learn faster?",
    "",
    "Generated by `tasks/experiment.ts`; every number and every sentence outside the commentary " +
    "section comes from the runs (regenerating the report rewrites them).",
    "",
    "The claim tested (Wang et al., ICCV 2021): at equal epochs the truncated triplet loss " +
    "reaches a better representation than BYOL and SimCLR (InfoNCE). Here at small scale: " +
    "Fashion-MNIST, every method with the same backbone, batch, seed, augmentations and number " +
    "of steps.",
    "",
    "## Setup",
    "",
    `- Budget: the ${input.mode === "quick" ? "`--quick`" : "default"} preset` +
    (input.overrides.length ? ` with ${input.overrides.join(", ")} changed by flags` : "") +
    ` — ResNet-18 (small-image stem) widths ${budget.widths.join("/")}, batch ${budget.batch}, ` +
    `${budget.steps} steps (${epochs.toFixed(3)} epochs of the 60,000 training images), ` +
    `base learning rate ${+input.lr.toPrecision(4)} (LARS, warm-up and cosine schedule of the ` +
    "small preset), " +
    `${budget.seeds} seed${budget.seeds > 1 ? "s" : ""} (0..${budget.seeds - 1}).`,
    `- Evaluation: kNN monitor (k = 200, cosine, temperature 0.1) ` +
    (budget.evalEvery > 0 ? `every ${budget.evalEvery} steps and ` : "") +
    `at the end, linear probe (${budget.probeEpochs} epochs) at the end only ` +
    "(train.ts runs the probe only at the final evaluation); bank and probe training set: " +
    `${budget.evalBank} training images (a seeded subset), test: the first ${budget.evalTest} test images.`,
    `- Runs: ${finished} of ${methods.length * budget.seeds} finished` +
    (failed.length ? `, ${failed.length} failed` : "") +
    (adapters.length ? `; adapter: ${adapters.join(", ")}` : "") + ".",
    `- Time: ${minutes(input.runs.reduce((sum, r) => sum + (r.processSeconds ?? 0), 0))} in ` +
    `train.ts subprocesses, ${
      minutes(
        input.randomInit.reduce((t, r) => t + (r.seconds ?? 0), 0) +
          (input.calibratedInit ?? []).reduce((t, r) => t + (r.processSeconds ?? 0), 0),
      )
    } ` +
    "for the two random-init baselines.",
    "- Reproduce:",
    "",
    "```sh",
    input.command,
    "```",
    "",
    "## Results",
    "",
    `Top-1 accuracy in %, mean ± sample standard deviation over seeds (a single number: one seed). ` +
    "Every method starts from the same initialisation for a given seed, so the random-init row " +
    "is each curve's step 0. Train time: the training steps (pipeline compilation included, " +
    "evaluations excluded); process: the whole train.ts subprocess. Two random-init rows: " +
    '"random init" keeps the BatchNorm running statistics as initialised (mean 0, variance 1: ' +
    'what `deno task eval` of an untrained checkpoint measures); "' + CALIBRATED_INIT.label +
    `" has the same weights after ${CALIBRATION_STEPS} train.ts steps at learning rate 0, so its ` +
    "statistics come from training batches like every trained run's.",
    "",
  ];
  // Step 0 is the random init: every method starts from it, so it gets one row of its own.
  const header = [
    "method",
    "kNN @ 0",
    ...evalSteps.map((s) => `kNN @ ${s}`),
    "linear (end)",
    "train s",
    "process s",
    "img/s",
    "seeds",
  ];
  out.push(`| ${header.join(" | ")} |`);
  out.push(`|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`);
  out.push(
    `| random init | ${[cell(init), ...evalSteps.map(() => "—"), cell(initLinear)].join(" | ")} ` +
      `| — | — | — | ${input.randomInit.length} |`,
  );
  const calibrated = (input.calibratedInit ?? []).filter((r) => r.status === "done");
  const calibratedKnn = describe(calibrated.map((r) => r.finalKnn!));
  const calibratedLinear = describe(
    calibrated.map((r) => r.finalLinear).filter((v): v is number => typeof v === "number"),
  );
  if (calibratedKnn) {
    out.push(
      `| ${CALIBRATED_INIT.label} | ${
        [cell(calibratedKnn), ...evalSteps.map(() => "—"), cell(calibratedLinear)].join(" | ")
      } | — | — | — | ${calibrated.length} |`,
    );
  }
  for (const r of results) {
    out.push(
      `| ${r.method.label} | (init) | ${
        evalSteps.map((s) => cell(r.knnAt.get(s))).join(" | ")
      } | ` +
        `${cell(r.finalLinear)} | ${secondsCell(r.trainSeconds)} | ${
          secondsCell(r.processSeconds)
        } | ` +
        `${r.imagesPerSecond ? r.imagesPerSecond.mean.toFixed(1) : "—"} | ` +
        `${r.runs.filter((x) => x.status === "done").length} |`,
    );
  }
  out.push("");
  out.push(
    `![kNN top-1 against optimizer steps, mean over seeds](${input.plotFile})`,
    "",
    "The plot shows the seed means; the table gives the spread.",
    "",
  );
  out.push(...bernoulliSection(input.classes, budget.batch));
  out.push(...discussion(results, init, calibratedKnn, evalSteps));
  out.push(
    "## Commentary",
    "",
    COMMENTARY_START,
    input.commentary?.trim() ||
      "_Lead: hand-written interpretation goes here (kept when the report is regenerated)._",
    COMMENTARY_END,
    "",
    "## Per-run results",
    "",
    "| method | seed | status | kNN (end) | linear (end) | train s | process s | run directory |",
    "|---|---:|---|---:|---:|---:|---:|---|",
    ...input.runs.map((r) =>
      `| ${r.method} | ${r.seed} | ${r.status}${
        r.failure ? `: ${r.failure.replaceAll("|", "\\|")}` : ""
      } | ` +
      `${r.finalKnn !== undefined ? pct(r.finalKnn) : "—"} | ` +
      `${typeof r.finalLinear === "number" ? pct(r.finalLinear) : "—"} | ` +
      `${r.trainSeconds !== undefined ? r.trainSeconds.toFixed(0) : "—"} | ` +
      `${r.processSeconds !== undefined ? r.processSeconds.toFixed(0) : "—"} | ${r.dir} |`
    ),
    ...input.randomInit.map((r) =>
      `| random init | ${r.seed} | evaluated | ${pct(r.knnTop1)} | ` +
      `${r.linearTop1 !== null ? pct(r.linearTop1) : "—"} | — | — | |`
    ),
    ...(input.calibratedInit ?? []).map((r) =>
      `| ${CALIBRATED_INIT.id} | ${r.seed} | ${r.status} | ` +
      `${r.finalKnn !== undefined ? pct(r.finalKnn) : "—"} | ` +
      `${typeof r.finalLinear === "number" ? pct(r.finalLinear) : "—"} | — | ` +
      `${r.processSeconds !== undefined ? r.processSeconds.toFixed(0) : "—"} | ${r.dir} |`
    ),
    "",
  );
  return out.join("\n");
}

/** The generated discussion: rankings, gaps and whether they exceed the seed spread. */
function discussion(
  results: MethodResult[],
  init: Stat | undefined,
  calibratedInit: Stat | undefined,
  evalSteps: number[],
): string[] {
  const out = ["## Discussion (generated from the numbers)", ""];
  const withFinal = results.filter((r) => r.finalKnn).sort((a, b) =>
    b.finalKnn!.mean - a.finalKnn!.mean
  );
  if (withFinal.length === 0) {
    out.push("No run has finished yet.", "");
    return out;
  }
  const byId = new Map(results.map((r) => [r.method.id, r]));
  out.push(
    "Final kNN top-1, highest mean first: " +
      withFinal.map((r) => `${r.method.label} ${pct(r.finalKnn!.mean)}%`).join(", ") + ".",
    "",
  );
  const bullets: string[] = [];
  const [first, second] = withFinal;
  if (second) {
    bullets.push(
      `Highest mean final kNN top-1: ` +
        compare(first.method.label, first.finalKnn!, second.method.label, second.finalKnn!) + ".",
    );
  }
  const linear = results.filter((r) => r.finalLinear).sort((a, b) =>
    b.finalLinear!.mean - a.finalLinear!.mean
  );
  if (linear.length >= 2) {
    bullets.push(
      "Highest mean linear top-1 (end): " +
        compare(
          linear[0].method.label,
          linear[0].finalLinear!,
          linear[1].method.label,
          linear[1].finalLinear!,
        ) + ".",
    );
  }
  const triplet = byId.get("triplet");
  for (const baseline of ["byol", "infonce"]) {
    const other = byId.get(baseline);
    if (!triplet?.finalKnn || !other?.finalKnn) continue;
    let text = `The paper's comparison with ${other.method.label}, final kNN: ` +
      compare(triplet.method.label, triplet.finalKnn, other.method.label, other.finalKnn) + ".";
    const shared = evalSteps.filter((s) => triplet.knnAt.has(s) && other.knnAt.has(s));
    if (shared.length > 1) {
      const ahead = shared.filter((s) => triplet.knnAt.get(s)!.mean > other.knnAt.get(s)!.mean);
      text += ` Over the ${shared.length} evaluation steps, its mean kNN was above ` +
        `${other.method.label}'s at ${ahead.length} of them` +
        (ahead.length > 0 && ahead.length < shared.length ? ` (steps ${ahead.join(", ")})` : "") +
        ".";
    }
    if (triplet.finalLinear && other.finalLinear) {
      text += " Linear probe: " +
        compare(triplet.method.label, triplet.finalLinear, other.method.label, other.finalLinear) +
        ".";
    }
    bullets.push(text);
  }
  const rank2 = byId.get("rank-2");
  const rankK = byId.get("rank-bernoulli");
  if (rank2?.finalKnn && rankK?.finalKnn) {
    bullets.push(
      "The Bernoulli prediction (a deputy beyond the expected false negatives), final kNN: " +
        compare(rankK.method.label, rankK.finalKnn, rank2.method.label, rank2.finalKnn) + ".",
    );
  }
  const tripletK = byId.get("triplet-bernoulli");
  if (triplet?.finalKnn && tripletK?.finalKnn) {
    bullets.push(
      "Window choice, final kNN: " +
        compare(tripletK.method.label, tripletK.finalKnn, triplet.method.label, triplet.finalKnn) +
        ".",
    );
  }
  if (evalSteps.length > 1) {
    const leaders = evalSteps.map((s) => {
      const atStep = results.filter((r) => r.knnAt.has(s)).sort((a, b) =>
        b.knnAt.get(s)!.mean - a.knnAt.get(s)!.mean
      );
      return `step ${s}: ${atStep[0].method.label} (${pct(atStep[0].knnAt.get(s)!.mean)}%)`;
    });
    bullets.push(`Highest mean kNN top-1 at each evaluation — ${leaders.join("; ")}.`);
  }
  const againstBaseline = (what: string, baseline: Stat) => {
    const above = withFinal.filter((r) => r.finalKnn!.mean > baseline.mean);
    const below = withFinal.filter((r) => r.finalKnn!.mean <= baseline.mean);
    const names = (list: MethodResult[]) => list.map((r) => r.method.label).join(", ");
    bullets.push(
      `Against ${what} (kNN top-1 ${pct(baseline.mean)}%` +
        (baseline.n > 1 ? ` ± ${pct(baseline.std)}` : "") + "): " +
        (below.length === 0
          ? "every method's mean final kNN top-1 is above it"
          : above.length === 0
          ? "no method's mean final kNN top-1 is above it"
          : `mean final kNN above it: ${names(above)}; not above it: ${names(below)}`) +
        ".",
    );
  };
  if (init) againstBaseline("the untrained backbone", init);
  if (calibratedInit) {
    againstBaseline("the untrained backbone with BatchNorm statistics estimated", calibratedInit);
  }
  out.push(...bullets.map((b) => `- ${b}`), "");
  const seeds = Math.max(...results.map((r) => r.finalKnn?.n ?? 0));
  if (seeds < 3) {
    out.push(
      `With ${seeds} seed${seeds === 1 ? "" : "s"} per method, differences of this size are not ` +
        "established by this report.",
      "",
    );
  }
  return out;
}

/** Read the runs, write the report and its plot. */
async function writeReport(options: Options, randomInit: InitRecord[]): Promise<string> {
  const runs: RunRecord[] = [];
  const calibratedInit: RunRecord[] = [];
  for (let seed = 0; seed < options.budget.seeds; seed++) {
    for (const m of options.methods) runs.push(await readRun(options.runs, m.id, seed));
    calibratedInit.push(await readRun(options.runs, CALIBRATED_INIT.id, seed));
  }
  const reportDir = options.report.includes("/")
    ? options.report.slice(0, options.report.lastIndexOf("/"))
    : ".";
  const base = options.report.slice(options.report.lastIndexOf("/") + 1).replace(/\.md$/i, "");
  const plotFile = `${base}-knn.svg`;
  const previous = await Deno.readTextFile(options.report).catch(() => "");
  const start = previous.indexOf(COMMENTARY_START);
  const end = previous.indexOf(COMMENTARY_END);
  const commentary = start >= 0 && end > start
    ? previous.slice(start + COMMENTARY_START.length, end)
    : undefined;
  const kept = commentary?.includes("_Lead: hand-written interpretation goes here")
    ? undefined
    : commentary;
  const report = buildReport({
    budget: options.budget,
    mode: options.mode,
    methods: options.methods,
    runs,
    randomInit,
    calibratedInit,
    classes: options.classes,
    overrides: options.overrides,
    lr: options.lr,
    command: reproduceCommand(options),
    plotFile,
    commentary: kept,
  });
  await Deno.mkdir(reportDir, { recursive: true });
  await Deno.writeTextFile(options.report, report);
  await Deno.writeTextFile(
    `${reportDir}/${plotFile}`,
    await knnPlot(options.methods, runs, randomInit),
  );
  return options.report;
}

/** kNN top-1 (seed mean) against steps, one line per method, step 0 = the random init. */
async function knnPlot(
  methods: Method[],
  runs: RunRecord[],
  randomInit: InitRecord[],
): Promise<string> {
  const init = describe(randomInit.map((r) => r.knnTop1));
  const points: CurvePoint[] = [];
  for (const m of methods) {
    const result = aggregate(m, runs.filter((r) => r.method === m.id));
    if (result.knnAt.size === 0) continue;
    if (init) points.push({ step: 0, value: 100 * init.mean, series: m.short });
    for (const [step, stat] of result.knnAt) {
      points.push({ step, value: 100 * stat.mean, series: m.short });
    }
  }
  return await renderCurves([
    { title: "kNN monitor during training (mean over seeds)", yTitle: "kNN top-1 (%)", points },
  ]);
}

/** The command line that reproduces this experiment, every budget value explicit. */
function reproduceCommand(options: Options): string {
  const b = options.budget;
  const env = Deno.env.get("DENO_WEBGPU_BACKEND");
  return [
    ...(env ? [`DENO_WEBGPU_BACKEND=${env}`] : []),
    "deno task experiment",
    ...(options.mode === "quick" ? ["--quick"] : []),
    `--steps ${b.steps} --eval-every ${b.evalEvery} --eval-bank ${b.evalBank}`,
    `--eval-test ${b.evalTest} --probe-epochs ${b.probeEpochs} --widths ${b.widths.join(",")}`,
    `--batch ${b.batch} --seeds ${b.seeds}`,
    ...(b.lr !== undefined ? [`--lr ${b.lr}`] : []),
    `--methods ${options.methods.map((m) => m.id).join(",")}`,
    `--runs ${options.runs} --report ${options.report}`,
  ].join(" ");
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args);
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const budget = resolveBudget(flags);
  // Validate the shared training flags once, through train.ts's own checks.
  const config = trainConfigFor(budget, 0);
  const train = await loadSplit(config, "train");
  const classes = train.classes;
  train.close?.();
  const available = experimentMethods(classes, budget.batch);
  let methods = available.filter((m) => m.standard);
  if (flags.methods !== undefined) {
    const ids = (flags.methods as string).split(",").map((s) => s.trim()).filter(Boolean);
    methods = ids.map((id) => {
      const method = available.find((m) => m.id === id);
      if (!method) {
        throw new UserError(
          METHOD_IDS.includes(id)
            ? `--methods: ${id} is unavailable at batch ${budget.batch} (too few negatives for ` +
              `bernoulliK(${classes}, ${budget.batch}, ${FALSE_NEGATIVE_EPSILON}))`
            : `--methods: unknown method ${JSON.stringify(id)}; choose from ${
              METHOD_IDS.join(", ")
            }`,
        );
      }
      return method;
    });
    if (new Set(ids).size !== ids.length) throw new UserError("--methods names a method twice");
  }
  if (methods.some((m) => m.id === "triplet") && budget.batch < 11) {
    throw new UserError(`the [2,10] window needs 10 negatives: --batch must be at least 11`);
  }
  const options: Options = {
    budget,
    mode: flags.quick ? "quick" : "default",
    methods,
    runs: budget.runs,
    report: budget.report,
    reportOnly: Boolean(flags["report-only"]),
    retryFailed: Boolean(flags["retry-failed"]),
    classes,
    overrides: budgetOverrides(budget, flags.quick ? BUDGETS.quick : BUDGETS.default),
    lr: config.lr,
  };
  const started = performance.now();
  const plans: PlannedRun[] = [];
  // Seed-major order: an interrupted experiment has every method at the first seeds.
  for (let seed = 0; seed < budget.seeds; seed++) {
    for (const method of methods) plans.push(await planRun(method, seed, options));
    plans.push(await planRun(CALIBRATED_INIT, seed, calibrationOptions(options)));
  }
  const randomInit = await randomInitBaselines(options, !options.reportOnly);
  let outcome: RunOutcome | undefined;
  if (!options.reportOnly) {
    const onSignal = (name: Deno.Signal) => () => {
      interruptedBy = name;
      // The child checkpoints on SIGINT/SIGTERM (a terminal's Ctrl-C reaches it directly too).
      try {
        currentChild?.kill(name);
      } catch {
        // already exited
      }
    };
    const signals: [Deno.Signal, () => void][] = [
      ["SIGINT", onSignal("SIGINT")],
      ["SIGTERM", onSignal("SIGTERM")],
    ];
    for (const [sig, handler] of signals) Deno.addSignalListener(sig, handler);
    for (const [index, plan] of plans.entries()) {
      console.log(`run ${index + 1}/${plans.length}: ${plan.method.label}, seed ${plan.seed}`);
      outcome = await runOne(plan);
      if (outcome === "interrupted" || interruptedBy !== undefined) break;
    }
    for (const [sig, handler] of signals) Deno.removeSignalListener(sig, handler);
  }
  const report = await writeReport(options, randomInit);
  console.log(`report: ${report} (${formatDuration((performance.now() - started) / 1000)})`);
  if (interruptedBy !== undefined || outcome === "interrupted") {
    console.log("interrupted: run the same command again to continue");
    return 130;
  }
  return 0;
}

if (import.meta.main) runMain("experiment", main);
